package engine_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix"
	"github.com/topix-dev/topix/engine"
	"github.com/topix-dev/topix/internal/redistest"
)

// An entry that left the pending list while it waited for its retry (its
// consumer was removed from the group by a pruner that checked before the
// entry was read) is still retried: its data exists.
func TestAnEntryDroppedFromThePendingListIsStillRetried(t *testing.T) {
	both(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := context.Background()
		stream, group := names(t)
		id := add(t, rdb, stream, "k", "v")
		rec := newRecorder()
		var failed atomic.Bool
		rec.fail = func(m *engine.Message) error {
			if failed.CompareAndSwap(false, true) {
				return errors.New("first attempt fails")
			}
			return nil
		}
		r := start(t, rdb, rec, engine.Options{Stream: stream, Group: group, Consumer: "c", Block: 50 * time.Millisecond,
			RetryBackoff: 500 * time.Millisecond, ClaimIdle: time.Hour})
		redistest.WaitFor(t, 5*time.Second, "the first attempt failed", func() bool { return r.c.Stats().Failed == 1 })
		if err := rdb.XGroupDelConsumer(ctx, stream, group, "c").Err(); err != nil {
			t.Fatal(err)
		}
		redistest.WaitFor(t, 5*time.Second, "the entry retried and acked", func() bool { return r.c.Stats().Processed == 1 })
		r.shutdown(t)
		if m := rec.get(id); m == nil || m.Attempt != 2 {
			t.Errorf("entry %s handled as %+v; want its second attempt", id, m)
		}
		if g := groupInfo(t, rdb, stream, group); g.Pending != 0 {
			t.Errorf("pending = %d after the retry succeeded", g.Pending)
		}
	})
}

func TestPruneIdleBelowTheBlockIsRefused(t *testing.T) {
	_, err := engine.New(srv.Client(), newRecorder(), engine.Options{Stream: "s", Group: "g", Consumer: "c",
		Block: time.Second, PruneIdle: 2 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "3s") {
		t.Errorf("New with PruneIdle 2s and Block 1s = %v; want it refused, naming the 3s minimum", err)
	}
}

// Pruning never removes a consumer that owns pending entries, nor a live
// topix consumer waiting in a read (on Redis 7.0 such a consumer's idle
// time grows while it waits: only its heartbeat tells it from a dead one).
func TestPruneIsSafe(t *testing.T) {
	// Not on the embedded server: it has no idle time for a consumer that
	// never read, so it prunes none of them.
	for _, b := range []backend{realRedis} {
		rdb := b.new(t)
		ctx := context.Background()
		stream, group := names(t)
		add(t, rdb, stream, "k", "v")
		deliverTo(t, rdb, stream, group, "owns-one", 1)
		rdb.XGroupCreateConsumer(ctx, stream, group, "idle")
		a := start(t, rdb, newRecorder(), engine.Options{Stream: stream, Group: group, Consumer: "a", Block: 100 * time.Millisecond,
			ClaimIdle: time.Hour, PruneIdle: time.Second})
		b := start(t, rdb, newRecorder(), engine.Options{Stream: stream, Group: group, Consumer: "b", Block: 100 * time.Millisecond,
			ClaimIdle: time.Hour, PruneIdle: time.Second})
		redistest.WaitFor(t, 5*time.Second, "the idle consumer pruned", func() bool {
			cs, _ := rdb.XInfoConsumers(ctx, stream, group).Result()
			for _, c := range cs {
				if c.Name == "idle" {
					return false
				}
			}
			return true
		})
		// Both readers are still members a few prune periods later.
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			cs, _ := rdb.XInfoConsumers(ctx, stream, group).Result()
			names := map[string]bool{}
			for _, c := range cs {
				names[c.Name] = true
			}
			if !names["a"] || !names["b"] || !names["owns-one"] {
				t.Fatalf("consumers %+v; want a, b (reading) and owns-one (pending) kept", cs)
			}
			time.Sleep(50 * time.Millisecond) // polling interval
		}
		a.shutdown(t)
		b.shutdown(t)
		cs, _ := rdb.XInfoConsumers(ctx, stream, group).Result()
		if len(cs) != 1 || cs[0].Name != "owns-one" || cs[0].Pending != 1 {
			t.Errorf("consumers %+v; want only owns-one, with its pending entry (a and b left on exit)", cs)
		}
	}
}

