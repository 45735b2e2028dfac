// Command topix-bench measures topix against a plain go-redis loop on the
// same Redis, in the same run, and prints the figures. `make bench` runs
// it; docs/benchmarks.md explains the conditions and the numbers.
//
// It starts its own redis-server on a free loopback port, seeds a stream,
// and measures:
//
//   - drain throughput (entries acked per second, from the first delivery
//     to the last ack, checked with XINFO GROUPS: entries-read = N,
//     pending 0) of (a) a reference loop of C goroutines doing XREADGROUP
//     COUNT B and one XACK per batch, (b) topix consumer with a trivial
//     script, (c) topix consumer with a realistic one (json.decode, a
//     branch, one emit), at several concurrencies, alternating over rounds;
//   - topix's peak RSS while draining backlogs of two sizes;
//   - end-to-end latency, emit to call, at a steady rate;
//   - the ingest rate of `topix emit STREAM -`;
//
// and with -cluster, instead, the drain of three streams from one
// redis-server and from a cluster of three masters, a stream on each.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix/internal/redistest"
)

const (
	trivialScript = "def consumer(data):\n    pass\n"
	// realistic: decode a JSON payload, branch on it, emit one entry.
	realisticScript = `def consumer(data):
    p = json.decode(data["payload"])
    if p["kind"] == "order":
        emit("out:orders", {"id": p["id"], "total": p["total"]}, maxlen = 10000)
    else:
        emit("out:other", {"id": p["id"]}, maxlen = 10000)
`
	latencyScript = `def consumer(data):
    emit("lat", {"sent": data["sent"], "called": time.now().unix_nano}, maxlen = 1000000)
`
)

type config struct {
	topix        string
	n            int
	rounds       int
	concurrency  []int
	batch        int
	rssSizes     []int
	latRate      int
	latSeconds   int
	ingestLines  int
	skipRSS      bool
	skipLatency  bool
	skipIngest   bool
	skipRealistc bool
	compare      string
	exactlyOnce  bool
}

func main() {
	var c config
	var conc, rss string
	flag.StringVar(&c.topix, "topix", "bin/topix", "the topix binary to measure")
	flag.IntVar(&c.n, "n", 200000, "entries per drain run")
	flag.IntVar(&c.rounds, "rounds", 5, "rounds of each drain measurement (the median is reported)")
	flag.StringVar(&conc, "concurrency", "1,2,4", "concurrencies to measure")
	flag.IntVar(&c.batch, "batch", 100, "COUNT of the reference loop: topix's default batch size")
	flag.StringVar(&rss, "rss", "100000,1000000", "backlog sizes for the peak RSS measurement")
	flag.IntVar(&c.latRate, "rate", 10000, "entries per second for the latency measurement")
	flag.IntVar(&c.latSeconds, "seconds", 10, "duration of the latency measurement")
	flag.IntVar(&c.ingestLines, "lines", 200000, "lines for the emit - ingest measurement")
	flag.BoolVar(&c.skipRSS, "no-rss", false, "skip the RSS measurement")
	flag.BoolVar(&c.skipLatency, "no-latency", false, "skip the latency measurement")
	flag.BoolVar(&c.skipIngest, "no-ingest", false, "skip the ingest measurement")
	flag.BoolVar(&c.skipRealistc, "no-realistic", false, "skip the realistic script")
	flag.StringVar(&c.compare, "compare", "", "another topix binary: each round also drains the realistic script with it, side by side")
	flag.BoolVar(&c.exactlyOnce, "exactly-once", false, "each round also drains the realistic script with --exactly-once, side by side")
	cluster := flag.Bool("cluster", false, "instead: drain three streams from one redis-server and from a cluster of three masters, side by side")
	flag.Parse()
	c.concurrency = ints(conc)
	c.rssSizes = ints(rss)
	do := run
	if *cluster {
		do = clusterBench
	}
	if err := do(c); err != nil {
		fmt.Fprintln(os.Stderr, "topix-bench:", err)
		os.Exit(1)
	}
}

