package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix/internal/redistest"
)

// topology is a Redis to drain three streams from: one server, or a
// cluster whose masters hold one stream each.
type topology struct {
	name    string
	url     string
	rdb     redis.UniversalClient
	pids    []int // the redis-server processes
	streams []string
}

// clusterBench drains three streams, one topix consumer process each with
// the trivial script, from one redis-server and from a cluster of three
// masters (a stream on each), in alternating rounds, and prints the
// throughput of each with the CPU Redis and topix spent per entry.
func clusterBench(c config) error {
	if _, err := os.Stat(c.topix); err != nil {
		return fmt.Errorf("no topix binary at %s (make build): %w", c.topix, err)
	}
	dir, err := os.MkdirTemp("", "topix-bench-cluster-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	os.MkdirAll(filepath.Join(dir, "single"), 0o755)
	srv, err := redistest.Start(filepath.Join(dir, "single"))
	if err != nil {
		return err
	}
	defer srv.Stop()
	cl, err := redistest.StartCluster(filepath.Join(dir, "cluster"), 3, 0)
	if err != nil {
		return err
	}
	defer cl.Stop()
	script := filepath.Join(dir, "trivial.star")
	if err := os.WriteFile(script, []byte(trivialScript), 0o644); err != nil {
		return err
	}
	ctx := context.Background()
	single := &topology{name: "one server", url: srv.URL(), rdb: srv.Client(), pids: []int{srv.Pid()}, streams: []string{"s0", "s1", "s2"}}
	cluster := &topology{name: "3 masters", url: cl.URL(), rdb: cl.Client()}
	masters, err := cl.Masters(ctx)
	if err != nil {
		return err
	}
	for _, m := range masters {
		key, err := cl.KeyOn(ctx, "s", m)
		if err != nil {
			return err
		}
		cluster.streams = append(cluster.streams, key)
		cluster.pids = append(cluster.pids, m.Pid())
	}
	defer single.rdb.Close()
	defer cluster.rdb.Close()
	per := c.n / 3
	fmt.Printf("topix-bench -cluster: %d CPUs, %s; three streams of %d entries, one `topix consumer --concurrency 2` each (trivial script); %d rounds\n\n",
		runtime.NumCPU(), runtime.Version(), per, c.rounds)
	for _, t := range []*topology{single, cluster} {
		for _, s := range t.streams {
			if err := seedStream(ctx, t.rdb, s, per); err != nil {
				return err
			}
		}
	}
	rates := map[*topology][]float64{}
	cpus := map[*topology][2]time.Duration{}
	for round := range c.rounds {
		for _, t := range []*topology{single, cluster} {
			rate, redisCPU, topixCPU, err := drainAll(ctx, c.topix, t, script, fmt.Sprintf("g%d", round), per)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			rates[t] = append(rates[t], rate)
			sum := cpus[t]
			sum[0] += redisCPU
			sum[1] += topixCPU
			cpus[t] = sum
		}
	}
	for _, t := range []*topology{single, cluster} {
		cpu := cpus[t]
		n := time.Duration(c.rounds * 3 * per)
		fmt.Printf("%-11s %8.0f entries/s  (rounds: %s)  cpu/entry: redis %.1fµs, topix %.1fµs\n",
			t.name, median(rates[t]), fmtRates(rates[t]), us(cpu[0]/n), us(cpu[1]/n))
	}
	fmt.Printf("\n3 masters / one server: %.2f\n", median(rates[cluster])/median(rates[single]))
	return nil
}

func fmtRates(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'f', 0, 64)
	}
	return strings.Join(s, " ")
}

func seedStream(ctx context.Context, rdb redis.UniversalClient, stream string, n int) error {
	for start := 0; start < n; start += 2000 {
		pipe := rdb.Pipeline()
		for i := start; i < min(start+2000, n); i++ {
			payload := fmt.Sprintf(`{"id": %d, "kind": "order"}`, i)
			payload += strings.Repeat(" ", max(0, 100-len(payload)))
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []string{"payload", payload}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

// drainAll drains every stream of t through group, one consumer process
// per stream, and returns the entries acked per second over all of them,
// from the first delivery to the last ack, with the CPU time Redis and the
// consumers spent.
func drainAll(ctx context.Context, bin string, t *topology, script, group string, per int) (float64, time.Duration, time.Duration, error) {
	for _, s := range t.streams {
		if err := t.rdb.XGroupCreate(ctx, s, group, "0").Err(); err != nil {
			return 0, 0, 0, err
		}
	}
	var redis0 time.Duration
	for _, pid := range t.pids {
		redis0 += cpuTime(pid)
	}
	var procs []*proc
	for _, s := range t.streams {
		p, err := startProc(bin, t.url, nil, "consumer", s, group, script, "--concurrency", "2", "--no-reload", "--log-level", "warn", "--name", "bench")
		if err != nil {
			return 0, 0, 0, err
		}
		procs = append(procs, p)
	}
	var first, last time.Time
	deadline := time.Now().Add(5 * time.Minute)
	for {
		done := 0
		now := time.Now()
		for _, s := range t.streams {
			groups, err := t.rdb.XInfoGroups(ctx, s).Result()
			if err != nil {
				return 0, 0, 0, err
			}
			for _, g := range groups {
				if g.Name != group {
					continue
				}
				if first.IsZero() && g.EntriesRead > 0 {
					first = now
				}
				if g.EntriesRead == int64(per) && g.Pending == 0 {
					done++
				}
			}
		}
		if done == len(t.streams) {
			last = now
			break
		}
		if now.After(deadline) {
			return 0, 0, 0, fmt.Errorf("not drained within 5m")
		}
		time.Sleep(time.Millisecond) // polling interval
	}
	var redisCPU, topixCPU time.Duration
	for _, pid := range t.pids {
		redisCPU += cpuTime(pid)
	}
	for _, p := range procs {
		topixCPU += cpuTime(p.cmd.Process.Pid)
		if err := p.stop(); err != nil {
			return 0, 0, 0, err
		}
	}
	for _, s := range t.streams {
		t.rdb.XGroupDestroy(ctx, s, group)
	}
	return float64(per*len(t.streams)) / last.Sub(first).Seconds(), redisCPU - redis0, topixCPU, nil
}
