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

			owner, err := cl.Owner(ctx, stream)
			if err != nil {
				t.Fatal(err)
			}
			masters, err := cl.Masters(ctx)
			if err != nil {
				t.Fatal(err)
			}
			target := masters[0]
			if target == owner {
				target = masters[1]
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

			replica, err := cl.Replica(ctx, stream)
			if err != nil {
				t.Fatal(err)
			}
			rc := replica.Client()
			defer rc.Close()
			if err := rc.Do(ctx, "CLUSTER", "FAILOVER").Err(); err != nil {
				t.Fatal(err)
			}
			if _, err := cl.WaitPromoted(ctx, stream, target); err != nil {
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