func ints(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

// bench holds what every measurement needs.
type bench struct {
	config
	srv     *redistest.Server
	rdb     *redis.Client
	dir     string
	scripts map[string]string
	runs    int
}

func run(c config) error {
	if _, err := os.Stat(c.topix); err != nil {
		return fmt.Errorf("no topix binary at %s (make build): %w", c.topix, err)
	}
	dir, err := os.MkdirTemp("", "topix-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := redistest.Start(dir)
	if err != nil {
		return err
	}
	defer srv.Stop()
	realistic := realisticScript
	b := &bench{config: c, srv: srv, rdb: redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 64}), dir: dir, scripts: map[string]string{}}
	defer b.rdb.Close()
	if alt := os.Getenv("TOPIX_BENCH_REALISTIC"); alt != "" {
		b, err := os.ReadFile(alt)
		if err != nil {
			return err
		}
		realistic = string(b)
	}
	for name, src := range map[string]string{"trivial": trivialScript, "realistic": realistic, "latency": latencyScript} {
		path := filepath.Join(dir, name+".star")
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			return err
		}
		b.scripts[name] = path
	}
	version, _ := b.rdb.Info(context.Background(), "server").Result()
	fmt.Printf("topix-bench: %d CPUs, %s, redis %s on %s; N=%d, payload 100 bytes, reference batch %d, %d rounds\n\n",
		runtime.NumCPU(), runtime.Version(), field(version, "redis_version"), srv.Addr, c.n, c.batch, c.rounds)

	if err := b.drains(); err != nil {
		return err
	}
	if !c.skipRSS {
		if err := b.rss(); err != nil {
			return err
		}
	}
	if !c.skipLatency {
		if err := b.latency(); err != nil {
			return err
		}
	}
	if !c.skipIngest {
		if err := b.ingest(); err != nil {
			return err
		}
	}
	return nil
}

func field(info, name string) string {
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), name+":"); ok {
			return v
		}
	}
	return "?"
}

