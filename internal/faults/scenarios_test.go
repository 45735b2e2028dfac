//go:build chaos

package faults

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// a. kill -9 one of two consumers in the middle of 20,000 entries: the
// other claims its pending entries; every entry is processed.
func TestKillOneOfTwoConsumers(t *testing.T) {
	srv := startServer(t)
	const n = 20000
	seed(t, srv.rdb, n, plain)
	victim := consumer(t, srv, "victim", "--claim-idle", "2s")
	survivor := consumer(t, srv, "survivor", "--claim-idle", "2s")
	waitFor(t, 60*time.Second, "a quarter of the entries", func() bool { return resultsLen(srv.rdb) >= n/4 })
	victim.stop(t, syscall.SIGKILL, 5*time.Second)
	// What the victim held when it died: the survivor must claim it.
	held := map[string]bool{}
	pe, _ := srv.rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{Stream: "in", Group: "g", Consumer: "victim", Start: "-", End: "+", Count: n}).Result()
	for _, p := range pe {
		held[p.ID] = true
	}
	waitDrained(t, srv.rdb)
	survivor.stop(t, syscall.SIGTERM, 30*time.Second)
	c := count(t, srv.rdb)
	report(t, "a. kill -9 one of two consumers mid-run: %s", c)
	if c.lost != 0 || c.pending != 0 || c.processed != n {
		t.Errorf("%s; want all %d processed, 0 pending, 0 lost", c, n)
	}
	// The victim's pending entries came back to the survivor, as first
	// attempts unless their call was running when the victim died.
	reclaimed, charged := 0, 0
	scan(t, srv.rdb, "results", func(m redis.XMessage) {
		if m.Values["by"] == "survivor" && held[m.Values["id"].(string)] {
			reclaimed++
			if m.Values["attempt"] != "1" {
				charged++
			}
		}
	})
	if len(held) > 0 && reclaimed == 0 {
		t.Errorf("the survivor processed none of the %d entries the victim held", len(held))
	}
	if charged > 2 { // the victim ran at most two calls at once
		t.Errorf("%d of the victim's entries were charged an attempt; only the ones running when it died may be", charged)
	}
	t.Logf("the survivor processed %d of the %d entries the victim held; %d charged an attempt", reclaimed, len(held), charged)
}

// b. restart redis-server (appendonly yes, appendfsync always) in the
// middle of a run: the consumer survives and finishes; nothing is lost.
func TestRedisRestartMidRun(t *testing.T) {
	srv := startServer(t, "--appendonly", "yes", "--appendfsync", "always")
	const n = 20000
	seed(t, srv.rdb, n/2, plain)
	c1 := consumer(t, srv, "c1", "--claim-idle", "2s")
	waitFor(t, 60*time.Second, "a quarter of the entries", func() bool { return resultsLen(srv.rdb) >= n/4 })
	srv.restart(t)
	// The producer goes on after the restart.
	seed(t, srv.rdb, n/2, func(i int) []string { return plain(n/2 + i) })
	waitDrained(t, srv.rdb)
	c1.stop(t, syscall.SIGTERM, 30*time.Second)
	c := count(t, srv.rdb)
	report(t, "b. kill -9 and restart redis-server (AOF, fsync always) mid-run: %s", c)
	if c.sent != n || c.lost != 0 || c.pending != 0 {
		t.Errorf("%s; want %d sent, 0 pending, 0 lost", c, n)
	}
	if code := c1.exitCode(t); code != 0 {
		t.Errorf("the consumer exited with %d, want 0 (it must survive the restart)", code)
	}
	// Once per outage, not a flood; zero when go-redis's own retry of the
	// command already reached the restarted server.
	outages := strings.Count(c1.stderr.String(), "Redis failed; retrying")
	if outages > 1 {
		t.Errorf("the outage was logged %d times, want at most once:\n%s", outages, tail(c1.stderr.String(), 20))
	}
	t.Logf("the outage was logged %d times", outages)
}

// c. poison entries: exactly those reach the dead-letter stream after
// max-attempts, with their error; all others are processed; 0 pending.
func TestPoisonEntries(t *testing.T) {
	srv := startServer(t)
	const n = 2000
	poison := map[string]bool{}
	seed(t, srv.rdb, n, func(i int) []string {
		if i%100 == 7 {
			return []string{"i", fmt.Sprint(i), "poison", "1"}
		}
		return plain(i)
	})
	scan(t, srv.rdb, "in", func(m redis.XMessage) {
		if m.Values["poison"] == "1" {
			poison[m.ID] = true
		}
	})
	p := consumer(t, srv, "c1", "--max-attempts", "3", "--retry-backoff", "50ms")
	waitFor(t, 60*time.Second, "all entries processed or dead-lettered", func() bool {
		c := count(t, srv.rdb)
		return c.processed+c.dead == n && c.pending == 0
	})
	p.stop(t, syscall.SIGTERM, 30*time.Second)
	c := count(t, srv.rdb)
	report(t, "c. poison entries (1%%, max-attempts 3): %s", c)
	if c.dead != len(poison) || c.processed != n-len(poison) || c.pending != 0 || c.lost != 0 {
		t.Errorf("%s; want %d dead-lettered, %d processed", c, len(poison), n-len(poison))
	}
	for id, reason := range c.deadIDs {
		if !poison[id] || !strings.Contains(reason, "poison entry") {
			t.Errorf("dead letter %s (%q) is not a poison entry", id, reason)
		}
	}
	dead, _ := srv.rdb.XRangeN(context.Background(), "in:dead", "-", "+", 1).Result()
	if len(dead) == 1 && dead[0].Values["topix.attempts"] != "3" {
		t.Errorf("dead letter attempts = %v, want 3", dead[0].Values["topix.attempts"])
	}
}

