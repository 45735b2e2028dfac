//go:build chaos

package faults

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix/internal/redistest"
)

// corners is the script of scenarios j-m: the recorder, plus entries that
// fail their first attempt, emits of 200 KB, and emits to a given stream.
const corners = `
def consumer(data, msg):
    if data.get("flaky") == "1" and msg.attempt == 1:
        fail("flaky entry " + data.get("i", "?") + " fails its first attempt")
    if data.get("to"):
        emit(data["to"], {"id": msg.id})
        return
    out = {"id": msg.id, "by": msg.consumer, "attempt": msg.attempt}
    if data.get("big"):
        out["big"] = "x" * int(data["big"])
    emit("results", out)
`

func cornerConsumer(t *testing.T, env launchEnv, name string, flags ...string) *proc {
	t.Helper()
	path := filepath.Join(scripts, "corners.star")
	if err := os.WriteFile(path, []byte(corners), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"consumer", "in", "g", path, "--name", name, "--log-level", "info"}, flags...)
	return launch(t, env, args...)
}

var prunedRe = regexp.MustCompile(`pruned an idle consumer.* pruned=(\S+)`)

// pruned returns the consumers the logs of ps say they pruned.
func pruned(ps ...*proc) []string {
	var names []string
	for _, p := range ps {
		for _, m := range prunedRe.FindAllStringSubmatch(p.stderr.String(), -1) {
			names = append(names, m[1])
		}
	}
	return names
}

// j. three consumers with a short --prune-idle, entries arriving in bursts
// (so consumers wait in reads between them) and a tenth of them failing
// their first attempt; a fourth consumer is killed once idle. Five runs:
// the live consumers are never pruned, the dead one is, nothing is lost.
func TestPruningWithLiveConsumers(t *testing.T) {
	const runs, n, burst = 5, 3000, 200
	flags := []string{"--prune-idle", "1s", "--block", "100ms", "--retry-backoff", "50ms", "--claim-idle", "2s", "--concurrency", "2"}
	var lost, livePruned, deadPruned int
	var last tally
	for run := 1; run <= runs; run++ {
		srv := startServer(t)
		env := launchEnv{url: srv.URL()}
		var live []*proc
		for i := range 3 {
			live = append(live, cornerConsumer(t, env, fmt.Sprint("live-", i), flags...))
		}
		doomed := cornerConsumer(t, env, "doomed", flags...)
		for start := 0; start < n; start += burst {
			seed(t, srv.rdb, burst, func(i int) []string {
				i += start
				if i%10 == 3 {
					return []string{"i", fmt.Sprint(i), "flaky", "1"}
				}
				return plain(i)
			})
			if start == n/burst/2*burst {
				waitDrained(t, srv.rdb)
				doomed.stop(t, syscall.SIGKILL, 5*time.Second) // owns nothing now: prunable
			}
			// The next burst after this one is processed: the consumers
			// then wait in their reads, idle for Redis 7.0.
			waitFor(t, 60*time.Second, "the burst processed", func() bool {
				c := count(t, srv.rdb)
				return c.processed == c.sent && c.pending == 0
			})
		}
		t.Cleanup(func() {
			if t.Failed() {
				for _, p := range live {
					for _, l := range strings.Split(p.stderr.String(), "\n") {
						if strings.Contains(l, "prun") || strings.Contains(l, "ERR") {
							t.Log(l)
						}
					}
				}
				cs, _ := srv.rdb.XInfoConsumers(context.Background(), "in", "g").Result()
				t.Logf("consumers: %+v", cs)

			}
		})
		waitFor(t, 30*time.Second, "the dead consumer pruned", func() bool {
			for _, name := range pruned(live...) {
				if name == "doomed" {
					return true
				}
			}
			return false
		})
		for _, p := range live {
			p.stop(t, syscall.SIGTERM, 30*time.Second)
		}
		last = count(t, srv.rdb)
		lost += last.lost
		for _, name := range pruned(live...) {
			if name == "doomed" {
				deadPruned++
			} else {
				livePruned++
				t.Errorf("run %d: a live consumer, %s, was pruned", run, name)
			}
		}
		if last.lost != 0 || last.processed != n {
			t.Errorf("run %d: %s", run, last)
		}
	}
	report(t, "j. prune-idle 1s, 3 live consumers + 1 killed, %d entries in bursts, a tenth failing once, %d runs: last run %s; lost in all runs %d, live consumers pruned %d, dead consumer pruned %d of %d runs",
		n, runs, last, lost, livePruned, deadPruned, runs)
}