// seed fills stream with n entries of a 100-byte JSON payload.
func (b *bench) seed(stream string, n int) error {
	ctx := context.Background()
	b.rdb.Del(ctx, stream)
	for start := 0; start < n; start += 2000 {
		pipe := b.rdb.Pipeline()
		for i := start; i < min(start+2000, n); i++ {
			kind := "order"
			if i%4 == 0 {
				kind = "refund"
			}
			payload := fmt.Sprintf(`{"id": %d, "kind": %q, "total": %d.%02d, "sku": "SKU-%06d"}`, i, kind, i%500, i%100, i%1000)
			payload += strings.Repeat(" ", max(0, 100-len(payload)))
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []string{"payload", payload}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

// drains measures the three consumers at each concurrency.
func (b *bench) drains() error {
	if err := b.seed("in", b.n); err != nil {
		return err
	}
	type row struct {
		conc                    int
		ref, trivial, realistic []float64
		cpu                     [3][]perEntry
		other, otherTrivial     []float64 // realistic and trivial with -compare
		once                    []float64 // realistic with --exactly-once
		onceCPU                 []perEntry
	}
	var rows []row
	for _, conc := range b.concurrency {
		r := row{conc: conc}
		for round := 0; round < b.rounds; round++ {
			ref, cpu, err := b.drain("reference", conc, func(group string) (func() error, int, error) { return b.reference(group, conc) })
			if err != nil {
				return err
			}
			r.ref, r.cpu[0] = append(r.ref, ref), append(r.cpu[0], cpu)
			tr, cpu, err := b.drain("trivial", conc, func(group string) (func() error, int, error) { return b.topixConsumer(group, "trivial", conc, "in") })
			if err != nil {
				return err
			}
			r.trivial, r.cpu[1] = append(r.trivial, tr), append(r.cpu[1], cpu)
			line := fmt.Sprintf("  concurrency %d, round %d: reference %.0f/s (%s), trivial %.0f/s (%s)", conc, round+1, ref, r.cpu[0][round], tr, r.cpu[1][round])
			if !b.skipRealistc {
				re, cpu, err := b.drain("realistic", conc, func(group string) (func() error, int, error) { return b.topixConsumer(group, "realistic", conc, "in") })
				if err != nil {
					return err
				}
				r.realistic, r.cpu[2] = append(r.realistic, re), append(r.cpu[2], cpu)
				line += fmt.Sprintf(", realistic %.0f/s (%s)", re, cpu)
			}
			if b.exactlyOnce {
				eo, cpu, err := b.drain("exactly-once", conc, func(group string) (func() error, int, error) {
					return b.consumerOf(b.topix, group, "realistic", conc, "in", "--exactly-once")
				})
				if err != nil {
					return err
				}
				r.once, r.onceCPU = append(r.once, eo), append(r.onceCPU, cpu)
				line += fmt.Sprintf(", realistic --exactly-once %.0f/s (%s)", eo, cpu)
			}
			if b.compare != "" {
				ot, cpu, err := b.drain("compare", conc, func(group string) (func() error, int, error) {
					return b.consumerOf(b.compare, group, "trivial", conc, "in")
				})
				if err != nil {
					return err
				}
				r.otherTrivial = append(r.otherTrivial, ot)
				line += fmt.Sprintf(", trivial with %s %.0f/s (%s)", b.compare, ot, cpu)
				other, cpu, err := b.drain("compare", conc, func(group string) (func() error, int, error) {
					return b.consumerOf(b.compare, group, "realistic", conc, "in")
				})
				if err != nil {
					return err
				}
				r.other = append(r.other, other)
				line += fmt.Sprintf(", realistic with %s %.0f/s (%s)", b.compare, other, cpu)
			}
			fmt.Println(line)
		}
		rows = append(rows, r)
	}
	fmt.Printf("\ndrain throughput, entries acked per second (median of %d rounds, N=%d):\n\n", b.rounds, b.n)
	fmt.Printf("b/a and c/a are the medians of the ratios of each round, whose runs were side by side;\n")
	fmt.Printf("on a machine with noisy neighbours they vary less than the ratio of the medians.\n\n")
	fmt.Printf("| concurrency | a. go-redis loop | b. topix, trivial | b/a | c. topix, realistic | c/a |\n")
	fmt.Printf("|------------:|-----------------:|------------------:|----:|--------------------:|----:|\n")
	for _, r := range rows {
		a, t, re := median(r.ref), median(r.trivial), median(r.realistic)
		fmt.Printf("| %d | %.0f | %.0f | %.2f | %.0f | %.2f |\n", r.conc, a, t, median(ratios(r.trivial, r.ref)), re, median(ratios(r.realistic, r.ref)))
	}
	fmt.Println()
	for _, r := range rows {
		fmt.Printf("concurrency %d, per round: b/a %s; c/a %s\n", r.conc, fmtRatios(ratios(r.trivial, r.ref)), fmtRatios(ratios(r.realistic, r.ref)))
	}
	for _, r := range rows {
		if len(r.once) > 0 {
			redisWith, redisWithout := medianCPU(r.onceCPU, true), medianCPU(r.cpu[2], true)
			fmt.Printf("\nconcurrency %d: realistic with --exactly-once / without (median of the rounds' ratios): %.3f (rounds %s);\n"+
				"  cpu/entry, median: redis %.2fµs with, %.2fµs without (+%.2fµs); consumer %.2fµs with, %.2fµs without\n",
				r.conc, median(ratios(r.once, r.realistic)), fmtRatios(ratios(r.once, r.realistic)),
				us(redisWith), us(redisWithout), us(redisWith-redisWithout), us(medianCPU(r.onceCPU, false)), us(medianCPU(r.cpu[2], false)))
		}
		if len(r.other) > 0 {
			fmt.Printf("\nconcurrency %d: %s / %s (median of the rounds' ratios): trivial %.3f (rounds %s), realistic %.3f (rounds %s)\n",
				r.conc, b.topix, b.compare,
				median(ratios(r.trivial, r.otherTrivial)), fmtRatios(ratios(r.trivial, r.otherTrivial)),
				median(ratios(r.realistic, r.other)), fmtRatios(ratios(r.realistic, r.other)))
		}
	}
	fmt.Println()
	return nil
}

// medianCPU is the median CPU per entry of Redis (or of the consumer).
func medianCPU(v []perEntry, redis bool) time.Duration {
	f := make([]float64, len(v))
	for i, c := range v {
		f[i] = float64(c.consumer)
		if redis {
			f[i] = float64(c.redis)
		}
	}
	return time.Duration(median(f))
}

func fmtRatios(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.3f", x)
	}
	return strings.Join(s, " ")
}

// ratios divides x by y round by round.
func ratios(x, y []float64) []float64 {
	out := make([]float64, 0, len(x))
	for i := range min(len(x), len(y)) {
		out = append(out, x[i]/y[i])
	}
	return out
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// drain creates a new group at 0 on stream in, starts a consumer with
// start, and times it from the first delivery to the last ack. It also
// returns the CPU time per entry that Redis and the consumer process (pid,
// 0 for one inside this program) spent from the start to the last ack.
func (b *bench) drain(what string, conc int, start func(group string) (stop func() error, pid int, err error)) (rate float64, cpu perEntry, err error) {
	ctx := context.Background()
	b.runs++
	group := fmt.Sprintf("g%d", b.runs)
	if err := b.rdb.XGroupCreate(ctx, "in", group, "0").Err(); err != nil {
		return 0, cpu, err
	}
	defer b.rdb.XGroupDestroy(ctx, "in", group)
	redis0, self0 := cpuTime(b.srv.Pid()), cpuTime(os.Getpid())
	stop, pid, err := start(group)
	if err != nil {
		return 0, cpu, err
	}
	first, last, err := b.watch(group, b.n, 5*time.Minute)
	cpu.redis = (cpuTime(b.srv.Pid()) - redis0) / time.Duration(b.n)
	if pid != 0 {
		cpu.consumer = cpuTime(pid) / time.Duration(b.n)
	} else {
		cpu.consumer = (cpuTime(os.Getpid()) - self0) / time.Duration(b.n)
	}
	if serr := stop(); err == nil {
		err = serr
	}
	if err != nil {
		return 0, cpu, fmt.Errorf("%s at concurrency %d: %w", what, conc, err)
	}
	return float64(b.n) / last.Sub(first).Seconds(), cpu, nil
}

// perEntry is CPU time per entry drained, of Redis and of the consumer
// (for the reference, this program, including its XINFO polling).
type perEntry struct{ redis, consumer time.Duration }

func (c perEntry) String() string {
	return fmt.Sprintf("cpu/entry: redis %.1fµs, consumer %.1fµs", us(c.redis), us(c.consumer))
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// cpuTime returns the user plus system CPU time a process has used so far
// (0 if it cannot be read), from /proc/PID/stat in clock ticks of 10ms.
func cpuTime(pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name in parentheses may hold spaces; fields count from
	// after it: utime and stime are fields 14 and 15 of the whole line.
	rest := stat[bytes.LastIndexByte(stat, ')')+2:]
	f := strings.Fields(string(rest))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// watch polls XINFO GROUPS until group has read n entries with none
// pending, and returns when the first delivery and the last ack were seen.
func (b *bench) watch(group string, n int, timeout time.Duration) (first, last time.Time, err error) {
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		groups, err := b.rdb.XInfoGroups(ctx, "in").Result()
		if err != nil {
			return first, last, err
		}
		now := time.Now()
		for _, g := range groups {
			if g.Name != group {
				continue
			}
			if first.IsZero() && g.EntriesRead > 0 {
				first = now
			}
			if g.EntriesRead == int64(n) && g.Pending == 0 {
				return first, now, nil
			}
		}
		time.Sleep(500 * time.Microsecond) // polling interval
	}
	return first, last, fmt.Errorf("not drained within %s", timeout)
}

// reference starts conc goroutines each reading COUNT batch entries and
// acking them with one XACK, until the stream is drained.
func (b *bench) reference(group string, conc int) (func() error, int, error) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var acked atomic.Int64
	var firstErr atomic.Value
	for i := range conc {
		wg.Go(func() {
			consumer := fmt.Sprintf("ref-%d", i)
			for ctx.Err() == nil {
				res, err := b.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: consumer, Streams: []string{"in", ">"}, Count: int64(b.batch), Block: 100 * time.Millisecond}).Result()
				if err == redis.Nil || ctx.Err() != nil {
					continue
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				ids := make([]string, len(res[0].Messages))
				for j, m := range res[0].Messages {
					ids[j] = m.ID
				}
				if err := b.rdb.XAck(ctx, "in", group, ids...).Err(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				acked.Add(int64(len(ids)))
			}
		})
	}
	return func() error {
		cancel()
		wg.Wait()
		if err, ok := firstErr.Load().(error); ok {
			return err
		}
		return nil
	}, 0, nil
}

// topixConsumer starts `topix consumer in GROUP script`.
func (b *bench) topixConsumer(group, script string, conc int, stream string) (func() error, int, error) {
	return b.consumerOf(b.topix, group, script, conc, stream)
}

// consumerOf starts `consumer in GROUP script` with the given binary.
func (b *bench) consumerOf(bin, group, script string, conc int, stream string, flags ...string) (func() error, int, error) {
	args := append([]string{"consumer", stream, group, b.scripts[script], "--concurrency", strconv.Itoa(conc),
		"--no-reload", "--log-level", "warn", "--name", "bench"}, flags...)
	p, err := b.startBinary(bin, nil, args...)
	if err != nil {
		return nil, 0, err
	}
	return p.stop, p.cmd.Process.Pid, nil
}

type proc struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   chan error
}

func (b *bench) startTopix(stdin *bytes.Reader, args ...string) (*proc, error) {
	return b.startBinary(b.topix, stdin, args...)
}

func (b *bench) startBinary(bin string, stdin *bytes.Reader, args ...string) (*proc, error) {
	return startProc(bin, b.srv.URL(), stdin, args...)
}

// startProc starts a topix binary against the Redis at url.
func startProc(bin, url string, stdin *bytes.Reader, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "TOPIX_REDIS_URL="+url, "NO_COLOR=1")
	if g := os.Getenv("TOPIX_GOGC"); g != "" {
		cmd.Env = append(cmd.Env, "GOGC="+g)
	}
	if l := os.Getenv("TOPIX_GOMEMLIMIT"); l != "" {
		cmd.Env = append(cmd.Env, "GOMEMLIMIT="+l)
	}
	p := &proc{cmd: cmd, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if stdin != nil {
		cmd.Stdin = stdin
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.done <- cmd.Wait() }()
	return p, nil
}

func (p *proc) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			return fmt.Errorf("topix: %v: %s", err, p.stderr.String())
		}
		return nil
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		return fmt.Errorf("topix did not stop within 30s of SIGTERM")
	}
}