// d. a call that runs longer than claim-idle is not taken over by a second
// consumer: no duplicate.
func TestLongCallIsNotStolen(t *testing.T) {
	srv := startServer(t)
	srv.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: "in", Values: []string{"i", "slow", "spin", "4s"}})
	a := consumer(t, srv, "a", "--claim-idle", "1s", "--concurrency", "1")
	waitFor(t, 10*time.Second, "a to take the slow entry", func() bool {
		p, _ := srv.rdb.XPending(context.Background(), "in", "g").Result()
		return p != nil && p.Count == 1
	})
	b := consumer(t, srv, "b", "--claim-idle", "1s", "--concurrency", "1")
	seed(t, srv.rdb, 200, plain) // b has work of its own meanwhile
	waitFor(t, 30*time.Second, "everything processed", func() bool {
		c := count(t, srv.rdb)
		return c.processed == 201 && c.pending == 0
	})
	a.stop(t, syscall.SIGTERM, 30*time.Second)
	b.stop(t, syscall.SIGTERM, 30*time.Second)
	c := count(t, srv.rdb)
	report(t, "d. a 4s call with claim-idle 1s and a second consumer: %s", c)
	if c.duplicated != 0 || c.lost != 0 {
		t.Errorf("%s; want no duplicate", c)
	}
}

// e. SIGTERM during a burst: the consumer exits within the shutdown
// timeout, acks nothing it did not process, and the next start processes
// the rest.
func TestSIGTERMDuringABurst(t *testing.T) {
	srv := startServer(t)
	const n = 20000
	seed(t, srv.rdb, n, func(i int) []string { return append(plain(i), "spin", "200us") })
	first := consumer(t, srv, "c1", "--shutdown-timeout", "5s", "--concurrency", "2")
	waitFor(t, 60*time.Second, "a fifth of the entries", func() bool { return resultsLen(srv.rdb) >= n/5 })
	took := first.stop(t, syscall.SIGTERM, 10*time.Second)
	if code := first.exitCode(t); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	// Every acked entry was processed: an entry is acked when it was
	// delivered (up to last-delivered-id) and is no longer pending.
	mid := count(t, srv.rdb)
	groups, _ := srv.rdb.XInfoGroups(context.Background(), "in").Result()
	pending := map[string]bool{}
	pe, _ := srv.rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{Stream: "in", Group: "g", Start: "-", End: "+", Count: n}).Result()
	for _, p := range pe {
		pending[p.ID] = true
	}
	ackedNotProcessed := 0
	scan(t, srv.rdb, "in", func(m redis.XMessage) {
		if compareIDs(m.ID, groups[0].LastDeliveredID) <= 0 && !pending[m.ID] && mid.results[m.ID] == 0 {
			ackedNotProcessed++
		}
	})
	report(t, "e. SIGTERM in a burst: exited in %s (shutdown timeout 5s); at exit: processed %d of %d, pending %d, acked but not processed %d",
		took.Round(time.Millisecond), mid.processed, mid.sent, mid.pending, ackedNotProcessed)
	if ackedNotProcessed != 0 {
		t.Errorf("%d entries acked without being processed", ackedNotProcessed)
	}

	second := consumer(t, srv, "c1", "--concurrency", "2")
	waitDrained(t, srv.rdb)
	second.stop(t, syscall.SIGTERM, 30*time.Second)
	c := count(t, srv.rdb)
	report(t, "e. ... after the next start: %s", c)
	if c.lost != 0 || c.pending != 0 {
		t.Errorf("%s; want 0 pending, 0 lost", c)
	}
}

// compareIDs orders stream ids numerically.
func compareIDs(a, b string) int {
	var am, as, bm, bs uint64
	fmt.Sscanf(a, "%d-%d", &am, &as)
	fmt.Sscanf(b, "%d-%d", &bm, &bs)
	switch {
	case am < bm || am == bm && as < bs:
		return -1
	case am == bm && as == bs:
		return 0
	}
	return 1
}
