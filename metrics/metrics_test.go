package metrics

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

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

func TestHistogramCountsAChunkAtATime(t *testing.T) {
	h := newHistogram("h_seconds", "a test", []float64{1e-4, 1e-3, 1}, nil)
	var tl tally
	for _, v := range []float64{0.00005, 0.0001, 0.0002, 1, 100} {
		h.observe(&tl, v)
	}
	h.add(&tl)
	h.add(&tally{}) // an empty chunk changes nothing
	ch := make(chan prometheus.Metric, 1)
	h.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		t.Fatal(err)
	}
	got := m.GetHistogram()
	var cum []uint64
	for _, b := range got.GetBucket() {
		cum = append(cum, b.GetCumulativeCount())
	}
	if got.GetSampleCount() != 5 || math.Abs(got.GetSampleSum()-101.00035) > 1e-9 || !slices.Equal(cum, []uint64{2, 3, 4}) {
		t.Errorf("count %d, sum %v, cumulative buckets %v; want 5, 101.00035, [2 3 4]", got.GetSampleCount(), got.GetSampleSum(), cum)
	}
}

// BenchmarkCalls is the Observer's cost per call on the per-entry path: a
// chunk of 20 calls told at once, as a worker does.
func BenchmarkCalls(b *testing.B) {
	m := New("s", "g", 30*time.Second)
	calls := make([]engine.Call, 20)
	for i := range calls {
		calls[i] = engine.Call{Duration: time.Duration(i) * 7 * time.Microsecond, Age: time.Duration(i) * time.Millisecond}
	}
	b.ResetTimer()
	for range b.N / len(calls) {
		m.Calls(calls)
	}
}
