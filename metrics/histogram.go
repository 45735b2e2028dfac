package metrics

import (
	"math"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// histogram is a Prometheus histogram that takes its observations a chunk
// at a time: a chunk's calls are counted into buckets on the stack, then
// added with one atomic operation per bucket they fell in. client_golang's
// own Histogram costs three atomic operations per observation, which a
// drain of 300,000 entries a second notices.
type histogram struct {
	desc   *prometheus.Desc
	bounds []float64 // upper bounds, rising; at most maxBuckets
	counts []atomic.Uint64
	count  atomic.Uint64
	sum    atomic.Uint64 // float64 bits
}

const maxBuckets = 32

func newHistogram(name, help string, bounds []float64, labels prometheus.Labels) *histogram {
	if len(bounds) > maxBuckets {
		bounds = bounds[len(bounds)-maxBuckets:]
	}
	return &histogram{
		desc:   prometheus.NewDesc(name, help, nil, labels),
		bounds: bounds,
		counts: make([]atomic.Uint64, len(bounds)),
	}
}

// tally counts observations into buckets before they are added.
type tally struct {
	counts [maxBuckets]uint64
	n      uint64
	sum    float64
}

// observe counts v into t, by h's buckets.
func (h *histogram) observe(t *tally, v float64) {
	for i, b := range h.bounds {
		if v <= b {
			t.counts[i]++
			break
		}
	}
	t.n++
	t.sum += v
}

// add adds what t counted.
func (h *histogram) add(t *tally) {
	if t.n == 0 {
		return
	}
	for i := range h.bounds {
		if t.counts[i] != 0 {
			h.counts[i].Add(t.counts[i])
		}
	}
	h.count.Add(t.n)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+t.sum)) {
			break
		}
	}
}

func (h *histogram) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

func (h *histogram) Collect(ch chan<- prometheus.Metric) {
	buckets := make(map[float64]uint64, len(h.bounds))
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i].Load()
		buckets[b] = cum
	}
	// The count is read last: it is at least the buckets' sum, as
	// Prometheus wants (observations above the last bound are in +Inf).
	count := max(h.count.Load(), cum)
	ch <- prometheus.MustNewConstHistogram(h.desc, count, math.Float64frombits(h.sum.Load()), buckets)
}
