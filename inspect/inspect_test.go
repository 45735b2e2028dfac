package inspect_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix/engine"
	"github.com/topix-dev/topix/inspect"
	"github.com/topix-dev/topix/internal/redistest"
)

var srv *redistest.Server

func TestMain(m *testing.M) { os.Exit(redistest.Main(m, &srv)) }

func client(t *testing.T) *redis.Client {
	c := srv.Client()
	t.Cleanup(func() { c.Close() })
	return c
}

// must returns v, or panics (failing the test) with err: for set-up
// steps and reads that must not fail.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// setUp makes stream with n entries and a group at 0, and has consumer
// "x" read the first read of them.
func setUp(t *testing.T, rdb redis.UniversalClient, stream string, n, read int) []string {
	t.Helper()
	ctx := context.Background()
	var ids []string
	for i := range n {
		ids = append(ids, must(rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"i", i}}).Result()))
	}
	must(rdb.XGroupCreate(ctx, stream, "g", "0").Result())
	if read > 0 {
		must(rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "x", Streams: []string{stream, ">"}, Count: int64(read)}).Result())
	}
	return ids
}

func TestGroupFigures(t *testing.T) {
	rdb := client(t)
	ctx := context.Background()
	setUp(t, rdb, "s1", 10, 4)
	in := inspect.New(rdb)
	g := must(in.Group(ctx, "s1", "g", inspect.Options{ClaimIdle: time.Hour}))
	if g.State != "stalled" || g.Lag != 6 || !g.LagExact || g.Pending != 4 || g.Backlog != 10 || g.Stuck != 0 ||
		g.Length != 10 || g.Consumers != 1 || g.Alive != 0 || g.LagAge <= 0 || g.OldestPending <= 0 || g.DeadLetter != "s1:dead" {
		t.Errorf("group = %+v", g)
	}
	// Idle past the claim idle: stuck.
	redistest.WaitFor(t, 5*time.Second, "the pending entries to be stuck", func() bool {
		g = must(in.Group(ctx, "s1", "g", inspect.Options{ClaimIdle: 20 * time.Millisecond}))
		return g.Stuck == 4
	})
	if g.StuckCapped {
		t.Error("4 stuck entries reported as capped")
	}
	// Missing group, missing stream.
	if g := must(in.Group(ctx, "s1", "nope", inspect.Options{})); g.State != "missing" {
		t.Errorf("a missing group: %+v", g)
	}
	if g := must(in.Group(ctx, "nope", "g", inspect.Options{})); g.State != "missing" {
		t.Errorf("a missing stream: %+v", g)
	}
	if _, err := in.StreamGroups(ctx, "nope"); err == nil {
		t.Error("StreamGroups of a missing stream succeeded")
	}
}

// TestLagIsEstimatedWhenRedisCannotSay: after a deletion past the group's
// position Redis gives no lag; it is counted, and marked as such.
func TestLagIsEstimatedWhenRedisCannotSay(t *testing.T) {
	rdb := client(t)
	ctx := context.Background()
	ids := setUp(t, rdb, "s2", 6, 2)
	must(rdb.XDel(ctx, "s2", ids[4]).Result())
	g := must(inspect.New(rdb).Group(ctx, "s2", "g", inspect.Options{}))
	if g.Lag != 3 || g.LagExact || g.Backlog != 5 {
		t.Errorf("lag %d (exact %v), backlog %d; want an estimated 3 and 5", g.Lag, g.LagExact, g.Backlog)
	}
}

// TestTheEmbeddedServersLagIsNotTrusted: the embedded server (topix dev)
// reports a wrong lag; it is counted instead, and marked.
func TestTheEmbeddedServersLagIsNotTrusted(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr(), Protocol: 2})
	defer rdb.Close()
	setUp(t, rdb, "s3", 7, 3)
	g := must(inspect.New(rdb).Group(context.Background(), "s3", "g", inspect.Options{}))
	if g.Lag != 4 || g.LagExact || g.Pending != 3 {
		t.Errorf("lag %d (exact %v), pending %d; want an estimated 4 and 3", g.Lag, g.LagExact, g.Pending)
	}
}

func TestRatesComeFromTheMinuteCounts(t *testing.T) {
	rdb := client(t)
	ctx := context.Background()
	setUp(t, rdb, "s4", 1, 0)
	now := time.Now().Unix() / 60
	must(rdb.HSet(ctx, engine.MinuteKey("s4", "g", now), engine.FieldProcessed, 60, engine.FieldFailed, 6).Result())
	must(rdb.HSet(ctx, engine.MinuteKey("s4", "g", now-1), engine.FieldProcessed, 6000).Result())
	g := must(inspect.New(rdb).Group(ctx, "s4", "g", inspect.Options{}))
	// The current minute's counts and the earlier minute's, weighed by
	// its share of the last 60 seconds: between 1 and 101 per second.
	if g.Rate < 1 || g.Rate > 101 || g.ErrorRate != 0.1 {
		t.Errorf("rate %v, error rate %v", g.Rate, g.ErrorRate)
	}
}