// k. a group destroyed mid-run, with entries added at the same moment,
// under --start '$': the group is created again where the consumer last
// saw it, and every entry added after the first start is processed.
func TestGroupDestroyedMidRunWithStartDollar(t *testing.T) {
	srv := startServer(t)
	ctx := context.Background()
	seed(t, srv.rdb, 100, plain) // before the start: skipped by $, as asked
	before := map[string]bool{}
	scan(t, srv.rdb, "in", func(m redis.XMessage) { before[m.ID] = true })
	p := consumer(t, srv, "c1", "--start", "$", "--block", "100ms", "--log-level", "info")
	waitFor(t, 10*time.Second, "the group created", func() bool {
		g, _ := srv.rdb.XInfoGroups(ctx, "in").Result()
		return len(g) == 1
	})
	const n = 3000
	seed(t, srv.rdb, n/2, plain)
	// Destroy the group while the consumer works, and add entries in the
	// same transaction: they exist before it notices.
	waitFor(t, 30*time.Second, "some processed", func() bool { return resultsLen(srv.rdb) > 200 })
	pipe := srv.rdb.TxPipeline()
	pipe.XGroupDestroy(ctx, "in", "g")
	for i := range 500 {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: "in", Values: plain(i)})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	seed(t, srv.rdb, n/2-500, plain)
	waitFor(t, 60*time.Second, "every entry after the start processed", func() bool {
		processed := 0
		c := count(t, srv.rdb)
		for id, k := range c.results {
			if k > 0 && !before[id] {
				processed++
			}
		}
		return processed == n && c.pending == 0
	})
	p.stop(t, syscall.SIGTERM, 30*time.Second)
	c := count(t, srv.rdb)
	processed, dups, lost := 0, 0, 0
	scan(t, srv.rdb, "in", func(m redis.XMessage) {
		switch k := c.results[m.ID]; {
		case before[m.ID]:
		case k == 0:
			lost++
		default:
			processed++
			dups += k - 1
		}
	})
	logged := strings.Contains(p.stderr.String(), "created it again") && strings.Contains(p.stderr.String(), "why=")
	report(t, "k. group destroyed mid-run with --start $: sent after the start %d, processed %d, duplicated %d, pending %d, lost %d (the %d sent before the start skipped, as asked); re-creation logged with its position: %v",
		n, processed, dups, c.pending, lost, len(before), logged)
	if lost != 0 || processed != n || !logged {
		t.Errorf("%d of the %d entries added after the start were lost; logged %v", lost, n, logged)
	}
}