// A group destroyed mid-run is created again where this consumer last saw
// it, not at --start $: the entries added meanwhile are processed.
func TestARecreatedGroupSkipsNothing(t *testing.T) {
	both(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := context.Background()
		stream, group := names(t)
		add(t, rdb, stream, "before", "start") // skipped by $, as asked
		rec := newRecorder()
		log := &redistest.Buffer{}
		r := start(t, rdb, rec, engine.Options{Stream: stream, Group: group, Consumer: "c", Start: "$", Block: 50 * time.Millisecond,
			Logger: newLogger(t, log)})
		redistest.WaitFor(t, 5*time.Second, "the group created", func() bool {
			groups, _ := rdb.XInfoGroups(ctx, stream).Result()
			return len(groups) == 1
		})
		first := add(t, rdb, stream, "n", "1")
		redistest.WaitFor(t, 5*time.Second, "the first entry processed", func() bool { return r.c.Stats().Acked == 1 })
		// Destroy the group and add entries in one step, so they are there
		// before the consumer notices.
		pipe := rdb.TxPipeline()
		pipe.XGroupDestroy(ctx, stream, group)
		for i := range 5 {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []string{"n", fmt.Sprint(i + 2)}})
		}
		cmds, err := pipe.Exec(ctx)
		if err != nil {
			t.Fatal(err)
		}
		redistest.WaitFor(t, 5*time.Second, "the entries added meanwhile processed", func() bool { return r.c.Stats().Acked == 6 })
		r.shutdown(t)
		for _, c := range cmds[1:] {
			if id := c.(*redis.StringCmd).Val(); rec.get(id) == nil {
				t.Errorf("entry %s, added while the group was gone, never processed", id)
			}
		}
		if got := log.String(); !strings.Contains(got, "start="+first) || !strings.Contains(got, "the newest entry this consumer read") {
			t.Errorf("log does not say where the group was created again and why:\n%s", got)
		}
	})
}

// An emit refused for memory fails its entry, which is retried with its
// backoff (not left for claim-idle); once Redis has room again the entry
// is processed.
func TestAnEmitRefusedForMemoryIsRetried(t *testing.T) {
	s := redistest.Must(t)
	rdb := s.Client()
	defer rdb.Close()
	ctx := context.Background()
	stream, group := "s", "g"
	add(t, rdb, stream, "k", "v")
	if err := rdb.XGroupCreate(ctx, stream, group, "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	h := engine.HandlerFunc(func(_ context.Context, m *engine.Message) engine.Result {
		return engine.Result{Emits: []engine.Emit{{Stream: "out", Fields: []topix.Field{{Name: "from", Value: m.ID}}}}}
	})
	log := &redistest.Buffer{}
	r := start(t, rdb, h, engine.Options{Stream: stream, Group: group, Consumer: "c", Block: 50 * time.Millisecond,
		RetryBackoff: 100 * time.Millisecond, MaxAttempts: 100, ClaimIdle: time.Hour, Logger: newLogger(t, log)})
	redistest.WaitFor(t, 5*time.Second, "attempts failed for memory", func() bool { return r.c.Stats().Failed >= 2 })
	if err := rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "the entry processed", func() bool { return r.c.Stats().Acked == 1 })
	r.shutdown(t)
	if st := r.c.Stats(); st.Processed != 1 {
		t.Errorf("stats %+v; want the failed attempts counted as failed, one processed", st)
	}
	if n, _ := rdb.XLen(ctx, "out").Result(); n != 1 {
		t.Errorf("out has %d entries, want 1", n)
	}
	if got := log.String(); !strings.Contains(got, "OOM") || !strings.Contains(got, "retried") {
		t.Errorf("the log does not show the entry failed with Redis's OOM and retried:\n%s", got)
	}
}

// newLogger logs to w, which the test shows if it fails.
func newLogger(t *testing.T, w *redistest.Buffer) *slog.Logger {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the consumer's log:\n%s", w.String())
		}
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// aclClient returns a client of s that logs in as a new user with rules.
func aclClient(t *testing.T, s *redistest.Server, user string, rules ...string) *redis.Client {
	t.Helper()
	admin := s.Client()
	defer admin.Close()
	args := []any{"ACL", "SETUSER", user, "reset", "on", ">pw"}
	for _, r := range rules {
		args = append(args, r)
	}
	if err := admin.Do(context.Background(), args...).Err(); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr, Username: user, Password: "pw", Protocol: 2})
	t.Cleanup(func() { c.Close() })
	return c
}

// A command the ACL user may not run is not an outage: the consumer stops
// and Run says which command, on which key, needs what.
func TestAPermissionErrorStopsTheConsumer(t *testing.T) {
	s := redistest.Must(t)
	cases := []struct {
		name, rule, command string
	}{
		{"claim", "-xautoclaim", "XAUTOCLAIM"},
		{"ack", "-xack", "XACK"},
		{"read", "-xreadgroup", "XREADGROUP"},
		{"lease", "-xclaim", "XCLAIM"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rdb := aclClient(t, s, "u-"+tc.name, "~*", "+@all", tc.rule)
			stream := "s:" + tc.name
			add(t, rdb, stream, "k", "v")
			h := engine.HandlerFunc(func(ctx context.Context, m *engine.Message) engine.Result {
				if tc.name == "lease" {
					<-ctx.Done() // held long enough to be leased
				}
				return engine.Result{}
			})
			c, err := engine.New(rdb, h, engine.Options{Stream: stream, Group: "g", Consumer: "c", Block: 50 * time.Millisecond,
				ClaimIdle: 300 * time.Millisecond, ShutdownTimeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- c.Run(context.Background()) }()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("the consumer still runs 10s after Redis refused %s for good", tc.command)
			}
			var pe *engine.PermissionError
			if !errors.As(err, &pe) {
				t.Fatalf("Run = %v; want a PermissionError", err)
			}
			msg := err.Error()
			t.Log(msg)
			for _, want := range []string{tc.command, stream, "+" + strings.ToLower(tc.command)} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not name %q", msg, want)
				}
			}
		})
	}
}