func TestRegistryAndDeadLetterReasons(t *testing.T) {
	rdb := client(t)
	ctx := context.Background()
	for _, m := range []string{engine.RegistryMember("b", "g1"), engine.RegistryMember("a", "g2"), "not json"} {
		must(rdb.ZAdd(ctx, engine.RegistryKey, redis.Z{Score: 1, Member: m}).Result())
	}
	refs := must(inspect.New(rdb).Groups(ctx))
	if len(refs) != 2 || refs[0] != (inspect.Ref{Stream: "a", Group: "g2"}) || refs[1] != (inspect.Ref{Stream: "b", Group: "g1"}) {
		t.Errorf("groups = %v", refs)
	}
	for _, dl := range []struct{ group, err string }{{"g", "boom"}, {"g", "boom"}, {"g", "bang"}, {"other", "boom"}} {
		must(rdb.XAdd(ctx, &redis.XAddArgs{Stream: "d:dead", Values: []any{"k", "v", "topix.error", dl.err, "topix.group", dl.group}}).Result())
	}
	reasons := must(inspect.New(rdb).DeadLetters(ctx, "d:dead", "g"))
	if len(reasons) != 2 || reasons[0] != (inspect.Reason{Reason: "boom", Count: 2}) || reasons[1] != (inspect.Reason{Reason: "bang", Count: 1}) {
		t.Errorf("reasons = %v", reasons)
	}
}

func TestConsumersAliveAndGone(t *testing.T) {
	rdb := client(t)
	ctx := context.Background()
	setUp(t, rdb, "s5", 3, 2) // x owns 2, and has no heartbeat
	must(rdb.XGroupCreateConsumer(ctx, "s5", "g", "y").Result())
	must(rdb.Set(ctx, engine.HeartbeatKey("s5", "g", "y"), "1", time.Minute).Result()) // alive, keeps no records
	cs := must(inspect.New(rdb).Consumers(ctx, "s5", "g", time.Hour))
	if len(cs) != 2 || cs[0].Name != "y" || cs[0].Status != "alive" || cs[1].Name != "x" || cs[1].Status != "gone, owns 2 pending" ||
		cs[1].ClaimableIn < 3500 {
		t.Errorf("consumers = %+v", cs)
	}
	ps := must(inspect.New(rdb).Pending(ctx, "s5", "g", 10))
	if len(ps) != 2 || ps[0].Owner != "x" || ps[0].Deliveries != 1 || len(ps[0].Fields) != 1 || ps[0].Fields[0].Value != "0" {
		t.Errorf("pending = %+v", ps)
	}
}

func TestDeadListAndHistory(t *testing.T) {
	rdb := client(t)
	ctx := context.Background()
	meta := func(group, err, consumer string) []any {
		return []any{"sku", "A-1", "topix.error", err, "topix.attempts", "5", "topix.id", "1-1", "topix.stream", "h",
			"topix.group", group, "topix.consumer", consumer, "topix.time", "2026-01-01T00:00:00Z"}
	}
	for _, v := range [][]any{meta("g", "boom", "c1"), meta("g", "bang", "c2"), meta("other", "boom", "c3"), {"not", "topix"}} {
		must(rdb.XAdd(ctx, &redis.XAddArgs{Stream: "h:dead", Values: v}).Result())
	}
	in := inspect.New(rdb)
	all := must(in.DeadList(ctx, "h:dead", "g", "", 10, 100))
	if len(all) != 3 || !all[0].Foreign || all[1].Error != "bang" || all[2].Consumer != "c1" || all[2].Fields[0].Value != "A-1" {
		t.Errorf("the group's dead letters, newest first, foreign ones included: %+v", all)
	}
	if got := must(in.DeadList(ctx, "h:dead", "g", "boom", 10, 100)); len(got) != 1 || got[0].Consumer != "c1" {
		t.Errorf("filtered by boom: %+v", got)
	}
	if got := must(in.DeadList(ctx, "h:dead", "", "boom", 10, 100)); len(got) != 2 {
		t.Errorf("every group's, filtered by boom: %+v", got)
	}
	d, found, err := in.DeadEntryByID(ctx, "h:dead", all[1].ID)
	if err != nil || !found || d.Meta["topix.attempts"] != "5" || d.Error != "bang" {
		t.Errorf("by id: %+v %v %v", d, found, err)
	}
	if _, found, _ := in.DeadEntryByID(ctx, "h:dead", "1-0"); found {
		t.Error("found an id that is not there")
	}

	now := time.Now().Unix() / 60
	must(rdb.HSet(ctx, engine.MinuteKey("h", "g", now-2), engine.FieldProcessed, 7, engine.FieldScript, "abc", engine.FieldLag, 40).Result())
	must(rdb.HSet(ctx, engine.MinuteKey("h", "g", now-1), engine.FieldLag, 0).Result())
	must(rdb.HSet(ctx, engine.MinuteKey("h", "g", now), engine.FieldFailed, 3).Result())
	hist := must(in.History(ctx, "h", "g", 5))
	if len(hist) != 5 || hist[2].Processed != 7 || hist[2].Script != "abc" || hist[4].Failed != 3 || hist[3].Processed != 0 ||
		hist[4].Time.Unix() != now*60 {
		t.Errorf("history = %+v", hist)
	}
	if hist[2].Lag == nil || *hist[2].Lag != 40 || hist[3].Lag == nil || *hist[3].Lag != 0 || hist[4].Lag != nil || hist[0].Lag != nil {
		t.Errorf("lag: a sample where reported (0 included), none elsewhere: %+v", hist)
	}
}