// l. emits of 200 KB through a 5 MB/s loopback link: every entry acked,
// every emit added once.
func TestBigEmitsThroughASlowLink(t *testing.T) {
	srv := startServer(t)
	const n, size = 300, 200_000
	seed(t, srv.rdb, n, func(i int) []string { return []string{"i", fmt.Sprint(i), "big", fmt.Sprint(size)} })
	proxy, err := redistest.StartProxy(srv.Addr, 5<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	start := time.Now()
	p := cornerConsumer(t, launchEnv{url: "redis://" + proxy.Addr + "/0"}, "c1", "--concurrency", "4")
	waitFor(t, 120*time.Second, "every entry processed and acked", func() bool {
		c := count(t, srv.rdb)
		return c.processed == n && c.pending == 0
	})
	took := time.Since(start)
	p.stop(t, syscall.SIGTERM, 30*time.Second)
	c := count(t, srv.rdb)
	resent := "0" // the stopped line shows emits_resent only when some were
	if m := regexp.MustCompile(`emits_resent=(\d+)`).FindStringSubmatch(p.stderr.String()); m != nil {
		resent = m[1]
	}
	report(t, "l. %d emits of 200 KB through a 5 MB/s link: %s, emits in the output %d, sent again after a failed connection %s, in %s",
		n, c, resultsLen(srv.rdb), resent, took.Round(100*time.Millisecond))
	if c.lost != 0 || c.duplicated != 0 || resultsLen(srv.rdb) != n {
		t.Errorf("%s; want each of the %d emits once", c, n)
	}
}

// m. an emit to a key of the wrong type fails its entry: retried with the
// normal backoff, then dead-lettered with Redis's WRONGTYPE, in seconds
// (not after --claim-idle); the other entries are processed.
func TestAnEmitToAKeyOfTheWrongType(t *testing.T) {
	srv := startServer(t)
	ctx := context.Background()
	if err := srv.rdb.Set(ctx, "not-a-stream", "a string", 0).Err(); err != nil {
		t.Fatal(err)
	}
	const n, bad = 1000, 5
	seed(t, srv.rdb, n, func(i int) []string {
		if i%(n/bad) == 7 {
			return []string{"i", fmt.Sprint(i), "to", "not-a-stream"}
		}
		return plain(i)
	})
	start := time.Now()
	p := cornerConsumer(t, launchEnv{url: srv.URL()}, "c1", "--max-attempts", "3", "--retry-backoff", "50ms", "--claim-idle", "1h")
	waitFor(t, 60*time.Second, "everything processed or dead-lettered", func() bool {
		c := count(t, srv.rdb)
		return c.processed+c.dead == n && c.pending == 0
	})
	took := time.Since(start)
	p.stop(t, syscall.SIGTERM, 30*time.Second)
	c := count(t, srv.rdb)
	reasons := 0
	for _, r := range c.deadIDs {
		if strings.Contains(r, "WRONGTYPE") && strings.Contains(r, "not-a-stream") {
			reasons++
		}
	}
	report(t, "m. %d entries, %d emitting to a string key: %s; dead letters with Redis's WRONGTYPE as the reason %d; done in %s (claim-idle 1h)",
		n, bad, c, reasons, took.Round(100*time.Millisecond))
	if c.dead != bad || c.processed != n-bad || c.lost != 0 || reasons != bad {
		t.Errorf("%s, %d reasons name WRONGTYPE; want the %d bad entries dead-lettered with it", c, reasons, bad)
	}
}

// w. stopping on time: SIGTERM while topix is still connecting (to a server
// that never answers) must exit 0 at once; with redis-server frozen
// (SIGSTOP), a stop under --shutdown-timeout 2s must end within 3.5 s.
func TestStoppingOnTime(t *testing.T) {
	silent, accepted := redistest.Silent(t)
	p := consumer(t, &server{Server: &redistest.Server{Addr: silent}}, "c1")
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("topix never connected")
	}
	connecting := p.stop(t, syscall.SIGTERM, 10*time.Second)
	connectingCode := p.exitCode(t)

	srv := startServer(t)
	p = consumer(t, srv, "c2", "--shutdown-timeout", "2s", "--block", "500ms")
	waitFor(t, 10*time.Second, "the consumer to read", func() bool {
		g, _ := srv.rdb.XInfoGroups(context.Background(), "in").Result()
		return len(g) == 1
	})
	if err := syscall.Kill(srv.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(srv.Pid(), syscall.SIGCONT) })
	frozen := p.stop(t, syscall.SIGTERM, 20*time.Second)
	frozenCode := p.exitCode(t)
	report(t, "w. SIGTERM while connecting: exit %d in %s; SIGTERM with redis-server frozen, --shutdown-timeout 2s: exit %d in %s",
		connectingCode, connecting.Round(time.Millisecond), frozenCode, frozen.Round(time.Millisecond))
	if connectingCode != 0 || connecting > time.Second {
		t.Errorf("SIGTERM while connecting: exit %d after %s; want 0 at once", connectingCode, connecting)
	}
	if frozen > 3500*time.Millisecond {
		t.Errorf("the stop took %s with Redis frozen, under --shutdown-timeout 2s", frozen)
	}
}
