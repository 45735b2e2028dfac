//go:build chaos

package faults

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix/internal/redistest"
)

// The exactly-once scenarios (s-v) count emits: every entry's script
// emits its id to the results stream once per call, so an entry processed
// twice shows as a duplicate emit unless --exactly-once suppressed it.
// Each runs with the flag, where there must be no duplicate, and without,
// for comparison.

func emitLine(c tally) string {
	return fmt.Sprintf("sent %d, processed %d, emitted %d, duplicate emits %d, lost %d",
		c.sent, c.processed, c.processed+c.duplicated, c.duplicated, c.lost)
}

// checkExactlyOnce fails the scenario unless every entry was emitted once.
func checkExactlyOnce(t *testing.T, c tally, n int) {
	t.Helper()
	if c.duplicated != 0 || c.lost != 0 || c.pending != 0 || c.processed != n || c.sent != n {
		t.Errorf("--exactly-once: %s, pending %d; want %d sent and emitted once each, 0 lost", emitLine(c), c.pending, n)
	}
}

// recorderTo is the suite's recorder emitting to results instead.
func recorderTo(t *testing.T, results string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "recorder.star")
	src := strings.Replace(recorder, `emit("results"`, fmt.Sprintf("emit(%q", results), 1)
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func consumerOf(t *testing.T, url string, k keys, script, name string, flags ...string) *proc {
	args := append([]string{"consumer", k.in, "g", script, "--name", name,
		"--max-steps", "100000000000", "--log-level", "warn", "--dead-letter", k.dead}, flags...)
	return launch(t, launchEnv{url: url}, args...)
}

// killOneOfTwo: n entries, two consumers, one killed with SIGKILL after a
// quarter; drained by the other.
func killOneOfTwo(t *testing.T, url string, rdb redis.UniversalClient, k keys, n int, flags ...string) tally {
	script := recorderTo(t, k.results)
	seedInto(t, rdb, k.in, n, plain)
	flags = append([]string{"--claim-idle", "2s"}, flags...)
	victim := consumerOf(t, url, k, script, "victim", flags...)
	survivor := consumerOf(t, url, k, script, "survivor", flags...)
	waitFor(t, 60*time.Second, "a quarter of the entries", func() bool { return rdb.XLen(context.Background(), k.results).Val() >= int64(n/4) })
	victim.stop(t, syscall.SIGKILL, 5*time.Second)
	waitDrainedOf(t, rdb, k)
	survivor.stop(t, syscall.SIGTERM, 30*time.Second)
	return countOf(t, rdb, k)
}

// s. kill -9 one of two consumers mid-run: with --exactly-once the
// batches the victim had emitted but not acked are not emitted again.
func TestExactlyOnceKillOneOfTwo(t *testing.T) {
	const n = 20000
	srv := startServer(t)
	c := killOneOfTwo(t, srv.URL(), srv.rdb, plainKeys, n, "--exactly-once")
	checkExactlyOnce(t, c, n)
	other := startServer(t)
	without := killOneOfTwo(t, other.URL(), other.rdb, plainKeys, n)
	report(t, "s. kill -9 one of two consumers, --exactly-once: %s; without it: duplicate emits %d", emitLine(c), without.duplicated)
	if without.lost != 0 {
		t.Errorf("without --exactly-once: %s", emitLine(without))
	}
}

// t. calls that outlive their lease: the consumer running them is
// stopped (SIGSTOP) until another one claimed the entries, processed
// them and acked them; then it resumes and finishes its calls. With
// --exactly-once its emits are suppressed; without, they are added again.
func TestExactlyOnceLeaseOutlived(t *testing.T) {
	const n = 5
	run := func(flags ...string) (tally, string) {
		srv := startServer(t)
		seed(t, srv.rdb, n, func(i int) []string { return []string{"i", fmt.Sprint(i), "spin", "1s"} })
		flags = append([]string{"--claim-idle", "1s", "--concurrency", fmt.Sprint(n), "--log-level", "info"}, flags...)
		slow := consumer(t, srv, "slow", flags...)
		waitFor(t, 10*time.Second, "the slow consumer holding every entry", func() bool {
			p, err := srv.rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{Stream: "in", Group: "g", Consumer: "slow", Start: "-", End: "+", Count: n}).Result()
			return err == nil && len(p) == n
		})
		_ = slow.cmd.Process.Signal(syscall.SIGSTOP) // its lease lapses
		other := consumer(t, srv, "other", flags...)
		waitDrained(t, srv.rdb) // the other claimed, processed and acked them all
		_ = slow.cmd.Process.Signal(syscall.SIGCONT)
		slow.stop(t, syscall.SIGTERM, 30*time.Second) // it finishes its calls and flushes them
		other.stop(t, syscall.SIGTERM, 30*time.Second)
		return count(t, srv.rdb), slow.stderr.String()
	}
	c, log := run("--exactly-once")
	checkExactlyOnce(t, c, n)
	if !strings.Contains(log, "duplicates_suppressed=") || strings.Contains(log, "duplicates_suppressed=0") {
		t.Errorf("the slow consumer suppressed no duplicate:\n%s", tail(log, 20))
	}
	without, _ := run()
	report(t, "t. %d calls outliving their lease (SIGSTOP, claimed and processed by another consumer, SIGCONT), --exactly-once: %s; without it: duplicate emits %d",
		n, emitLine(c), without.duplicated)
	if without.duplicated != n {
		t.Errorf("without --exactly-once: %s; want %d duplicates (the comparison shows nothing)", emitLine(without), n)
	}
}

