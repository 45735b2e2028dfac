package engine_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/topix-dev/topix"
	"github.com/topix-dev/topix/engine"
	"github.com/topix-dev/topix/internal/redistest"
)

var srv *redistest.Server

func TestMain(m *testing.M) { os.Exit(redistest.Main(m, &srv)) }

// backend is a Redis to run a test against.
type backend struct {
	name string
	new  func(t *testing.T) redis.UniversalClient
}

var realRedis = backend{"redis-server", func(t *testing.T) redis.UniversalClient {
	c := srv.Client()
	t.Cleanup(func() { c.Close() })
	return c
}}

var embedded = backend{"miniredis", func(t *testing.T) redis.UniversalClient {
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr(), Protocol: 2})
	t.Cleanup(func() { c.Close() })
	return c
}}

// both runs f against a real redis-server and the embedded server.
func both(t *testing.T, f func(t *testing.T, rdb redis.UniversalClient)) {
	for _, b := range []backend{realRedis, embedded} {
		t.Run(b.name, func(t *testing.T) { f(t, b.new(t)) })
	}
}

// names returns a stream and group name unique to the test.
func names(t *testing.T) (stream, group string) {
	return "s:" + t.Name(), "g"
}

// running is a consumer started in the background.
type running struct {
	c    *engine.Consumer
	stop context.CancelFunc
	done chan error
}

func start(t *testing.T, rdb redis.UniversalClient, rt engine.Runtime, opts engine.Options) *running {
	t.Helper()
	c, err := engine.New(rdb, rt, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

// shutdown stops the consumer gracefully and returns Run's error.
func (r *running) shutdown(t *testing.T) error {
	t.Helper()
	r.stop()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("consumer did not stop within 20s")
		return nil
	}
}

func add(t *testing.T, rdb redis.UniversalClient, stream string, fields ...string) string {
	t.Helper()
	id, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: stream, Values: fields}).Result()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func groupInfo(t *testing.T, rdb redis.UniversalClient, stream, group string) redis.XInfoGroup {
	t.Helper()
	groups, err := rdb.XInfoGroups(context.Background(), stream).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		if g.Name == group {
			return g
		}
	}
	t.Fatalf("group %q not found", group)
	return redis.XInfoGroup{}
}

// recorder is a handler that remembers what it saw.
type recorder struct {
	mu    sync.Mutex
	seen  map[string]*engine.Message
	calls atomic.Int64
	fail  func(*engine.Message) error
}

func newRecorder() *recorder { return &recorder{seen: map[string]*engine.Message{}} }

func (r *recorder) Handle(_ context.Context, msg *engine.Message) engine.Result {
	r.calls.Add(1)
	cp := *msg
	cp.Fields = append([]topix.Field(nil), msg.Fields...)
	r.mu.Lock()
	r.seen[msg.ID] = &cp
	r.mu.Unlock()
	if r.fail != nil {
		if err := r.fail(msg); err != nil {
			return engine.Result{Err: err}
		}
	}
	return engine.Result{}
}

func (r *recorder) NewHandler(int) (engine.Handler, error) { return r, nil }

func (r *recorder) get(id string) *engine.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[id]
}

func TestConsumesEveryEntryAndAcksIt(t *testing.T) {
	both(t, func(t *testing.T, rdb redis.UniversalClient) {
		stream, group := names(t)
		const n = 1000
		ids := make([]string, n)
		for i := range ids {
			// Emitted before the consumer starts: the default start "0" must see them.
			ids[i] = add(t, rdb, stream, "n", strconv.Itoa(i), "bin", "\x00\xff\xfe"+strconv.Itoa(i), "z", "last")
		}
		rec := newRecorder()
		r := start(t, rdb, rec, engine.Options{Stream: stream, Group: group, Consumer: "c1", Concurrency: 4, Batch: 50, Block: 50 * time.Millisecond})
		redistest.WaitFor(t, 10*time.Second, "all entries acked", func() bool { return r.c.Stats().Acked == n })
		if err := r.shutdown(t); err != nil {
			t.Fatal(err)
		}
		for i, id := range ids {
			m := rec.get(id)
			if m == nil {
				t.Fatalf("entry %d (%s) never handled", i, id)
			}
			want := []topix.Field{{Name: "n", Value: strconv.Itoa(i)}, {Name: "bin", Value: "\x00\xff\xfe" + strconv.Itoa(i)}, {Name: "z", Value: "last"}}
			if fmt.Sprint(m.Fields) != fmt.Sprint(want) {
				t.Fatalf("entry %d fields = %q, want %q", i, m.Fields, want)
			}
			if m.Attempt != 1 || m.Stream != stream || m.Group != group || m.Consumer != "c1" {
				t.Fatalf("entry %d metadata = %+v", i, m)
			}
		}
		if got := rec.calls.Load(); got != n {
			t.Errorf("handler called %d times, want %d", got, n)
		}
		g := groupInfo(t, rdb, stream, group)
		if g.Pending != 0 {
			t.Errorf("pending = %d, want 0", g.Pending)
		}
		consumers, err := rdb.XInfoConsumers(context.Background(), stream, group).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(consumers) != 0 {
			t.Errorf("consumers left in the group: %+v", consumers)
		}
	})
}