// peakRSS reads the high-water mark of a process's resident set.
func peakRSS(pid int) (int64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	v := field(string(status), "VmHWM")
	kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
	return kb * 1024, err
}

// rss drains backlogs of each size with the trivial script at concurrency
// 2 and reports topix's peak RSS.
func (b *bench) rss() error {
	fmt.Printf("peak RSS of topix draining a backlog (trivial script, concurrency 2):\n\n")
	fmt.Printf("| backlog | peak RSS | drain rate |\n|--------:|---------:|-----------:|\n")
	for _, size := range b.rssSizes {
		if err := b.seed("in", size); err != nil {
			return err
		}
		b.runs++
		group := fmt.Sprintf("g%d", b.runs)
		b.rdb.XGroupCreate(context.Background(), "in", group, "0")
		p, err := b.startTopix(nil, "consumer", "in", group, b.scripts["trivial"], "--concurrency", "2", "--no-reload", "--log-level", "warn")
		if err != nil {
			return err
		}
		first, last, err := b.watch(group, size, 10*time.Minute)
		if err != nil {
			p.stop()
			return err
		}
		hwm, err := peakRSS(p.cmd.Process.Pid)
		if serr := p.stop(); err == nil {
			err = serr
		}
		if err != nil {
			return err
		}
		fmt.Printf("| %d | %.1f MB | %.0f/s |\n", size, float64(hwm)/1e6, float64(size)/last.Sub(first).Seconds())
	}
	fmt.Println()
	return b.seed("in", 0)
}