// XGROUP CREATE is sent only when the group is missing: a user without
// that permission consumes a group made for it.
func TestAGroupIsCreatedOnlyWhenMissing(t *testing.T) {
	s := redistest.Must(t)
	admin := s.Client()
	defer admin.Close()
	ctx := context.Background()
	add(t, admin, "s", "k", "v")
	if err := admin.XGroupCreate(ctx, "s", "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	rdb := aclClient(t, s, "worker", "~*", "+@all", "-xgroup|create")
	r := start(t, rdb, newRecorder(), engine.Options{Stream: "s", Group: "g", Consumer: "c", Block: 50 * time.Millisecond})
	redistest.WaitFor(t, 5*time.Second, "the entry acked", func() bool { return r.c.Stats().Acked == 1 })
	if err := r.shutdown(t); err != nil {
		t.Fatal(err)
	}
	// And with the group missing, the refusal is one clear error.
	c, err := engine.New(rdb, newRecorder(), engine.Options{Stream: "other", Group: "g", Consumer: "c"})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Run(ctx)
	var pe *engine.PermissionError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "xgroup|create") {
		t.Errorf("Run on a missing group without XGROUP CREATE = %v; want a PermissionError naming +xgroup|create", err)
	}
}

// Through a slow link, big emits are flushed in parts that fit the link,
// each given the time its size needs: all are acked, each emit added once.
// (A single pipeline of all of them took longer than the write timeout,
// and was sent again for ever.)
func TestFlushesConvergeOverASlowLink(t *testing.T) {
	s := redistest.Must(t)
	admin := s.Client()
	defer admin.Close()
	ctx := context.Background()
	const n, size = 30, 100 << 10
	for i := range n {
		add(t, admin, "s", "i", fmt.Sprint(i))
	}
	proxy := redistest.MustProxy(t, s.Addr, 1<<20) // 1 MiB/s
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr, Protocol: 2, ReadTimeout: time.Second, WriteTimeout: time.Second})
	defer rdb.Close()
	big := strings.Repeat("x", size)
	h := engine.HandlerFunc(func(_ context.Context, m *engine.Message) engine.Result {
		return engine.Result{Emits: []engine.Emit{{Stream: "out", Fields: []topix.Field{{Name: "from", Value: m.ID}, {Name: "big", Value: big}}}}}
	})
	log := &redistest.Buffer{}
	r := start(t, rdb, h, engine.Options{Stream: "s", Group: "g", Consumer: "c", Block: 50 * time.Millisecond, Logger: newLogger(t, log)})
	redistest.WaitFor(t, 30*time.Second, "every entry acked", func() bool { return r.c.Stats().Acked == n })
	r.shutdown(t)
	got, err := admin.XRange(ctx, "out", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	from := map[string]int{}
	for _, e := range got {
		from[e.Values["from"].(string)]++
	}
	if len(got) != n || len(from) != n {
		t.Errorf("out has %d emits from %d entries; want %d, each once", len(got), len(from), n)
	}
	if st := r.c.Stats(); st.Resent != 0 {
		t.Errorf("stats %+v: emits were sent again", st)
	}
}

// The ACL the README gives for a consumer is enough: reads, retries (the
// attempt records), dead letters, acks and leaving the group all work.
func TestTheDocumentedACLIsEnough(t *testing.T) {
	s := redistest.Must(t)
	admin := s.Client()
	defer admin.Close()
	add(t, admin, "orders", "k", "ok")
	add(t, admin, "orders", "k", "bad")
	// The README's example, word for word.
	rdb := aclClient(t, s, "worker", "~orders", "~{orders}:*", "~orders:dead", "+@stream", "+@hash", "+set", "+del", "+expire", "+ping", "-xgroup|destroy")
	rec := newRecorder()
	rec.fail = func(m *engine.Message) error {
		if m.Fields[0].Value == "bad" {
			return errors.New("bad entry")
		}
		return nil
	}
	log := &redistest.Buffer{}
	r := start(t, rdb, rec, engine.Options{Stream: "orders", Group: "billing", Consumer: "c", Block: 50 * time.Millisecond,
		MaxAttempts: 2, RetryBackoff: 20 * time.Millisecond, Logger: newLogger(t, log)})
	redistest.WaitFor(t, 5*time.Second, "one processed, one dead-lettered", func() bool {
		st := r.c.Stats()
		return st.Processed == 1 && st.DeadLettered == 1 && st.Acked == 2
	})
	if err := r.shutdown(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if strings.Contains(log.String(), "NOPERM") {
		t.Errorf("a permission was refused:\n%s", log.String())
	}
	cs, _ := admin.XInfoConsumers(context.Background(), "orders", "billing").Result()
	if len(cs) != 0 {
		t.Errorf("consumers left: %+v", cs)
	}
}
