package engine_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix/engine"
	"github.com/topix-dev/topix/internal/redistest"
)

// deliverTo reads up to n new entries as consumer name without acking
// them, as a consumer that then dies would.
func deliverTo(t *testing.T, rdb redis.UniversalClient, stream, group, name string, n int64) []string {
	t.Helper()
	ctx := context.Background()
	rdb.XGroupCreateMkStream(ctx, stream, group, "0")
	res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: name, Streams: []string{stream, ">"}, Count: n, Block: -1}).Result()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range res[0].Messages {
		ids = append(ids, m.ID)
	}
	return ids
}

func pendingIDs(t *testing.T, rdb redis.UniversalClient, stream, group string) []string {
	t.Helper()
	p, err := rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{Stream: stream, Group: group, Start: "-", End: "+", Count: 10000}).Result()
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{}
	for _, e := range p {
		ids = append(ids, e.ID)
	}
	return ids
}

func TestReclaimsEntriesOfADeadConsumer(t *testing.T) {
	rdb := realRedis.new(t)
	stream, group := names(t)
	for i := range 50 {
		add(t, rdb, stream, "i", strconv.Itoa(i))
	}
	dead := deliverTo(t, rdb, stream, group, "dead", 30)
	gone := dead[0]
	rdb.XDel(context.Background(), stream, gone) // trimmed while pending

	rec := newRecorder()
	r := start(t, rdb, rec, engine.Options{Stream: stream, Group: group, Consumer: "alive", Block: 50 * time.Millisecond, ClaimIdle: 200 * time.Millisecond})
	redistest.WaitFor(t, 10*time.Second, "every entry acked or removed", func() bool { return len(pendingIDs(t, rdb, stream, group)) == 0 && rec.calls.Load() == 49 })
	r.shutdown(t)
	if st := r.c.Stats(); st.Claimed != 29 {
		t.Errorf("claimed %d entries, want the dead consumer's 29 that still exist", st.Claimed)
	}
	for _, id := range dead[1:] {
		// Delivered twice, but never started before: not charged.
		if m := rec.get(id); m == nil || m.Attempt != 1 {
			t.Errorf("entry %s: %+v, want it handled as its first attempt", id, m)
		}
	}
	if rec.get(gone) != nil {
		t.Error("the deleted entry was handled")
	}
}

func TestALongCallKeepsItsEntry(t *testing.T) {
	rdb := realRedis.new(t)
	stream, group := names(t)
	id := add(t, rdb, stream, "k", "slow")
	var calls atomic.Int64
	started := make(chan struct{})
	release := make(chan struct{})
	slow := engine.HandlerFunc(func(ctx context.Context, m *engine.Message) engine.Result {
		if calls.Add(1) == 1 {
			close(started)
			<-release
		}
		return engine.Result{}
	})
	// The claim idle time leaves room for a loaded machine (the lease is
	// renewed every third of it).
	opts := engine.Options{Stream: stream, Group: group, Block: 50 * time.Millisecond, ClaimIdle: 600 * time.Millisecond}
	opts.Consumer = "a"
	a := start(t, rdb, slow, opts)
	<-started
	opts.Consumer = "b"
	b := start(t, rdb, slow, opts)
	// Five claim periods pass while the call runs: b must not take the entry.
	deadline := time.Now().Add(5 * opts.ClaimIdle)
	redistest.WaitFor(t, 10*time.Second, "five claim periods", func() bool { return time.Now().After(deadline) })
	close(release)
	redistest.WaitFor(t, 5*time.Second, "the ack", func() bool { return a.c.Stats().Acked == 1 })
	a.shutdown(t)
	b.shutdown(t)
	if calls.Load() != 1 || b.c.Stats().Claimed != 0 {
		t.Errorf("entry %s handled %d times, b claimed %d; want once, by a", id, calls.Load(), b.c.Stats().Claimed)
	}
}

