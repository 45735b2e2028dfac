package metrics

import (
	"slices"
	"testing"
	"time"

	"github.com/topix-dev/topix/engine"
)

func TestCallDurationBucketsResolveSubMillisecondCalls(t *testing.T) {
	for _, timeout := range []time.Duration{30 * time.Second, 50 * time.Millisecond, time.Millisecond, 10 * time.Minute} {
		b := durationBuckets(timeout)
		if b[0] != 1e-4 && timeout > 100*time.Microsecond {
			t.Errorf("%s: first bucket %v, want 100µs", timeout, b[0])
		}
		if b[len(b)-1] != timeout.Seconds() || !slices.IsSorted(b) || len(slices.Compact(slices.Clone(b))) != len(b) {
			t.Errorf("%s: buckets %v; want rising, ending at the timeout", timeout, b)
		}
		if timeout >= time.Second && (!slices.Contains(b, 0.00025) || !slices.Contains(b, 0.001)) {
			t.Errorf("%s: buckets %v lack 250µs and 1ms", timeout, b)
		}
	}
}

func TestReadyReasons(t *testing.T) {
	up := engine.State{Phase: engine.PhaseRunning}
	for _, c := range []struct {
		st   engine.State
		want string
	}{
		{up, ""},
		{engine.State{Phase: engine.PhaseStarting}, "starting"},
		{engine.State{Phase: engine.PhaseDraining}, "draining"},
		{engine.State{Phase: engine.PhaseStopped}, "stopped"},
		{engine.State{Phase: engine.PhaseRunning, RedisDown: time.Now()}, "redis_down"},
		{engine.State{Phase: engine.PhaseRunning, NoGroup: true}, "no_group"},
	} {
		if got := Ready(c.st); got != c.want {
			t.Errorf("Ready(%+v) = %q, want %q", c.st, got, c.want)
		}
	}
}
