package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix"
	"github.com/topix-dev/topix/engine"
	"github.com/topix-dev/topix/internal/redistest"
)

// counter is an Observer that adds up what it is told, by event and label.
type counter struct {
	mu     sync.Mutex
	counts map[string]int
}

func newCounter() *counter { return &counter{counts: map[string]int{}} }

func (c *counter) add(key string, n int) {
	c.mu.Lock()
	c.counts[key] += n
	c.mu.Unlock()
}

func (c *counter) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[key]
}

func (c *counter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int, len(c.counts))
	for k, v := range c.counts {
		m[k] = v
	}
	return m
}

func (c *counter) Received(s engine.Source, n int) { c.add("received:"+s.String(), n) }
func (c *counter) Calls(calls []engine.Call) {
	for _, call := range calls {
		c.add("call:"+call.Result.String(), 1)
		if call.Duration <= 0 || call.Age <= 0 {
			c.add("call:unmeasured", 1)
		}
	}
	c.add("chunks", 1)
}
func (c *counter) Acked(n int)   { c.add("acked", n) }
func (c *counter) Retried(n int) { c.add("retried", n) }
func (c *counter) DeadLettered(r engine.DeadReason, n int) {
	c.add("dead:"+r.String(), n)
}
func (c *counter) LeaseLost(n int)   { c.add("lease_lost", n) }
func (c *counter) Gone(n int)        { c.add("gone", n) }
func (c *counter) Emitted(n int)     { c.add("emitted", n) }
func (c *counter) EmitsFailed(n int) { c.add("emits_failed", n) }
func (c *counter) GroupRecreated()   { c.add("recreated", 1) }
func (c *counter) Suppressed(n int)  { c.add("suppressed", n) }

// limitErr is an error that says which limit stopped its call, as the
// Starlark runtime's do.
type limitErr struct{ kind engine.CallResult }

func (e limitErr) Error() string                 { return "stopped by a limit" }
func (e limitErr) CallResult() engine.CallResult { return e.kind }

// TestTheObserverIsToldEveryOutcome drains entries of each kind the
// Handler contract lists, and checks the counts against what happened.
func TestTheObserverIsToldEveryOutcome(t *testing.T) {
	both(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := context.Background()
		stream, group := names(t)
		out, bad := stream+":out", stream+":bad"
		if err := rdb.Set(ctx, bad, "a string, not a stream", 0).Err(); err != nil {
			t.Fatal(err)
		}
		kinds := map[string]int{"ok": 10, "fail": 2, "reject": 1, "timeout": 1, "wrongtype": 1}
		total := 0
		for kind, n := range kinds {
			for range n {
				add(t, rdb, stream, "kind", kind)
				total++
			}
		}
		h := engine.HandlerFunc(func(_ context.Context, m *engine.Message) engine.Result {
			switch m.Fields[0].Value {
			case "ok":
				return engine.Result{Emits: []engine.Emit{{Stream: out, Fields: []topix.Field{{Name: "from", Value: m.ID}}}}}
			case "fail":
				return engine.Result{Err: errors.New("failed")}
			case "reject":
				return engine.Result{Err: fmt.Errorf("no: %w", engine.ErrDeadLetter)}
			case "timeout":
				return engine.Result{Err: limitErr{engine.CallTimeout}}
			default: // wrongtype: the call succeeds, Redis refuses its emit
				return engine.Result{Emits: []engine.Emit{{Stream: bad, Fields: []topix.Field{{Name: "from", Value: m.ID}}}}}
			}
		})
		obs := newCounter()
		r := start(t, rdb, h, engine.Options{Stream: stream, Group: group, Consumer: "c1", Block: 50 * time.Millisecond,
			MaxAttempts: 2, RetryBackoff: 10 * time.Millisecond, Observer: obs, Concurrency: 2})
		redistest.WaitFor(t, 10*time.Second, "every entry acked", func() bool { return obs.get("acked") == total })
		if err := r.shutdown(t); err != nil {
			t.Fatal(err)
		}
		want := map[string]int{
			"received:new":     total,
			"received:retry":   4, // fail ×2, timeout, wrongtype: one retry each
			"call:ok":          10 + 2,
			"call:error":       4,
			"call:timeout":     2,
			"call:dead_letter": 1,
			"retried":          4,
			"dead:attempts":    4,
			"dead:rejected":    1,
			"acked":            total,
			"emitted":          10,
			"emits_failed":     2,
		}
		got := obs.snapshot()
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %d, want %d", k, got[k], v)
			}
		}
		for _, k := range []string{"call:unmeasured", "received:claimed", "received:own_pending", "gone", "lease_lost", "recreated", "dead:crashed"} {
			if got[k] != 0 {
				t.Errorf("%s = %d, want 0", k, got[k])
			}
		}
		if st := r.c.Stats(); int(st.Acked) != total || st.DeadLettered != 5 {
			t.Errorf("Stats = %+v; the observer and the stats disagree", st)
		}
	})
}