func TestPoisonEntriesGoToTheDeadLetterStream(t *testing.T) {
	rdb := realRedis.new(t)
	ctx := context.Background()
	stream, group := names(t)
	poison := map[string]bool{}
	for i := range 40 {
		bad := i%8 == 3
		id := add(t, rdb, stream, "i", strconv.Itoa(i), "bad", strconv.FormatBool(bad))
		poison[id] = bad
	}
	var mu sync.Mutex
	calls := map[string]int{}
	h := engine.HandlerFunc(func(_ context.Context, m *engine.Message) engine.Result {
		mu.Lock()
		calls[m.ID]++
		mu.Unlock()
		if m.Fields[1].Value == "true" {
			return engine.Result{Err: fmt.Errorf("bad entry %s", m.Fields[0].Value)}
		}
		return engine.Result{}
	})
	r := start(t, rdb, h, engine.Options{Stream: stream, Group: group, Consumer: "c", Concurrency: 2, Block: 50 * time.Millisecond,
		MaxAttempts: 3, RetryBackoff: 10 * time.Millisecond})
	redistest.WaitFor(t, 10*time.Second, "5 dead letters", func() bool { return r.c.Stats().DeadLettered == 5 })
	r.shutdown(t)

	dead, err := rdb.XRange(ctx, stream+":dead", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 5 {
		t.Fatalf("%d dead letters, want 5", len(dead))
	}
	for _, d := range dead {
		id, _ := d.Values["topix.id"].(string)
		if !poison[id] {
			t.Errorf("dead letter for %s, which is not poison", id)
		}
		want := map[string]string{"topix.attempts": "3", "topix.stream": stream, "topix.group": group, "topix.consumer": "c", "bad": "true"}
		for k, v := range want {
			if d.Values[k] != v {
				t.Errorf("dead letter of %s: %s = %v, want %q", id, k, d.Values[k], v)
			}
		}
		if d.Values["topix.error"] != "bad entry "+d.Values["i"].(string) || d.Values["topix.time"] == nil {
			t.Errorf("dead letter of %s: error %v, time %v", id, d.Values["topix.error"], d.Values["topix.time"])
		}
		if calls[id] != 3 {
			t.Errorf("poison entry %s called %d times, want 3", id, calls[id])
		}
	}
	for id, bad := range poison {
		if !bad && calls[id] != 1 {
			t.Errorf("good entry %s called %d times, want 1", id, calls[id])
		}
	}
	if p := pendingIDs(t, rdb, stream, group); len(p) != 0 {
		t.Errorf("pending %v, want none", p)
	}
}

func TestErrDeadLetterSkipsTheRetries(t *testing.T) {
	rdb := realRedis.new(t)
	stream, group := names(t)
	id := add(t, rdb, stream, "k", "v")
	var calls atomic.Int64
	h := engine.HandlerFunc(func(_ context.Context, m *engine.Message) engine.Result {
		calls.Add(1)
		return engine.Result{Err: fmt.Errorf("no customer: %w", engine.ErrDeadLetter), Emits: []engine.Emit{{Stream: "never"}}}
	})
	r := start(t, rdb, h, engine.Options{Stream: stream, Group: group, Consumer: "c", Block: 50 * time.Millisecond, DeadLetter: "dlq:" + stream})
	redistest.WaitFor(t, 5*time.Second, "the dead letter", func() bool { return r.c.Stats().DeadLettered == 1 })
	r.shutdown(t)
	dead, _ := rdb.XRange(context.Background(), "dlq:"+stream, "-", "+").Result()
	if calls.Load() != 1 || len(dead) != 1 || dead[0].Values["topix.id"] != id || dead[0].Values["topix.attempts"] != "1" {
		t.Errorf("calls %d, dead letters %+v", calls.Load(), dead)
	}
	if n, _ := rdb.Exists(context.Background(), "never").Result(); n != 0 {
		t.Error("a rejected call's emit was added")
	}
}

func TestACrashCostsOnlyTheEntryThatWasRunning(t *testing.T) {
	rdb := realRedis.new(t)
	ctx := context.Background()
	stream, group := names(t)
	var ids []string
	for i := range 201 {
		ids = append(ids, add(t, rdb, stream, "i", strconv.Itoa(i)))
	}
	poison := ids[100]

	// The poison entry's call runs until its consumer stops; a stop cut
	// short by the shutdown timeout is what a crash looks like from Redis.
	var poisonCalls atomic.Int64
	var processed sync.Map
	h := engine.HandlerFunc(func(ctx context.Context, m *engine.Message) engine.Result {
		if m.ID == poison {
			poisonCalls.Add(1)
			<-ctx.Done()
			return engine.Result{Err: ctx.Err()}
		}
		processed.Store(m.ID, m.Attempt)
		return engine.Result{}
	})
	opts := engine.Options{Stream: stream, Group: group, Consumer: "c", Concurrency: 1, Batch: 250,
		Block: 50 * time.Millisecond, ClaimIdle: time.Hour, MaxAttempts: 3, ShutdownTimeout: 50 * time.Millisecond}
	key := engine.AttemptsKey(stream, group)
	for round := 1; round <= 3; round++ {
		r := start(t, rdb, h, opts)
		want := fmt.Sprintf("%d:0", round)
		redistest.WaitFor(t, 10*time.Second, "the poison entry running with its record "+want, func() bool {
			v, _ := rdb.HGet(ctx, key, poison).Result()
			return poisonCalls.Load() == int64(round) && v == want
		})
		r.shutdown(t)
	}
	// The fourth start: the poison entry is dead-lettered without a call,
	// and its 200 neighbours, delivered up to four times, are processed as
	// first attempts.
	r := start(t, rdb, h, opts)
	redistest.WaitFor(t, 10*time.Second, "everything acked", func() bool { return len(pendingIDs(t, rdb, stream, group)) == 0 })
	r.shutdown(t)
	if n := poisonCalls.Load(); n != 3 {
		t.Errorf("the poison entry was called %d times, want 3", n)
	}
	for _, id := range ids {
		if id == poison {
			continue
		}
		attempt, ok := processed.Load(id)
		if !ok || attempt.(int64) != 1 {
			t.Errorf("neighbour %s: processed %v with attempt %v; want processed on its first attempt", id, ok, attempt)
		}
	}
	dead, err := rdb.XRange(ctx, stream+":dead", "-", "+").Result()
	if err != nil || len(dead) != 1 {
		t.Fatalf("dead letters = %v, %v; want only the poison entry", dead, err)
	}
	if dead[0].Values["topix.id"] != poison ||
		dead[0].Values["topix.error"] != "the consumer stopped while processing it 3 times, in 3 attempts (it died, was killed, or a shutdown cut the call short)" ||
		dead[0].Values["topix.attempts"] != "3" {
		t.Errorf("dead letter = %v", dead[0].Values)
	}
	if n, _ := rdb.Exists(ctx, key).Result(); n != 0 {
		t.Errorf("attempt records left after everything was acked: %v", rdb.HGetAll(ctx, key).Val())
	}
}

func TestAFailureBeforeAStopIsStillCounted(t *testing.T) {
	rdb := realRedis.new(t)
	ctx := context.Background()
	stream, group := names(t)
	id := add(t, rdb, stream, "k", "v")
	var attempts []int64
	var mu sync.Mutex
	h := engine.HandlerFunc(func(_ context.Context, m *engine.Message) engine.Result {
		mu.Lock()
		attempts = append(attempts, m.Attempt)
		mu.Unlock()
		return engine.Result{Err: errors.New("always")}
	})
	// Each run fails the entry once and stops before its retry (the
	// backoff is an hour): the failures add up across the runs.
	opts := engine.Options{Stream: stream, Group: group, Consumer: "c", Block: 50 * time.Millisecond, ClaimIdle: time.Hour,
		MaxAttempts: 3, RetryBackoff: time.Hour}
	key := engine.AttemptsKey(stream, group)
	for round := 1; round <= 3; round++ {
		r := start(t, rdb, h, opts)
		redistest.WaitFor(t, 10*time.Second, "the failure recorded or dead-lettered", func() bool {
			v, _ := rdb.HGet(ctx, key, id).Result()
			return v == fmt.Sprintf("%d:%d", round, round) || r.c.Stats().DeadLettered == 1
		})
		r.shutdown(t)
	}
	if fmt.Sprint(attempts) != "[1 2 3]" {
		t.Errorf("attempts = %v, want [1 2 3]", attempts)
	}
	dead, _ := rdb.XRange(ctx, stream+":dead", "-", "+").Result()
	if len(dead) != 1 || dead[0].Values["topix.error"] != "always" {
		t.Errorf("dead letters = %v; want the entry with its last error", dead)
	}
}

func TestSurvivesARedisRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := redistest.Start(dir, "--appendonly", "yes", "--appendfsync", "always")
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr, Protocol: 2})
	defer rdb.Close()
	stream, group := "s", "g"
	before := runtime.NumGoroutine()

	rec := newRecorder()
	c, err := engine.New(rdb, rec, engine.Options{Stream: stream, Group: group, Consumer: "c", Block: 50 * time.Millisecond, ClaimIdle: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	for i := range 100 {
		add(t, rdb, stream, "i", strconv.Itoa(i))
	}
	redistest.WaitFor(t, 10*time.Second, "100 acked", func() bool { return c.Stats().Acked == 100 })

	s.Stop() // kill -9
	port := s.Addr[len("127.0.0.1:"):]
	p, _ := strconv.Atoi(port)
	s2, err := redistest.StartOn(dir, p, "--appendonly", "yes", "--appendfsync", "always")
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Stop()
	for i := 100; i < 200; i++ {
		add(t, rdb, stream, "i", strconv.Itoa(i))
	}
	redistest.WaitFor(t, 20*time.Second, "200 acked", func() bool { return c.Stats().Acked >= 200 && len(pendingIDs(t, rdb, stream, group)) == 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := rec.calls.Load(); n < 200 {
		t.Errorf("%d calls, want at least 200", n)
	}
	rdb.Close()
	redistest.WaitFor(t, 5*time.Second, "the consumer's goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

func TestRecreatesAVanishedGroup(t *testing.T) {
	rdb := realRedis.new(t)
	ctx := context.Background()
	stream, group := names(t)
	rec := newRecorder()
	r := start(t, rdb, rec, engine.Options{Stream: stream, Group: group, Consumer: "c", Block: 50 * time.Millisecond, ClaimIdle: 100 * time.Millisecond})
	add(t, rdb, stream, "n", "1")
	redistest.WaitFor(t, 5*time.Second, "the first entry", func() bool { return r.c.Stats().Acked == 1 })
	// What a restart without persistence, or FLUSHALL, does to the group.
	if err := rdb.XGroupDestroy(ctx, stream, group).Err(); err != nil {
		t.Fatal(err)
	}
	rdb.Del(ctx, stream)
	redistest.WaitFor(t, 5*time.Second, "the group created again", func() bool {
		g, _ := rdb.XInfoGroups(ctx, stream).Result()
		return len(g) == 1
	})
	id := add(t, rdb, stream, "n", "2")
	redistest.WaitFor(t, 5*time.Second, "the entry after the loss", func() bool { return rec.get(id) != nil && r.c.Stats().Acked == 2 })
	r.shutdown(t)
}

func TestEntriesQueuedBehindALongCallKeepTheirLease(t *testing.T) {
	rdb := realRedis.new(t)
	ctx := context.Background()
	stream, group := names(t)
	add(t, rdb, stream, "k", "slow")
	var mu sync.Mutex
	calls := map[string][]string{}
	started := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	handler := func(name string) engine.HandlerFunc {
		return func(ctx context.Context, m *engine.Message) engine.Result {
			mu.Lock()
			calls[m.ID] = append(calls[m.ID], name)
			mu.Unlock()
			if m.Fields[0].Value == "slow" {
				once.Do(func() { close(started) })
				<-release
			}
			return engine.Result{}
		}
	}
	// The claim idle time leaves room for a loaded machine (the lease is
	// renewed every third of it); the wait spans several of them.
	opts := engine.Options{Stream: stream, Group: group, Block: 50 * time.Millisecond, ClaimIdle: 600 * time.Millisecond, Concurrency: 1}
	opts.Consumer = "a"
	a := start(t, rdb, handler("a"), opts)
	<-started
	// A backlog arrives in one millisecond; a reads part of it and queues
	// it behind the long call.
	pipe := rdb.Pipeline()
	for i := range 150 {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []string{"i", strconv.Itoa(i)}})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "a to read some of the backlog", func() bool {
		p, _ := rdb.XPending(ctx, stream, group).Result()
		return p != nil && p.Count > 1
	})
	opts.Consumer = "b"
	b := start(t, rdb, handler("b"), opts)
	deadline := time.Now().Add(5 * opts.ClaimIdle)
	redistest.WaitFor(t, 10*time.Second, "five claim periods", func() bool { return time.Now().After(deadline) })
	close(release)
	redistest.WaitFor(t, 10*time.Second, "everything acked", func() bool {
		g, _ := rdb.XInfoGroups(ctx, stream).Result()
		return len(g) == 1 && g[0].Pending == 0 && g[0].EntriesRead == 151
	})
	a.shutdown(t)
	b.shutdown(t)
	for id, by := range calls {
		if len(by) != 1 {
			t.Errorf("entry %s handled by %v", id, by)
		}
	}
}

func TestReadsAreBoundedInBytes(t *testing.T) {
	rdb := realRedis.new(t)
	ctx := context.Background()
	stream, group := names(t)
	big := strings.Repeat("x", 2<<20)
	for i := range 30 {
		add(t, rdb, stream, "i", strconv.Itoa(i), "blob", big)
	}
	add(t, rdb, stream, "blob", strings.Repeat("y", 6<<20)) // bigger than the budget: read alone
	var maxHeld atomic.Int64
	var calls atomic.Int64
	h := engine.HandlerFunc(func(_ context.Context, m *engine.Message) engine.Result {
		calls.Add(1)
		// The entries this consumer holds: read, not yet acked.
		if p, err := rdb.XPending(ctx, stream, group).Result(); err == nil {
			for n := p.Consumers["c"]; n > maxHeld.Load(); {
				if maxHeld.CompareAndSwap(maxHeld.Load(), n) {
					break
				}
			}
		}
		return engine.Result{}
	})
	r := start(t, rdb, h, engine.Options{Stream: stream, Group: group, Consumer: "c", Concurrency: 1,
		Block: 50 * time.Millisecond, BatchBytes: 4 << 20})
	redistest.WaitFor(t, 20*time.Second, "all 31 entries processed", func() bool {
		return calls.Load() == 31 && len(pendingIDs(t, rdb, stream, group)) == 0
	})
	r.shutdown(t)
	// 4 MiB holds two of these entries; four reads may be in flight at
	// once, so a dozen is the most the consumer may hold, not the batch
	// of 100 that would have read all 30 (60 MiB) at once.
	if n := maxHeld.Load(); n > 12 {
		t.Errorf("the consumer held up to %d entries of 2 MiB with a 4 MiB budget", n)
	}
}
