package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix"
	"github.com/topix-dev/topix/engine"
	"github.com/topix-dev/topix/internal/redistest"
)

// emitter emits, for each entry, one entry to each of its streams, with
// the entry's id; before returning from the call of an entry whose field
// "hold" is set, it waits for release (closed by the test).
type emitter struct {
	streams []string
	fail    error
	held    chan string   // the id of a held call, once it runs
	release chan struct{} // closed: held calls return
}

func (e *emitter) NewHandler(int) (engine.Handler, error) { return e, nil }

func (e *emitter) Handle(ctx context.Context, msg *engine.Message) engine.Result {
	for _, f := range msg.Fields {
		if f.Name == "hold" {
			e.held <- msg.ID
			select {
			case <-e.release:
			case <-ctx.Done():
			}
		}
	}
	if e.fail != nil {
		return engine.Result{Err: e.fail}
	}
	var out []engine.Emit
	for _, s := range e.streams {
		out = append(out, engine.Emit{Stream: s, Fields: []topix.Field{{Name: "from", Value: msg.ID}}})
	}
	return engine.Result{Emits: out}
}

func newEmitter(streams ...string) *emitter {
	return &emitter{streams: streams, held: make(chan string, 16), release: make(chan struct{})}
}

// emitsOf counts the emits in stream by the id of the entry they came from.
func emitsOf(t *testing.T, rdb redis.UniversalClient, stream string) map[string]int {
	t.Helper()
	got := map[string]int{}
	entries, err := rdb.XRange(context.Background(), stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		got[e.Values["from"].(string)]++
	}
	return got
}

// TestExactlyOnceEmitsAndAcks: with ExactlyOnce every entry's emits go in
// once and the entry is acked; MAXLEN trims inside the script, too.
func TestExactlyOnceEmitsAndAcks(t *testing.T) {
	rdb := realRedis.new(t)
	ctx := context.Background()
	stream, group := names(t)
	out, trimmed := stream+":out", stream+":trimmed"
	const n = 600
	for i := range n {
		add(t, rdb, stream, "i", fmt.Sprint(i))
	}
	add(t, rdb, stream, "plain", "1") // no emits: acked by a plain XACK
	h := engine.HandlerFunc(func(_ context.Context, msg *engine.Message) engine.Result {
		if msg.Fields[0].Name == "plain" {
			return engine.Result{}
		}
		from := []topix.Field{{Name: "from", Value: msg.ID}}
		return engine.Result{Emits: []engine.Emit{{Stream: out, Fields: from}, {Stream: trimmed, MaxLen: 10, Fields: from}}}
	})
	r := start(t, rdb, h, engine.Options{Stream: stream, Group: group, Consumer: "c1", Concurrency: 4, Block: 50 * time.Millisecond, ExactlyOnce: true})
	redistest.WaitFor(t, 20*time.Second, "every entry acked", func() bool { return r.c.Stats().Acked == n+1 })
	got := emitsOf(t, rdb, out)
	if len(got) != n {
		t.Errorf("%d entries emitted to %s, want %d", len(got), out, n)
	}
	for id, k := range got {
		if k != 1 {
			t.Errorf("%s emitted %d times", id, k)
		}
	}
	if l := rdb.XLen(ctx, trimmed).Val(); l < 10 || l > 10+200 {
		t.Errorf("%s holds %d entries after %d emits with MAXLEN ~ 10", trimmed, l, n)
	}
	if p := groupInfo(t, rdb, stream, group).Pending; p != 0 {
		t.Errorf("%d entries left pending", p)
	}
	if s := r.c.Stats(); s.Suppressed != 0 || s.Processed != n+1 {
		t.Errorf("stats %+v", s)
	}
}