// TestTheObserverIsToldOfClaimsAndEntriesGone: entries a dead consumer
// owned are claimed; one whose data was deleted meanwhile is gone.
func TestTheObserverIsToldOfClaimsAndEntriesGone(t *testing.T) {
	rdb := realRedis.new(t) // the embedded server never reports deleted pending entries
	ctx := context.Background()
	stream, group := names(t)
	if _, err := engine.CreateGroup(ctx, rdb, stream, group, "0"); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 5 {
		ids = append(ids, add(t, rdb, stream, "i", fmt.Sprint(i)))
	}
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "dead", Streams: []string{stream, ">"}, Count: 5}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.XDel(ctx, stream, ids[2]).Err(); err != nil {
		t.Fatal(err)
	}
	obs := newCounter()
	r := start(t, rdb, engine.HandlerFunc(func(context.Context, *engine.Message) engine.Result { return engine.Result{} }),
		engine.Options{Stream: stream, Group: group, Consumer: "c1", Block: 50 * time.Millisecond, ClaimIdle: 30 * time.Millisecond, Observer: obs})
	redistest.WaitFor(t, 10*time.Second, "the dead consumer's entries claimed and acked", func() bool { return obs.get("acked") == 5 })
	if err := r.shutdown(t); err != nil {
		t.Fatal(err)
	}
	if got := obs.snapshot(); got["received:claimed"] != 4 || got["gone"] != 1 || got["call:ok"] != 4 || got["received:new"] != 0 {
		t.Errorf("counts = %v; want 4 claimed and called, 1 gone, none new", got)
	}
}

