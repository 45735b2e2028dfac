package engine_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/topix-dev/topix/engine"
	"github.com/topix-dev/topix/internal/redistest"
)

// The core loop on a Redis Cluster of three masters with a replica each,
// while the stream's slot is migrated to another master (ASK, then MOVED)
// and its new master is failed over to its replica (MOVED from a master
// turned replica). Every entry is processed, and no redirect is taken for
// an outage: the raw read follows them in-band.
func TestClusterRedirectsAreFollowedInBand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a six-node cluster")
	}
	cl := redistest.MustCluster(t, 3, 1)
	ctx := context.Background()
	rdb := cl.Client()
	defer rdb.Close()
	for _, protocol := range []int{3, 2} {
		t.Run("resp"+strconv.Itoa(protocol), func(t *testing.T) {
			stream := "{cl" + strconv.Itoa(protocol) + "}:orders"
			crdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rdb.Options().Addrs, Protocol: protocol, ContextTimeoutEnabled: true})
			defer crdb.Close()
			var logs redistest.Buffer
			rec := newRecorder()
			r := start(t, crdb, rec, engine.Options{Stream: stream, Group: "g", Consumer: "c1", Concurrency: 2, Batch: 10,
				Block: 20 * time.Millisecond, Logger: newLogger(t, &logs)})
			sent := 0
			addSome := func(n int) {
				for range n {
					add(t, rdb, stream, "n", strconv.Itoa(sent))
					sent++
				}
			}
			processed := func(what string) {
				redistest.WaitFor(t, 20*time.Second, what, func() bool { return r.c.Stats().Acked == int64(sent) })
			}
			addSome(100)
			processed("the first entries, before the slot moves")

			target, err := cl.OtherMaster(ctx, stream)
			if err != nil {
				t.Fatal(err)
			}
			m, err := cl.Begin(ctx, redistest.Slot(stream), target)
			if err != nil {
				t.Fatal(err)
			}
			if n, err := m.MoveKeys(ctx); err != nil || n == 0 {
				t.Fatalf("moved %d keys: %v", n, err)
			}
			// The stream is on the target now, and its slot still the
			// source's: reads are answered ASK.
			addSome(100)
			processed("entries added while the slot is half-moved (ASK)")
			if err := m.Finish(ctx, cl); err != nil {
				t.Fatal(err)
			}
			addSome(100)
			processed("entries added after the slot moved (MOVED)")

			if _, _, err := cl.Failover(ctx, stream); err != nil {
				t.Fatal(err)
			}
			addSome(100)
			processed("entries added after a failover")
			if err := r.shutdown(t); err != nil {
				t.Fatal(err)
			}
			if rec.calls.Load() != int64(sent) {
				t.Errorf("%d calls for %d entries", rec.calls.Load(), sent)
			}
			if out := logs.String(); strings.Contains(out, "Redis failed") {
				t.Errorf("a redirect was logged as an outage:\n%s", out)
			}
		})
	}
}

// replicated starts a redis-server with one replica in sync.
func replicated(t *testing.T) (primary, replica *redistest.Server) {
	t.Helper()
	primary = redistest.Must(t)
	host, port, _ := strings.Cut(primary.Addr, ":")
	replica = redistest.Must(t, "--replicaof", host, port)
	rc := replica.Client()
	defer rc.Close()
	redistest.WaitFor(t, 20*time.Second, "the replica in sync", func() bool {
		info, _ := rc.Info(context.Background(), "replication").Result()
		return strings.Contains(info, "master_link_status:up")
	})
	return primary, replica
}