// latency emits at a steady rate with the send time in each entry; the
// script emits its call time; the difference is the latency.
func (b *bench) latency() error {
	ctx := context.Background()
	b.rdb.Del(ctx, "lat", "steady")
	b.rdb.XGroupCreateMkStream(ctx, "steady", "g", "$")
	p, err := b.startTopix(nil, "consumer", "steady", "g", b.scripts["latency"], "--concurrency", "2", "--no-reload", "--log-level", "warn")
	if err != nil {
		return err
	}
	// Wait for the consumer to be reading before the clock starts.
	for i := 0; i < 1000; i++ {
		cs, _ := b.rdb.XInfoConsumers(ctx, "steady", "g").Result()
		if len(cs) > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	total := b.latRate * b.latSeconds
	perTick := max(1, b.latRate/1000)
	tick := time.Second * time.Duration(perTick) / time.Duration(b.latRate)
	t := time.NewTicker(tick)
	sent := 0
	for sent < total {
		<-t.C
		pipe := b.rdb.Pipeline()
		for range perTick {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: "steady", Values: []string{"sent", strconv.FormatInt(time.Now().UnixNano(), 10), "pad", strings.Repeat("x", 80)}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Stop()
			p.stop()
			return err
		}
		sent += perTick
	}
	t.Stop()
	for i := 0; i < 2000; i++ {
		n, _ := b.rdb.XLen(ctx, "lat").Result()
		if n >= int64(total) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.stop(); err != nil {
		return err
	}
	var lat []float64
	cursor := "-"
	for {
		msgs, err := b.rdb.XRangeN(ctx, "lat", cursor, "+", 10000).Result()
		if err != nil || len(msgs) == 0 {
			break
		}
		for _, m := range msgs {
			s, _ := strconv.ParseInt(m.Values["sent"].(string), 10, 64)
			c, _ := strconv.ParseInt(m.Values["called"].(string), 10, 64)
			lat = append(lat, float64(c-s)/1e6)
		}
		cursor = "(" + msgs[len(msgs)-1].ID
	}
	if len(lat) < total {
		return fmt.Errorf("latency: %d of %d entries were called", len(lat), total)
	}
	warm := lat[len(lat)/10:] // the first tenth warms up
	slices.Sort(warm)
	fmt.Printf("end-to-end latency, emit to call, at %d entries/s for %ds (concurrency 2, %d entries after a warm-up tenth):\n\n", b.latRate, b.latSeconds, len(warm))
	fmt.Printf("| p50 | p90 | p99 | max |\n|----:|----:|----:|----:|\n")
	fmt.Printf("| %.2f ms | %.2f ms | %.2f ms | %.2f ms |\n\n", pct(warm, 0.50), pct(warm, 0.90), pct(warm, 0.99), warm[len(warm)-1])
	return nil
}

func pct(sorted []float64, q float64) float64 {
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// ingest times `topix emit ingest -` on generated lines.
func (b *bench) ingest() error {
	var lines bytes.Buffer
	for i := 0; i < b.ingestLines; i++ {
		fmt.Fprintf(&lines, `{"id": %d, "kind": "order", "sku": "SKU-%06d", "note": "a line of about a hundred bytes, padded"}`+"\n", i, i%1000)
	}
	b.rdb.Del(context.Background(), "ingest")
	start := time.Now()
	p, err := b.startTopix(bytes.NewReader(lines.Bytes()), "emit", "ingest", "-")
	if err != nil {
		return err
	}
	p.cmd.Stdout = nil
	if err := <-p.done; err != nil {
		return fmt.Errorf("emit -: %v: %s", err, p.stderr.String())
	}
	took := time.Since(start)
	n, _ := b.rdb.XLen(context.Background(), "ingest").Result()
	if n != int64(b.ingestLines) {
		return fmt.Errorf("emit - added %d of %d lines", n, b.ingestLines)
	}
	fmt.Printf("ingest of `topix emit STREAM -`: %d lines in %s: %.0f entries/s\n\n", b.ingestLines, took.Round(time.Millisecond), float64(b.ingestLines)/took.Seconds())
	return nil
}
