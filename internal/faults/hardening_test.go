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

	"github.com/topix-dev/topix/engine"
)

// hostile is the script of scenarios g, h and i: the recorder, plus
// entries that kill their consumer, blow its memory or its stack, or spin
// in expensive builtins.
const hostile = `
def consumer(data, msg):
    if data.get("kill"):
        log.warn("killer running")
        while True:
            pass
    if data.get("bomb"):
        s = "x"
        while True:
            s = s + s
    if data.get("json"):
        json.decode(data["json"])
    if data.get("heavy"):
        log.warn("heavy running")
        big = list(range(200000))
        while True:
            s = str(big)
    emit("results", {"id": msg.id, "by": msg.consumer, "attempt": msg.attempt})
`

func hostileConsumer(t *testing.T, srv *server, name string, flags ...string) *proc {
	t.Helper()
	path := filepath.Join(scripts, "hostile.star")
	if err := os.WriteFile(path, []byte(hostile), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"consumer", "in", "g", path, "--name", name, "--max-steps", "100000000000", "--log-level", "warn"}, flags...)
	return startTopix(t, srv, args...)
}

// idOf returns the id of the entry of stream in that has field.
func idOf(t *testing.T, rdb *redis.Client, field string) string {
	t.Helper()
	id := ""
	scan(t, rdb, "in", func(m redis.XMessage) {
		if _, ok := m.Values[field]; ok {
			id = m.ID
		}
	})
	return id
}

// g. a poison entry that kills its consumer: SIGKILL while its call runs,
// restart with the same --name, max-attempts times. Only that entry is
// dead-lettered; the neighbours read with it are processed, none charged.
func TestAnEntryThatKillsItsConsumer(t *testing.T) {
	srv := startServer(t)
	const n, attempts = 201, 3
	seed(t, srv.rdb, n, func(i int) []string {
		if i == 100 {
			return []string{"i", fmt.Sprint(i), "kill", "1"}
		}
		return plain(i)
	})
	killer := idOf(t, srv.rdb, "kill")
	key := engine.AttemptsKey("in", "g")
	flags := []string{"--concurrency", "1", "--max-attempts", fmt.Sprint(attempts), "--claim-idle", "1h"}
	for round := 1; round <= attempts; round++ {
		p := hostileConsumer(t, srv, "c1", flags...)
		want := fmt.Sprintf("%d:0", round)
		waitFor(t, 30*time.Second, "the killer running, with its attempt "+want+" recorded", func() bool {
			v, _ := srv.rdb.HGet(context.Background(), key, killer).Result()
			return v == want && strings.Contains(p.stderr.String(), "killer running")
		})
		p.stop(t, syscall.SIGKILL, 5*time.Second)
	}
	p := hostileConsumer(t, srv, "c1", flags...)
	waitFor(t, 60*time.Second, "everything processed or dead-lettered", func() bool {
		c := count(t, srv.rdb)
		return c.processed+c.dead == n && c.pending == 0
	})
	p.stop(t, syscall.SIGTERM, 30*time.Second)
	c := count(t, srv.rdb)
	charged := 0
	scan(t, srv.rdb, "results", func(m redis.XMessage) {
		if m.Values["attempt"] != "1" {
			charged++
			t.Logf("charged: %s attempt %v (killer %s)", m.Values["id"], m.Values["attempt"], killer)
		}
	})
	report(t, "g. an entry that kills its consumer, SIGKILL %d times: %s; neighbours charged an attempt %d", attempts, c, charged)
	if c.dead != 1 || c.processed != n-1 || c.lost != 0 || c.pending != 0 || charged != 0 {
		t.Errorf("%s, %d neighbours charged; want only the killer dead-lettered, its %d neighbours processed on their first attempt", c, charged, n-1)
	}
	if reason := c.deadIDs[killer]; !strings.Contains(reason, fmt.Sprintf("the consumer stopped while processing it %d times", attempts)) {
		t.Errorf("the killer's dead-letter reason is %q", reason)
	}
}