// TestStateSaysWhatTheConsumerDoes: its phase, the calls in flight and
// the entries waiting for a retry, and that its loops make progress.
func TestStateSaysWhatTheConsumerDoes(t *testing.T) {
	rdb := realRedis.new(t)
	stream, group := names(t)
	release := make(chan struct{})
	h := engine.HandlerFunc(func(ctx context.Context, m *engine.Message) engine.Result {
		if m.Fields[0].Value == "fail" {
			return engine.Result{Err: errors.New("failed")}
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return engine.Result{}
	})
	c, err := engine.New(rdb, h, engine.Options{Stream: stream, Group: group, Consumer: "c1", Block: 50 * time.Millisecond,
		Concurrency: 3, RetryBackoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if st := c.State(); st.Phase != engine.PhaseStarting || st.Workers != 3 || st.InFlight != 0 {
		t.Fatalf("before Run: %+v", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	add(t, rdb, stream, "k", "block")
	add(t, rdb, stream, "k", "block")
	add(t, rdb, stream, "k", "fail")
	redistest.WaitFor(t, 10*time.Second, "two calls in flight, one retry waiting", func() bool {
		st := c.State()
		return st.Phase == engine.PhaseRunning && st.InFlight == 2 && st.Waiting == 1
	})
	before := c.State().Progress
	redistest.WaitFor(t, 5*time.Second, "the reader to make progress while the calls run", func() bool {
		return c.State().Progress.After(before)
	})
	if st := c.State(); !st.RedisDown.IsZero() || st.Outages != 0 || st.NoGroup {
		t.Errorf("Redis works, yet %+v", st)
	}
	cancel()
	redistest.WaitFor(t, 5*time.Second, "draining", func() bool { return c.State().Phase == engine.PhaseDraining })
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil
	if st := c.State(); st.Phase != engine.PhaseStopped || st.InFlight != 0 {
		t.Errorf("after Run: %+v", st)
	}
}

// TestRecordsForStats: with Records, a consumer keeps its heartbeat, the
// minute's counts and its group's registry entry, on the stream's slot;
// a stop removes the heartbeat. Without, only the pruners' "1".
func TestRecordsForStats(t *testing.T) {
	rdb := realRedis.new(t)
	ctx := context.Background()
	stream, group := names(t)
	stream = "{" + stream + "}" // a hash tag: the records must share it
	for i := range 3 {
		add(t, rdb, stream, "i", fmt.Sprint(i))
	}
	r := start(t, rdb, engine.HandlerFunc(func(context.Context, *engine.Message) engine.Result { return engine.Result{} }),
		engine.Options{Stream: stream, Group: group, Consumer: "c1", Block: 50 * time.Millisecond, ClaimIdle: 300 * time.Millisecond,
			Records: true, Describe: func() engine.Presence {
				return engine.Presence{Version: "v9", Script: "app.star", ScriptHash: "abc"}
			}})
	key := engine.HeartbeatKey(stream, group, "c1")
	var hb engine.Heartbeat
	redistest.WaitFor(t, 10*time.Second, "a heartbeat after the entries were processed", func() bool {
		v, err := rdb.Get(ctx, key).Result()
		if err != nil || json.Unmarshal([]byte(v), &hb) != nil {
			return false
		}
		m, _ := rdb.HGetAll(ctx, engine.MinuteKey(stream, group, time.Now().Unix()/60)).Result()
		p, _ := rdb.HGetAll(ctx, engine.MinuteKey(stream, group, time.Now().Unix()/60-1)).Result()
		return m[engine.FieldProcessed] == "3" || p[engine.FieldProcessed] == "3"
	})
	if hb.Version != "v9" || hb.Script != "app.star" || hb.ScriptHash != "abc" || hb.Workers != 1 || hb.PID == 0 || hb.Host == "" || hb.TTL <= 0 {
		t.Errorf("heartbeat = %+v", hb)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 0 {
		t.Errorf("the heartbeat does not expire: PTTL %s", ttl)
	}
	for _, k := range []string{key, engine.GroupKey(stream, group), engine.MinuteKey(stream, group, 0)} {
		if slot, want := redistest.Slot(k), redistest.Slot(stream); slot != want {
			t.Errorf("%s is on slot %d, the stream on %d", k, slot, want)
		}
	}
	if dl := rdb.HGet(ctx, engine.GroupKey(stream, group), engine.FieldDeadLetter).Val(); dl != stream+":dead" {
		t.Errorf("group settings: dead letter %q", dl)
	}
	if _, err := rdb.ZScore(ctx, engine.RegistryKey, engine.RegistryMember(stream, group)).Result(); err != nil {
		t.Errorf("not in the registry: %v", err)
	}
	if err := r.shutdown(t); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, key).Val(); n != 0 {
		t.Error("the heartbeat outlived a graceful stop")
	}

	// Without records: the pruners' heartbeat only.
	other := stream + ":plain"
	add(t, rdb, other, "i", "0")
	r = start(t, rdb, engine.HandlerFunc(func(context.Context, *engine.Message) engine.Result { return engine.Result{} }),
		engine.Options{Stream: other, Group: group, Consumer: "c1", Block: 50 * time.Millisecond})
	redistest.WaitFor(t, 5*time.Second, "the entry acked", func() bool { return r.c.Stats().Acked == 1 })
	if v := rdb.Get(ctx, engine.HeartbeatKey(other, group, "c1")).Val(); v != "1" {
		t.Errorf("heartbeat without records = %q, want 1", v)
	}
	if _, err := rdb.ZScore(ctx, engine.RegistryKey, engine.RegistryMember(other, group)).Result(); err != redis.Nil {
		t.Errorf("registered without records: %v", err)
	}
	if err := r.shutdown(t); err != nil {
		t.Fatal(err)
	}
}

// TestRecordsCarryTheLag: each report puts the group's lag, as Redis
// counts it, in the minute's record: entries waiting while the handler is
// stuck, none once it drained.
func TestRecordsCarryTheLag(t *testing.T) {
	rdb := realRedis.new(t)
	ctx := context.Background()
	stream, group := names(t)
	for i := range 50 {
		add(t, rdb, stream, "i", fmt.Sprint(i))
	}
	release := make(chan struct{})
	r := start(t, rdb, engine.HandlerFunc(func(ctx context.Context, _ *engine.Message) engine.Result {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return engine.Result{}
	}), engine.Options{Stream: stream, Group: group, Consumer: "c1", Batch: 1, Block: 50 * time.Millisecond,
		ClaimIdle: 300 * time.Millisecond, Records: true})
	lag := func() int64 {
		for _, m := range []int64{0, -1} {
			v, err := rdb.HGet(ctx, engine.MinuteKey(stream, group, time.Now().Unix()/60+m), engine.FieldLag).Int64()
			if err == nil {
				return v
			}
		}
		return -1
	}
	redistest.WaitFor(t, 10*time.Second, "a report of the entries waiting", func() bool { return lag() > 0 })
	if n := lag(); n >= 50 {
		t.Errorf("lag %d with at least one entry read", n)
	}
	close(release)
	redistest.WaitFor(t, 10*time.Second, "a report of lag 0 after the drain", func() bool { return lag() == 0 && r.c.Stats().Acked == 50 })
}

// freezeReports makes the stats reports' commands hang as on a Redis that
// stopped answering: until their deadline, or 5s without one (about a
// client's read timeout). As go-redis does, it honours a context's
// deadline (the connection's), not its cancellation.
type freezeReports struct{ frozen chan struct{} }

func (f *freezeReports) DialHook(next redis.DialHook) redis.DialHook { return next }

func (f *freezeReports) hang(ctx context.Context) error {
	select {
	case f.frozen <- struct{}{}:
	default:
	}
	wait := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(d))
	}
	time.Sleep(wait) // the frozen server's silence, not synchronisation
	return errors.New("i/o timeout")
}

func (f *freezeReports) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "xinfo" {
			return f.hang(ctx)
		}
		return next(ctx, cmd)
	}
}

func (f *freezeReports) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if c.Name() == "set" {
				return f.hang(ctx)
			}
		}
		return next(ctx, cmds)
	}
}

// TestAStopIsNotHeldByTheFirstReport: Redis freezing while a consumer
// starts (learning the group's position, writing its first heartbeat:
// commands sent before a stop has a deadline) must not stretch a stop
// beyond its timeout by the client's read timeout (fault scenario w saw 7s
// under --shutdown-timeout 2s).
func TestAStopIsNotHeldByTheFirstReport(t *testing.T) {
	rdb := srv.Client()
	defer rdb.Close()
	f := &freezeReports{frozen: make(chan struct{}, 1)}
	rdb.AddHook(f)
	stream, group := names(t)
	add(t, rdb, stream, "i", "1")
	c, err := engine.New(rdb, engine.HandlerFunc(func(context.Context, *engine.Message) engine.Result { return engine.Result{} }),
		engine.Options{Stream: stream, Group: group, Consumer: "c1", Block: 50 * time.Millisecond, ShutdownTimeout: 200 * time.Millisecond, Records: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	<-f.frozen // the first report hangs
	stop()
	start := time.Now()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the stop took %s under a 200ms shutdown timeout", took)
	}
}