// With WaitReplicas, entries are acked once the replicas have their
// emits; when fewer replicas confirm them in time, they are not acked.
func TestWaitReplicasHoldsTheAckUntilTheReplicasHaveTheEmits(t *testing.T) {
	primary, replica := replicated(t)
	ctx := context.Background()
	rdb := primary.Client()
	defer rdb.Close()
	rc := replica.Client()
	defer rc.Close()
	emitter := handlerFunc(func(msg *engine.Message) engine.Result {
		return engine.Result{Emits: []engine.Emit{{Stream: msg.Stream + ":out", Fields: msg.Fields}}}
	})
	for _, tc := range []struct {
		replicas int
		acked    bool
	}{{1, true}, {2, false}} {
		stream := "wait" + strconv.Itoa(tc.replicas)
		for i := range 20 {
			add(t, rdb, stream, "n", strconv.Itoa(i))
		}
		var logs redistest.Buffer
		r := start(t, rdb, emitter, engine.Options{Stream: stream, Group: "g", Consumer: "c", Block: 20 * time.Millisecond,
			WaitReplicas: tc.replicas, WaitTimeout: waitFor(tc.acked), Logger: newLogger(t, &logs)})
		if tc.acked {
			redistest.WaitFor(t, 10*time.Second, "the entries acked", func() bool { return r.c.Stats().Acked == 20 })
			if n := rc.XLen(ctx, stream+":out").Val(); n != 20 {
				t.Errorf("the replica has %d emits of 20 acked entries", n)
			}
		} else {
			redistest.WaitFor(t, 10*time.Second, "the entries refused an ack", func() bool { return r.c.Stats().Unreplicated == 20 })
			if p := rdb.XPending(ctx, stream, "g").Val(); p.Count != 20 {
				t.Errorf("pending %d, want 20: an entry was acked although its emits were not on 2 replicas", p.Count)
			}
			if !strings.Contains(logs.String(), "1 of 2 replicas confirmed them") {
				t.Errorf("the log does not say why:\n%s", logs.String())
			}
		}
		if err := r.shutdown(t); err != nil {
			t.Fatal(err)
		}
	}
}

// waitFor is the WaitTimeout of a case: long where the replicas must
// confirm (a loaded machine can be slow), short where they cannot.
func waitFor(confirmed bool) time.Duration {
	if confirmed {
		return 5 * time.Second
	}
	return 50 * time.Millisecond
}

// handlerFunc is a Handler and its Runtime in one function.
type handlerFunc func(*engine.Message) engine.Result

func (f handlerFunc) Handle(_ context.Context, msg *engine.Message) engine.Result { return f(msg) }
func (f handlerFunc) NewHandler(int) (engine.Handler, error)                      { return f, nil }

// On a Cluster, WaitReplicas waits on the master of each stream emitted
// to: emits to a stream on another master than the consumed one are
// confirmed by that master's replica before the entry is acked.
func TestWaitReplicasOnACluster(t *testing.T) {
	cl := redistest.MustCluster(t, 3, 1)
	ctx := context.Background()
	rdb := cl.Client()
	defer rdb.Close()
	masters, err := cl.Masters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	in, err := cl.KeyOn(ctx, "in", masters[0])
	if err != nil {
		t.Fatal(err)
	}
	out1, err := cl.KeyOn(ctx, "out", masters[1])
	if err != nil {
		t.Fatal(err)
	}
	out2, err := cl.KeyOn(ctx, "out", masters[2])
	if err != nil {
		t.Fatal(err)
	}
	emitter := handlerFunc(func(msg *engine.Message) engine.Result {
		return engine.Result{Emits: []engine.Emit{{Stream: out1, Fields: msg.Fields}, {Stream: out2, Fields: msg.Fields}}}
	})
	for _, tc := range []struct {
		replicas int
		acked    bool
		kill     bool // the replica of out1's master first
	}{{1, true, false}, {2, false, false}, {1, false, true}} {
		if tc.kill {
			// Only a WAIT sent with the XADDs to out1's master can tell:
			// the other masters keep their replicas.
			replica, err := cl.Replica(ctx, out1)
			if err != nil {
				t.Fatal(err)
			}
			replica.Stop()
		}
		stream := in + ":" + strconv.Itoa(tc.replicas) + strconv.FormatBool(tc.kill)
		stream, err = cl.KeyOn(ctx, stream+"-", masters[0])
		if err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			add(t, rdb, stream, "n", strconv.Itoa(i))
		}
		var logs redistest.Buffer
		r := start(t, rdb, emitter, engine.Options{Stream: stream, Group: "g", Consumer: "c", Block: 20 * time.Millisecond,
			WaitReplicas: tc.replicas, WaitTimeout: waitFor(tc.acked), Logger: newLogger(t, &logs)})
		if tc.acked {
			redistest.WaitFor(t, 10*time.Second, "the entries acked", func() bool { return r.c.Stats().Acked == 20 })
		} else {
			redistest.WaitFor(t, 10*time.Second, "the entries refused an ack", func() bool { return r.c.Stats().Unreplicated == 20 })
			if p := rdb.XPending(ctx, stream, "g").Val(); p.Count != 20 {
				t.Errorf("pending %d, want 20", p.Count)
			}
		}
		if err := r.shutdown(t); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []string{out1, out2} {
		if n := rdb.XLen(ctx, s).Val(); n < 20 {
			t.Errorf("%s holds %d emits", s, n)
		}
	}
}