// TestASecondProcessingEmitsNothing: a call still running when its entry
// was acked by someone else (another consumer that processed it after a
// reclaim) adds no emit, with ExactlyOnce, for an entry's emits and for
// its dead letter; without, it adds them: the duplicate the flag removes.
// An entry merely claimed by another consumer, not acked, is still this
// call's to finish.
func TestASecondProcessingEmitsNothing(t *testing.T) {
	for _, tc := range []struct {
		name        string
		exactlyOnce bool
		fail        error
		byOther     string // what the other consumer does meanwhile: ack, or claim
		wantEmits   int
		wantDead    int
	}{
		{"exactly once, acked by another", true, nil, "ack", 0, 0},
		{"exactly once, dead letter, acked by another", true, fmt.Errorf("no: %w", engine.ErrDeadLetter), "ack", 0, 0},
		{"exactly once, claimed by another", true, nil, "claim", 1, 0},
		{"at least once, acked by another", false, nil, "ack", 1, 0},
		{"at least once, dead letter, acked by another", false, fmt.Errorf("no: %w", engine.ErrDeadLetter), "ack", 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdb := realRedis.new(t)
			ctx := context.Background()
			stream, group := names(t)
			out := stream + ":out"
			id := add(t, rdb, stream, "hold", "1")
			h := newEmitter(out)
			h.fail = tc.fail
			r := start(t, rdb, h, engine.Options{Stream: stream, Group: group, Consumer: "c1", Block: 50 * time.Millisecond,
				ClaimIdle: 300 * time.Millisecond, ExactlyOnce: tc.exactlyOnce, Records: true})
			if got := <-h.held; got != id {
				t.Fatalf("held %s, want %s", got, id)
			}
			switch tc.byOther {
			case "ack":
				if n := rdb.XAck(ctx, stream, group, id).Val(); n != 1 {
					t.Fatalf("XACK: %d", n)
				}
			case "claim":
				if err := rdb.XClaimJustID(ctx, &redis.XClaimArgs{Stream: stream, Group: group, Consumer: "other", Messages: []string{id}}).Err(); err != nil {
					t.Fatal(err)
				}
			}
			close(h.release)
			redistest.WaitFor(t, 10*time.Second, "the call's flush", func() bool { return r.c.Stats().Acked == 1 })
			emits, dead := len(emitsOf(t, rdb, out)), int(rdb.XLen(ctx, stream+":dead").Val())
			if emits != tc.wantEmits || dead != tc.wantDead {
				t.Errorf("emits %d, dead letters %d; want %d, %d", emits, dead, tc.wantEmits, tc.wantDead)
			}
			wantSuppressed := int64(0)
			if tc.exactlyOnce && tc.byOther == "ack" {
				wantSuppressed = 1
			}
			if s := r.c.Stats().Suppressed; s != wantSuppressed {
				t.Errorf("suppressed %d, want %d", s, wantSuppressed)
			}
			if wantSuppressed > 0 {
				redistest.WaitFor(t, 5*time.Second, "the duplicate in the group's record", func() bool {
					return rdb.HGet(ctx, engine.GroupKey(stream, group), engine.FieldSuppressed).Val() == "1"
				})
			}
			if p := groupInfo(t, rdb, stream, group).Pending; p != 0 {
				t.Errorf("%d entries left pending", p)
			}
		})
	}
}

// TestExactlyOnceARefusedEmitAddsNothing: an emit Redis would refuse (a
// key of another type, a stream the ACL user may not write) leaves its
// entry pending with none of its emits added, the valid ones included; the
// entry is retried, and dead-lettered with the reason after its last
// attempt.
func TestExactlyOnceARefusedEmitAddsNothing(t *testing.T) {
	admin := realRedis.new(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name, bad, want string
		user            bool
	}{
		{"a key of another type", "wrongtype", "WRONGTYPE", false},
		{"a stream the ACL user may not write", "forbidden", "Redis refused XADD", true},
		{"a stream whose ids are used up", "full", "its last id is the largest there is", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream, group := names(t)
			good, bad := stream+":good", tc.bad+":"+stream
			admin.Set(ctx, bad, "x", 0)
			switch tc.bad {
			case "forbidden":
				admin.Del(ctx, bad)
			case "full":
				admin.Del(ctx, bad)
				admin.XAdd(ctx, &redis.XAddArgs{Stream: bad, ID: "18446744073709551615-18446744073709551615", Values: []any{"k", "v"}})
			}
			rdb := admin
			if tc.user {
				// Every key but those starting with f.
				if err := admin.Do(ctx, "ACL", "SETUSER", "eo", "on", ">pw", "+@all", "~[^f]*").Err(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { admin.Do(ctx, "ACL", "DELUSER", "eo") })
				o := *admin.(*redis.Client).Options()
				o.Username, o.Password = "eo", "pw"
				rdb = redis.NewClient(&o)
				t.Cleanup(func() { rdb.Close() })
			}
			add(t, admin, stream, "i", "1")
			h := newEmitter(good, bad)
			r := start(t, rdb, h, engine.Options{Stream: stream, Group: group, Consumer: "c1", Block: 50 * time.Millisecond,
				MaxAttempts: 2, RetryBackoff: 10 * time.Millisecond, ExactlyOnce: true})
			redistest.WaitFor(t, 10*time.Second, "the entry dead-lettered", func() bool { return r.c.Stats().Acked == 1 })
			if n := admin.XLen(ctx, good).Val(); n != 0 {
				t.Errorf("%d emits added to %s alongside the refused one", n, good)
			}
			dead, _ := admin.XRange(ctx, stream+":dead", "-", "+").Result()
			if len(dead) != 1 || !strings.Contains(dead[0].Values["topix.error"].(string), tc.want) ||
				!strings.Contains(dead[0].Values["topix.error"].(string), bad) || dead[0].Values["topix.attempts"] != "2" {
				t.Errorf("dead letters %+v; want one after 2 attempts, saying %q about %s", dead, tc.want, bad)
			}
			if s := r.c.Stats(); s.Failed != 2 || s.Processed != 0 {
				t.Errorf("stats %+v; want 2 failed calls", s)
			}
		})
	}
}