// u. redis-server killed with SIGKILL and restarted (AOF, fsync always)
// mid-run: the script's effects persist as one transaction, its cache is
// empty after the restart (NOSCRIPT, loaded again), and a flush whose
// answer was lost is sent again without adding its emits twice.
func TestExactlyOnceRedisRestart(t *testing.T) {
	const n = 20000
	run := func(flags ...string) tally {
		srv := startServer(t, "--appendonly", "yes", "--appendfsync", "always")
		seed(t, srv.rdb, n/2, plain)
		c1 := consumer(t, srv, "c1", append([]string{"--claim-idle", "2s"}, flags...)...)
		waitFor(t, 60*time.Second, "a quarter of the entries", func() bool { return resultsLen(srv.rdb) >= n/4 })
		srv.restart(t)
		seed(t, srv.rdb, n/2, func(i int) []string { return plain(n/2 + i) })
		waitDrained(t, srv.rdb)
		c1.stop(t, syscall.SIGTERM, 30*time.Second)
		if code := c1.exitCode(t); code != 0 {
			t.Errorf("the consumer exited with %d, want 0 (it must survive the restart):\n%s", code, tail(c1.stderr.String(), 20))
		}
		return count(t, srv.rdb)
	}
	c := run("--exactly-once")
	checkExactlyOnce(t, c, n)
	without := run()
	report(t, "u. kill -9 and restart redis-server (AOF, fsync always), --exactly-once: %s; without it: duplicate emits %d", emitLine(c), without.duplicated)
	if without.lost != 0 {
		t.Errorf("without --exactly-once: %s", emitLine(without))
	}
}

// v. s on the local Cluster, with hash-tagged streams: the results and
// the dead letters share the stream's slot, as the script needs.
func TestExactlyOnceOnACluster(t *testing.T) {
	const n = 10000
	cl := redistest.MustCluster(t, 3, 1)
	rdb := cl.Client()
	t.Cleanup(func() { rdb.Close() })
	eo := keys{"{eo}", "{eo}:results", "{eo}:dead"}
	c := killOneOfTwo(t, cl.URL(), rdb, eo, n, "--exactly-once")
	checkExactlyOnce(t, c, n)
	plainOnCluster := keys{"{al}", "{al}:results", "{al}:dead"}
	without := killOneOfTwo(t, cl.URL(), rdb, plainOnCluster, n)
	report(t, "v. kill -9 one of two consumers on a Cluster, hash-tagged streams, --exactly-once: %s; without it: duplicate emits %d", emitLine(c), without.duplicated)
	if without.lost != 0 {
		t.Errorf("without --exactly-once: %s", emitLine(without))
	}

	// An emit to another slot fails its call, with the fix in the error,
	// and is dead-lettered; nothing is added there.
	script := filepath.Join(t.TempDir(), "cross.star")
	os.WriteFile(script, []byte("def consumer(data):\n    emit('elsewhere', {'x': '1'})\n"), 0o644)
	x := keys{"{cross}", "{cross}:results", "{cross}:dead"}
	seedInto(t, rdb, x.in, 1, plain)
	p := consumerOf(t, cl.URL(), x, script, "c1", "--exactly-once", "--max-attempts", "1")
	waitFor(t, 20*time.Second, "the entry dead-lettered", func() bool { return rdb.XLen(context.Background(), x.dead).Val() == 1 })
	p.stop(t, syscall.SIGTERM, 30*time.Second)
	dead, _ := rdb.XRange(context.Background(), x.dead, "-", "+").Result()
	if reason, _ := dead[0].Values["topix.error"].(string); !strings.Contains(reason, `"elsewhere"`) || !strings.Contains(reason, `{cross}:elsewhere`) {
		t.Errorf("the cross-slot emit's error: %q; want it to name the stream and the hash-tag fix", reason)
	}
	if l := rdb.XLen(context.Background(), "elsewhere").Val(); l != 0 {
		t.Errorf("%d entries added to the other slot", l)
	}
	// A dead-letter stream on another slot is refused at start.
	bad := launch(t, launchEnv{url: cl.URL()}, "consumer", "{cross}", "g", script, "--exactly-once", "--dead-letter", "dead")
	if code := bad.exitCode(t); code != 2 || !strings.Contains(bad.stderr.String(), "--dead-letter \"{cross}:dead\"") {
		t.Errorf("a dead-letter stream on another slot: exit %d, %s", code, bad.stderr.String())
	}
}
