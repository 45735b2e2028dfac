package engine_test

import (
	"context"
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix"
	"github.com/topix-dev/topix/engine"
)

// deadLetters adds n topix dead letters of entries of stream to dead and
// returns their ids.
func deadLetters(t *testing.T, rdb redis.UniversalClient, stream, dead string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		ids = append(ids, add(t, rdb, dead, "k", string(rune('a'+i)),
			"topix.error", "boom", "topix.attempts", "1", "topix.id", "1-1", "topix.stream", stream,
			"topix.group", "g", "topix.consumer", "c1", "topix.time", "2026-01-01T00:00:00Z"))
	}
	return ids
}

func TestReplayOfChosenIDs(t *testing.T) {
	rdb := realRedis.new(t)
	ctx := context.Background()
	stream, _ := names(t)
	dead := stream + ":dead"
	ids := deadLetters(t, rdb, stream, dead, 4)
	var reports []engine.Replayed
	replayed, failed, err := engine.Replay(ctx, rdb, engine.ReplayOptions{DeadLetter: dead, IDs: []string{ids[2], "1-0", ids[0]}},
		func(r engine.Replayed) { reports = append(reports, r) })
	if err != nil || replayed != 2 || failed != 1 {
		t.Fatalf("replayed %d, failed %d, err %v; want 2, 1 (the id not there), nil", replayed, failed, err)
	}
	if reports[0].ID != ids[2] || !errors.Is(reports[1].Err, engine.ErrNotDeadLetter) || reports[2].ID != ids[0] {
		t.Errorf("reports = %+v", reports)
	}
	back, _ := rdb.XRange(ctx, stream, "-", "+").Result()
	if len(back) != 2 || back[0].Values["k"] != "c" || back[1].Values["k"] != "a" {
		t.Errorf("replayed to %s: %+v; want c then a, with their original fields only", stream, back)
	}
	left, _ := rdb.XRange(ctx, dead, "-", "+").Result()
	if len(left) != 2 || left[0].ID != ids[1] || left[1].ID != ids[3] {
		t.Errorf("left in the dead-letter stream: %+v; want the two not chosen", left)
	}
	n, err := engine.DeleteDeadLetters(ctx, rdb, dead, []string{ids[1], ids[0]})
	if err != nil || n != 1 {
		t.Errorf("deleted %d (%v); want 1, the other one was replayed already", n, err)
	}
	if l := rdb.XLen(ctx, dead).Val(); l != 1 {
		t.Errorf("%d dead letters left, want 1", l)
	}
}

// TestDeadLettersOfBothLayouts: dead letters with topix.backtrace and the
// earlier ones without it are both read as dead letters and replayed with
// their original fields only; an entry ending with neither layout is not
// one.
func TestDeadLettersOfBothLayouts(t *testing.T) {
	f := func(kv ...string) []topix.Field {
		var out []topix.Field
		for i := 0; i < len(kv); i += 2 {
			out = append(out, topix.Field{Name: kv[i], Value: kv[i+1]})
		}
		return out
	}
	old := []string{"topix.error", "boom", "topix.attempts", "1", "topix.id", "1-1", "topix.stream", "s",
		"topix.group", "g", "topix.consumer", "c1", "topix.time", "2026-01-01T00:00:00Z"}
	cases := []struct {
		name   string
		fields []topix.Field
		orig   int // original fields; -1: not a dead letter
		bt     string
	}{
		{"new", f(append(append([]string{"k", "v"}, old...), "topix.backtrace", "Traceback ...")...), 1, "Traceback ..."},
		{"old", f(append([]string{"k", "v", "k2", "v2"}, old...)...), 2, ""},
		{"new, no fields of its own", f(append(old, "topix.backtrace", "")...), 0, ""},
		{"out of order", f(append([]string{"topix.backtrace", ""}, old...)...), 1, ""},
		{"only a backtrace", f("k", "v", "topix.backtrace", "x"), -1, ""},
		{"missing topix.time", f(append([]string{"k", "v"}, old[:12]...)...), -1, ""},
	}
	for _, c := range cases {
		orig, meta, ok := engine.SplitDeadLetter(c.fields)
		switch {
		case c.orig < 0 && ok:
			t.Errorf("%s: read as a dead letter: %v %v", c.name, orig, meta)
		case c.orig >= 0 && (!ok || len(orig) != c.orig || meta["topix.error"] != "boom" || meta["topix.backtrace"] != c.bt):
			t.Errorf("%s: ok %v, original %v, meta %v", c.name, ok, orig, meta)
		}
	}
	// "out of order": its topix.backtrace comes first, so it is an original
	// field of an old-layout dead letter.
	if orig, _, _ := engine.SplitDeadLetter(cases[3].fields); len(orig) != 1 || orig[0].Name != "topix.backtrace" {
		t.Errorf("out of order: original %v", orig)
	}

	rdb := realRedis.new(t)
	ctx := context.Background()
	stream, _ := names(t)
	dead := stream + ":dead"
	deadLetters(t, rdb, stream, dead, 1)
	add(t, rdb, dead, append(append([]string{"k", "new"}, old...), "topix.backtrace", "Traceback ...")...)
	replayed, failed, err := engine.Replay(ctx, rdb, engine.ReplayOptions{DeadLetter: dead, To: stream}, func(engine.Replayed) {})
	if err != nil || replayed != 2 || failed != 0 {
		t.Fatalf("replayed %d, failed %d, err %v; want both", replayed, failed, err)
	}
	back, _ := rdb.XRange(ctx, stream, "-", "+").Result()
	if len(back) != 2 || len(back[0].Values) != 1 || len(back[1].Values) != 1 || back[1].Values["k"] != "new" {
		t.Errorf("replayed: %+v; want each with its one original field", back)
	}
}