// h. a memory bomb and a 1.4 MB nested JSON document among 2,000 good
// entries: the consumer stays up all along, and exactly those two are
// dead-lettered, each with its reason.
func TestMemoryBombAndDeepJSON(t *testing.T) {
	srv := startServer(t)
	const n = 2002
	seed(t, srv.rdb, n, func(i int) []string {
		switch i {
		case 500:
			return []string{"i", fmt.Sprint(i), "bomb", "1"}
		case 1500:
			return []string{"i", fmt.Sprint(i), "json", strings.Repeat("[", 1400_000)}
		}
		return plain(i)
	})
	bomb, deep := idOf(t, srv.rdb, "bomb"), idOf(t, srv.rdb, "json")
	p := hostileConsumer(t, srv, "c1", "--max-memory", "256MiB", "--max-attempts", "2", "--retry-backoff", "50ms")
	waitFor(t, 120*time.Second, "everything processed or dead-lettered", func() bool {
		select {
		case <-p.done:
			t.Fatalf("the consumer exited: %v\n%s", p.err, tail(p.stderr.String(), 20))
		default:
		}
		c := count(t, srv.rdb)
		return c.processed+c.dead == n && c.pending == 0
	})
	select {
	case <-p.done:
		t.Fatalf("the consumer exited: %v", p.err)
	default:
	}
	p.stop(t, syscall.SIGTERM, 30*time.Second)
	c := count(t, srv.rdb)
	report(t, "h. a memory bomb and a 1.4 MB nested JSON among 2,000 entries (max-memory 256MiB): %s; the consumer stayed up", c)
	if c.dead != 2 || c.processed != n-2 || c.lost != 0 || c.pending != 0 {
		t.Errorf("%s; want exactly the two hostile entries dead-lettered", c)
	}
	if r := c.deadIDs[bomb]; !strings.Contains(r, "memory limit exceeded") {
		t.Errorf("the bomb's dead-letter reason is %q", r)
	}
	if r := c.deadIDs[deep]; !strings.Contains(r, "deeper than 1000 levels") {
		t.Errorf("the deep document's dead-letter reason is %q", r)
	}
}

// i. a loop of expensive builtins: under --call-timeout 1s it fails within
// 2 s; SIGTERM with --shutdown-timeout 2s during such a call exits within
// 3 s, and the entry stays pending.
func TestExpensiveBuiltinsCannotOutrunTheLimits(t *testing.T) {
	srv := startServer(t)
	srv.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: "in", Values: []string{"heavy", "1"}})
	p := hostileConsumer(t, srv, "c1", "--call-timeout", "1s", "--max-attempts", "1")
	waitFor(t, 30*time.Second, "the heavy call running", func() bool { return strings.Contains(p.stderr.String(), "heavy running") })
	started := time.Now()
	waitFor(t, 30*time.Second, "the heavy entry dead-lettered", func() bool {
		n, _ := srv.rdb.XLen(context.Background(), "in:dead").Result()
		return n == 1
	})
	failedIn := time.Since(started)
	p.stop(t, syscall.SIGTERM, 30*time.Second)
	dead, _ := srv.rdb.XRange(context.Background(), "in:dead", "-", "+").Result()
	if failedIn > 2*time.Second || len(dead) != 1 || !strings.Contains(dead[0].Values["topix.error"].(string), "call timeout (1s)") {
		t.Errorf("the heavy call failed %s after it started (%v); want the call timeout within 2s", failedIn, dead)
	}

	// The same call, a shutdown in the middle of it.
	srv.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: "in", Values: []string{"heavy", "2"}})
	q := hostileConsumer(t, srv, "c2", "--call-timeout", "1h", "--shutdown-timeout", "2s")
	waitFor(t, 30*time.Second, "the heavy call running", func() bool { return strings.Contains(q.stderr.String(), "heavy running") })
	took := q.stop(t, syscall.SIGTERM, 3*time.Second)
	pending, _ := srv.rdb.XPending(context.Background(), "in", "g").Result()
	report(t, "i. a loop of expensive builtins: failed %s after its start under --call-timeout 1s; SIGTERM mid-call with --shutdown-timeout 2s exited in %s, the entry pending: %d",
		failedIn.Round(time.Millisecond), took.Round(time.Millisecond), pending.Count)
	if pending.Count != 1 {
		t.Errorf("pending = %d after the cut call, want 1 (it stays for the next start)", pending.Count)
	}
}