// TestExactlyOnceSurvivesAScriptFlush: after SCRIPT FLUSH (or a restart
// of Redis) the script is loaded again and nothing is emitted twice.
func TestExactlyOnceSurvivesAScriptFlush(t *testing.T) {
	rdb := realRedis.new(t)
	ctx := context.Background()
	stream, group := names(t)
	out := stream + ":out"
	h := newEmitter(out)
	r := start(t, rdb, h, engine.Options{Stream: stream, Group: group, Consumer: "c1", Block: 20 * time.Millisecond, ExactlyOnce: true})
	for round := range 3 {
		if err := rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			add(t, rdb, stream, "i", fmt.Sprint(round*20+i))
		}
		redistest.WaitFor(t, 10*time.Second, "the round acked", func() bool { return r.c.Stats().Acked == int64(20*(round+1)) })
	}
	got := emitsOf(t, rdb, out)
	for id, k := range got {
		if k != 1 {
			t.Errorf("%s emitted %d times", id, k)
		}
	}
	if len(got) != 60 {
		t.Errorf("%d entries emitted, want 60", len(got))
	}
}

// TestExactlyOnceIsRefusedWhereItCannotRun: a server that cannot run the
// script (the embedded one) is refused before anything is read.
func TestExactlyOnceIsRefusedWhereItCannotRun(t *testing.T) {
	rdb := embedded.new(t)
	stream, group := names(t)
	add(t, rdb, stream, "i", "1")
	c, err := engine.New(rdb, newEmitter(stream+":out"), engine.Options{Stream: stream, Group: group, Consumer: "c1", ExactlyOnce: true})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Run(context.Background())
	if !errors.Is(err, engine.ErrExactlyOnce) || !strings.Contains(err.Error(), "Redis 7.0") {
		t.Errorf("Run: %v; want ErrExactlyOnce, naming Redis 7.0", err)
	}
	if s := c.Stats(); s.Acked != 0 || s.Processed != 0 {
		t.Errorf("it processed entries: %+v", s)
	}
}

// TestExactlyOnceEmitWithTooManyFields: an emit the script cannot pass to
// XADD fails its call, with the bound in the error.
func TestExactlyOnceEmitWithTooManyFields(t *testing.T) {
	rdb := realRedis.new(t)
	stream, group := names(t)
	add(t, rdb, stream, "i", "1")
	fields := make([]topix.Field, engine.MaxExactlyOnceFields+1)
	for i := range fields {
		fields[i] = topix.Field{Name: fmt.Sprint("f", i), Value: "v"}
	}
	h := engine.HandlerFunc(func(context.Context, *engine.Message) engine.Result {
		return engine.Result{Emits: []engine.Emit{{Stream: stream + ":out", Fields: fields}}}
	})
	r := start(t, rdb, h, engine.Options{Stream: stream, Group: group, Consumer: "c1", Block: 20 * time.Millisecond, MaxAttempts: 1, ExactlyOnce: true})
	redistest.WaitFor(t, 10*time.Second, "the entry dead-lettered", func() bool { return r.c.Stats().Acked == 1 })
	dead, _ := rdb.XRange(context.Background(), stream+":dead", "-", "+").Result()
	if len(dead) != 1 || !strings.Contains(dead[0].Values["topix.error"].(string), fmt.Sprint("at most ", engine.MaxExactlyOnceFields)) {
		t.Errorf("dead letters %+v", dead)
	}
}

// TestExactlyOnceOnAClusterNeedsOneSlot: on a Cluster the dead-letter
// stream defaults to one on the stream's slot, and one given elsewhere is
// refused before anything runs. (Scenario v of the fault suite runs it on
// a real cluster.)
func TestExactlyOnceOnAClusterNeedsOneSlot(t *testing.T) {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"127.0.0.1:1"}}) // never dialled by New
	defer cc.Close()
	h := newEmitter("x")
	for _, tc := range []struct{ stream, dead, want string }{
		{"orders", "", "{orders}:dead"},
		{"{orders}", "", "{orders}:dead"},
		{"{o}rders", "", "{o}rders:dead"},
		{"orders", "{orders}:failed", "{orders}:failed"},
	} {
		c, err := engine.New(cc, h, engine.Options{Stream: tc.stream, Group: "g", Consumer: "c", DeadLetter: tc.dead, ExactlyOnce: true})
		if err != nil {
			t.Errorf("%s, --dead-letter %q: %v", tc.stream, tc.dead, err)
		} else if c.DeadLetter() != tc.want {
			t.Errorf("%s, --dead-letter %q: dead letters to %q; want %q", tc.stream, tc.dead, c.DeadLetter(), tc.want)
		}
	}
	_, err := engine.New(cc, h, engine.Options{Stream: "orders", Group: "g", Consumer: "c", DeadLetter: "orders:dead", ExactlyOnce: true})
	if !errors.Is(err, engine.ErrExactlyOnce) || !strings.Contains(err.Error(), `--dead-letter "{orders}:dead"`) {
		t.Errorf("a dead-letter stream on another slot: %v", err)
	}
	if c, err := engine.New(cc, h, engine.Options{Stream: "orders", Group: "g", Consumer: "c"}); err != nil || c.DeadLetter() != "orders:dead" {
		t.Errorf("without --exactly-once: %v", err)
	}
}