func TestFailedEntriesStayPendingOthersAcked(t *testing.T) {
	both(t, func(t *testing.T, rdb redis.UniversalClient) {
		stream, group := names(t)
		failing := map[string]bool{}
		for i := range 200 {
			fail := "0"
			if i%7 == 0 {
				fail = "1"
			}
			id := add(t, rdb, stream, "i", strconv.Itoa(i), "fail", fail)
			if fail == "1" {
				failing[id] = true
			}
		}
		rec := newRecorder()
		rec.fail = func(m *engine.Message) error {
			if m.Fields[1].Value == "1" {
				return errors.New("asked to fail")
			}
			return nil
		}
		r := start(t, rdb, rec, engine.Options{Stream: stream, Group: group, Consumer: "c1", Concurrency: 3, Block: 50 * time.Millisecond, RetryBackoff: time.Hour})
		redistest.WaitFor(t, 10*time.Second, "all entries handled", func() bool { return rec.calls.Load() == 200 })
		if err := r.shutdown(t); err != nil {
			t.Fatal(err)
		}
		st := r.c.Stats()
		if st.Acked != int64(200-len(failing)) || st.Failed != int64(len(failing)) {
			t.Errorf("stats = %+v, want %d acked and %d failed", st, 200-len(failing), len(failing))
		}
		pend, err := rdb.XPendingExt(context.Background(), &redis.XPendingExtArgs{Stream: stream, Group: group, Start: "-", End: "+", Count: 1000}).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(pend) != len(failing) {
			t.Fatalf("%d entries pending, want %d", len(pend), len(failing))
		}
		for _, p := range pend {
			if !failing[p.ID] {
				t.Errorf("entry %s is pending but did not fail", p.ID)
			}
		}
		// The consumer owns pending entries, so it must still be in the group.
		consumers, _ := rdb.XInfoConsumers(context.Background(), stream, group).Result()
		if len(consumers) != 1 || consumers[0].Name != "c1" {
			t.Errorf("consumers = %+v, want c1 kept", consumers)
		}
	})
}

func TestOwnPendingEntriesComeFirst(t *testing.T) {
	both(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := context.Background()
		stream, group := names(t)
		old1 := add(t, rdb, stream, "k", "old1")
		old2 := add(t, rdb, stream, "k", "old2")
		if err := rdb.XGroupCreate(ctx, stream, group, "0").Err(); err != nil {
			t.Fatal(err)
		}
		// A previous run of c1 read both and died before acking, while
		// it was processing old1 (its record says a call started); it had
		// not started old2.
		if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "c1", Streams: []string{stream, ">"}, Count: 10}).Err(); err != nil {
			t.Fatal(err)
		}
		if err := rdb.HSet(ctx, engine.AttemptsKey(stream, group), old1, "1:0").Err(); err != nil {
			t.Fatal(err)
		}
		fresh := add(t, rdb, stream, "k", "new")

		var mu sync.Mutex
		var order []string
		attempts := map[string]int64{}
		h := engine.HandlerFunc(func(_ context.Context, m *engine.Message) engine.Result {
			mu.Lock()
			defer mu.Unlock()
			order = append(order, m.ID)
			attempts[m.ID] = m.Attempt
			return engine.Result{}
		})
		r := start(t, rdb, h, engine.Options{Stream: stream, Group: group, Consumer: "c1", Concurrency: 1, Block: 50 * time.Millisecond})
		redistest.WaitFor(t, 10*time.Second, "three entries acked", func() bool { return r.c.Stats().Acked == 3 })
		if err := r.shutdown(t); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(order) != fmt.Sprint([]string{old1, old2, fresh}) {
			t.Errorf("order = %v, want %v", order, []string{old1, old2, fresh})
		}
		// Only the entry that was running is charged an attempt.
		if attempts[old1] != 2 || attempts[old2] != 1 || attempts[fresh] != 1 {
			t.Errorf("attempts = %v, want 2, 1, 1", attempts)
		}
		if n, _ := rdb.Exists(ctx, engine.AttemptsKey(stream, group)).Result(); n != 0 {
			t.Errorf("the attempt records are still there after every entry was acked")
		}
	})
}

func TestStartDollarSkipsEarlierEntries(t *testing.T) {
	rdb := realRedis.new(t)
	stream, group := names(t)
	add(t, rdb, stream, "k", "before")
	rec := newRecorder()
	r := start(t, rdb, rec, engine.Options{Stream: stream, Group: group, Consumer: "c1", Start: "$", Block: 50 * time.Millisecond})
	redistest.WaitFor(t, 5*time.Second, "group created", func() bool {
		g, _ := rdb.XInfoGroups(context.Background(), stream).Result()
		return len(g) == 1
	})
	after := add(t, rdb, stream, "k", "after")
	redistest.WaitFor(t, 5*time.Second, "new entry acked", func() bool { return r.c.Stats().Acked == 1 })
	r.shutdown(t)
	if rec.calls.Load() != 1 || rec.get(after) == nil {
		t.Errorf("handled %d entries; want only %s", rec.calls.Load(), after)
	}
}

func TestEmitsAreAddedBeforeTheAck(t *testing.T) {
	both(t, func(t *testing.T, rdb redis.UniversalClient) {
		ctx := context.Background()
		stream, group := names(t)
		out := stream + ":out"
		bad := stream + ":bad"
		if err := rdb.Set(ctx, bad, "a string, not a stream", 0).Err(); err != nil {
			t.Fatal(err)
		}
		good := add(t, rdb, stream, "to", out)
		broken := add(t, rdb, stream, "to", bad)
		failing := add(t, rdb, stream, "to", out, "fail", "yes")
		h := engine.HandlerFunc(func(_ context.Context, m *engine.Message) engine.Result {
			res := engine.Result{Emits: []engine.Emit{{Stream: m.Fields[0].Value, Fields: []topix.Field{{Name: "from", Value: m.ID}}}}}
			if len(m.Fields) > 1 {
				res.Err = errors.New("failed after emitting")
			}
			return res
		})
		r := start(t, rdb, h, engine.Options{Stream: stream, Group: group, Consumer: "c1", Block: 50 * time.Millisecond,
			MaxAttempts: 2, RetryBackoff: 10 * time.Millisecond})
		// The emit refused by Redis fails its entry as a failed call does:
		// retried, then dead-lettered with Redis's error.
		redistest.WaitFor(t, 10*time.Second, "entries handled", func() bool {
			st := r.c.Stats()
			return st.Processed == 1 && st.Failed == 4 && st.DeadLettered == 2 && st.Acked == 3
		})
		r.shutdown(t)
		got, err := rdb.XRange(ctx, out, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Values["from"] != good {
			t.Errorf("emitted = %+v, want one entry from %s", got, good)
		}
		dead, err := rdb.XRange(ctx, stream+":dead", "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		reasons := map[string]string{}
		for _, d := range dead {
			reasons[d.Values["topix.id"].(string)] = d.Values["topix.error"].(string)
		}
		if r := reasons[broken]; !strings.Contains(r, "WRONGTYPE") || !strings.Contains(r, bad) {
			t.Errorf("dead letter of the entry whose emit was refused says %q; want Redis's WRONGTYPE and the stream %s", r, bad)
		}
		if r := reasons[failing]; r != "failed after emitting" {
			t.Errorf("dead letter of the failing entry says %q", r)
		}
		if g := groupInfo(t, rdb, stream, group); g.Pending != 0 {
			t.Errorf("pending = %d, want 0", g.Pending)
		}
	})
}

func TestAnInvalidEmitSendsNoneOfTheEntrysEmits(t *testing.T) {
	rdb := realRedis.new(t)
	stream, group := names(t)
	id := add(t, rdb, stream, "k", "v")
	out := stream + ":out"
	h := engine.HandlerFunc(func(_ context.Context, m *engine.Message) engine.Result {
		return engine.Result{Emits: []engine.Emit{
			{Stream: out, Fields: []topix.Field{{Name: "ok", Value: "1"}}},
			{Stream: "", Fields: []topix.Field{{Name: "bad", Value: "1"}}}, // no runtime hands this
		}}
	})
	r := start(t, rdb, h, engine.Options{Stream: stream, Group: group, Consumer: "c1", Block: 50 * time.Millisecond,
		MaxAttempts: 2, RetryBackoff: 10 * time.Millisecond})
	redistest.WaitFor(t, 5*time.Second, "the entry dead-lettered", func() bool { return r.c.Stats().DeadLettered == 1 })
	if err := r.shutdown(t); err != nil {
		t.Fatal(err)
	}
	if st := r.c.Stats(); st.Processed != 0 || st.Failed != 2 {
		t.Errorf("stats = %+v; want 2 failed attempts, none processed", st)
	}
	if n, _ := rdb.XLen(context.Background(), out).Result(); n != 0 {
		t.Errorf("%d entries added to %s; want none, since the entry's other emit is invalid", n, out)
	}
	dead, _ := rdb.XRange(context.Background(), stream+":dead", "-", "+").Result()
	if len(dead) != 1 || dead[0].Values["topix.id"] != id || !strings.Contains(dead[0].Values["topix.error"].(string), "invalid emit") {
		t.Errorf("dead letters %+v, want %s with the reason", dead, id)
	}
}
