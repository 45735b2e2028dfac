// Package metrics exports what a consumer does as Prometheus metrics: it
// is the consumer's engine.Observer, reads its gauges from engine.State at
// each scrape, and exports the group's figures read through package
// inspect, at most every GroupEvery. http.go serves them with the health
// endpoints. docs/operations.md lists every metric.
package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/topix-dev/topix/engine"
	"github.com/topix-dev/topix/inspect"
	"github.com/topix-dev/topix/internal/version"
)

// GroupEvery is how often the group's figures are read from Redis at most:
// scrapes in between get the figures of the last read.
const GroupEvery = 5 * time.Second

// Script is what the metrics need of the running script.
type Script interface {
	// Version returns the running script's path and hash.
	Version() (path, hash string)
	// Reloads returns how many reloads succeeded and failed so far.
	Reloads() (ok, failed int64)
}

// Metrics holds a consumer's metrics. Make one with New, pass it as the
// consumer's Observer, then Watch the consumer.
type Metrics struct {
	reg *prometheus.Registry

	received    [4]prometheus.Counter // by engine.Source
	claims      prometheus.Counter
	calls       [6]prometheus.Counter // by engine.CallResult
	duration    *histogram
	age         *histogram
	acks        prometheus.Counter
	retries     prometheus.Counter
	dead        [3]prometheus.Counter // by engine.DeadReason
	leasesLost  prometheus.Counter
	gone        prometheus.Counter
	emits       prometheus.Counter
	emitsFailed prometheus.Counter
	recreated   prometheus.Counter
	suppressed  prometheus.Counter
}

var _ engine.Observer = (*Metrics)(nil)

// New makes the metrics of the group on stream. callTimeout is the longest
// a call may take: the call-duration buckets end there.
func New(stream, group string, callTimeout time.Duration) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	labels := prometheus.Labels{"stream": stream, "group": group}
	f := factory{m.reg, labels}

	received := f.counterVec("topix_entries_received_total", "Entries handed to the workers, by where they were read from: new, own_pending (at start), claimed (from a dead consumer), retry.", "source")
	for _, s := range engine.Sources {
		m.received[s] = received.WithLabelValues(s.String())
	}
	m.claims = f.counter("topix_claims_total", "Entries claimed from other consumers' pending lists, idle longer than the claim idle (their consumer died).")
	calls := f.counterVec("topix_calls_total", "Calls of the script's function, by result: ok, error, timeout, step_limit, memory, dead_letter.", "result")
	for _, r := range engine.CallResults {
		m.calls[r] = calls.WithLabelValues(r.String())
	}
	m.duration = f.histogram("topix_call_duration_seconds", "How long the calls took.", durationBuckets(callTimeout))
	m.age = f.histogram("topix_entry_age_seconds", "The age of entries when their call started: now minus the time in their id.",
		[]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 600, 1800, 3600, 6 * 3600, 86400})
	m.acks = f.counter("topix_acks_total", "Entries acked, dead-lettered ones and those whose data was gone included.")
	m.retries = f.counter("topix_retries_total", "Failed calls whose entry stays pending, to be called again after its backoff.")
	dead := f.counterVec("topix_dead_letters_total", "Entries added to the dead-letter stream, by reason: attempts (the last failed), rejected (dead_letter() in the script), crashed (attempts used up by calls that never ended).", "reason")
	for _, r := range engine.DeadReasons {
		m.dead[r] = dead.WithLabelValues(r.String())
	}
	m.leasesLost = f.counter("topix_leases_lost_total", "Entries in progress found claimed by another consumer: this one's lease lapsed; they may be processed twice.")
	m.gone = f.counter("topix_entries_gone_total", "Pending entries whose data was deleted or trimmed before they were processed.")
	m.emits = f.counter("topix_emits_total", "Entries the scripts emitted that Redis added (dead letters not included).")
	m.emitsFailed = f.counter("topix_emits_failed_total", "Emits Redis refused (or that were invalid); each failed its entry's call.")
	m.recreated = f.counter("topix_groups_recreated_total", "Times the group was gone and this consumer created it again.")
	m.suppressed = f.counter("topix_duplicates_suppressed_total", "With --exactly-once, entries found acked already when flushed (another consumer processed them first): their emits were not added again.")

	bi := version.Get()
	f.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "topix_build_info", Help: "The running build: always 1.",
		ConstLabels: prometheus.Labels{"version": bi.Short(), "revision": bi.Revision, "goversion": bi.Go},
	}, func() float64 { return 1 }))
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry returns the registry the metrics are in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// durationBuckets resolves sub-millisecond calls: 100µs, 250µs, 500µs,
// 1ms, ... up to the call timeout, which is the last bucket.
func durationBuckets(timeout time.Duration) []float64 {
	var b []float64
	for base := 1e-4; base < timeout.Seconds(); base *= 10 {
		for _, k := range []float64{1, 2.5, 5} {
			if v := base * k; v < timeout.Seconds() {
				b = append(b, v)
			}
		}
	}
	return append(b, timeout.Seconds())
}

// Received counts entries handed to the workers.
func (m *Metrics) Received(s engine.Source, n int) {
	m.received[s].Add(float64(n))
	if s == engine.FromClaimed {
		m.claims.Add(float64(n))
	}
}

// Calls counts the calls of a chunk, and observes their durations and
// their entries' ages.
func (m *Metrics) Calls(calls []engine.Call) {
	var by [6]int
	var durations, ages tally
	for i := range calls {
		by[calls[i].Result]++
		m.duration.observe(&durations, calls[i].Duration.Seconds())
		m.age.observe(&ages, calls[i].Age.Seconds())
	}
	m.duration.add(&durations)
	m.age.add(&ages)
	for r, n := range by {
		if n > 0 {
			m.calls[r].Add(float64(n))
		}
	}
}

func (m *Metrics) Acked(n int)   { m.acks.Add(float64(n)) }
func (m *Metrics) Retried(n int) { m.retries.Add(float64(n)) }
func (m *Metrics) DeadLettered(r engine.DeadReason, n int) {
	m.dead[r].Add(float64(n))
}
func (m *Metrics) LeaseLost(n int)   { m.leasesLost.Add(float64(n)) }
func (m *Metrics) Gone(n int)        { m.gone.Add(float64(n)) }
func (m *Metrics) Emitted(n int)     { m.emits.Add(float64(n)) }
func (m *Metrics) EmitsFailed(n int) { m.emitsFailed.Add(float64(n)) }
func (m *Metrics) GroupRecreated()   { m.recreated.Inc() }
func (m *Metrics) Suppressed(n int)  { m.suppressed.Add(float64(n)) }

// Watch exports the gauges of c (calls in flight, retries waiting,
// workers, Redis up and its outages), of script (reloads, its version) and
// of the group, read through in with opts at most every GroupEvery. Call it
// once, before the first scrape.
func (m *Metrics) Watch(c *engine.Consumer, script Script, in *inspect.Inspector, stream, group string, opts inspect.Options) {
	labels := prometheus.Labels{"stream": stream, "group": group}
	m.reg.MustRegister(&stateCollector{c: c, script: script, labels: labels})
	m.reg.MustRegister(&groupCollector{in: in, stream: stream, group: group, opts: opts})
}

// factory makes metrics with the group's labels in one registry.
type factory struct {
	reg    *prometheus.Registry
	labels prometheus.Labels
}

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: f.labels})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help, label string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: f.labels}, []string{label})
	f.reg.MustRegister(c)
	return c
}

func (f factory) histogram(name, help string, buckets []float64) *histogram {
	h := newHistogram(name, help, buckets, f.labels)
	f.reg.MustRegister(h)
	return h
}

// stateCollector reads the consumer's and the script's state at a scrape.
type stateCollector struct {
	c      *engine.Consumer
	script Script
	labels prometheus.Labels
}

var (
	descInFlight   = desc("topix_calls_in_flight", "Calls running now.")
	descWaiting    = desc("topix_retries_waiting", "Failed entries waiting for their next attempt.")
	descWorkers    = desc("topix_workers", "Workers of the consumer (--concurrency).")
	descRedisUp    = desc("topix_redis_up", "1 while Redis answers the consumer, 0 during an outage.")
	descOutages    = desc("topix_redis_outages_total", "Redis outages the consumer went through.")
	descOutageTime = desc("topix_redis_outage_seconds_total", "Total time Redis did not answer, the current outage included.")
	descReloads    = desc("topix_script_reloads_total", "Reloads of the script after its files changed, by result: ok, failed (it did not compile; the previous version runs on).", "result")
	descScript     = desc("topix_script_info", "The running script: its path and hash (its version). Always 1.", "script", "hash")
	descUp         = desc("topix_consumer_ready", "1 while the consumer is ready (see /readyz), 0 otherwise.")
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, append([]string{"stream", "group"}, labels...), nil)
}

func (s *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInFlight, descWaiting, descWorkers, descRedisUp, descOutages, descOutageTime, descReloads, descScript, descUp} {
		ch <- d
	}
}

func (s *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := s.c.State()
	lv := []string{s.labels["stream"], s.labels["group"]}
	gauge := func(d *prometheus.Desc, v float64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append(lv, extra...)...)
	}
	counter := func(d *prometheus.Desc, v float64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, append(lv, extra...)...)
	}
	gauge(descInFlight, float64(st.InFlight))
	gauge(descWaiting, float64(st.Waiting))
	gauge(descWorkers, float64(st.Workers))
	gauge(descRedisUp, b2f(st.RedisDown.IsZero()))
	counter(descOutages, float64(st.Outages))
	counter(descOutageTime, st.OutageTime.Seconds())
	gauge(descUp, b2f(Ready(st) == ""))
	if s.script != nil {
		ok, failed := s.script.Reloads()
		counter(descReloads, float64(ok), "ok")
		counter(descReloads, float64(failed), "failed")
		path, hash := s.script.Version()
		gauge(descScript, 1, path, hash)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// groupCollector exports the group's figures, read through inspect at
// most every GroupEvery; a scrape in between gets the last ones. When a
// read fails, the group gauges are left out of that scrape (Prometheus
// marks them stale) and topix_group_reads_failed_total counts it.
type groupCollector struct {
	in     *inspect.Inspector
	stream string
	group  string
	opts   inspect.Options

	mu     sync.Mutex
	last   inspect.Group
	at     time.Time
	ok     bool
	failed float64
}

var (
	descLag        = desc("topix_group_lag", "Entries of the stream not yet delivered to the group.")
	descLagExact   = desc("topix_group_lag_exact", "1 when Redis gave the lag, 0 when topix estimated it (entries were deleted, or the server is not Redis itself).")
	descPending    = desc("topix_group_pending", "Entries delivered to a consumer of the group and not yet acked.")
	descBacklog    = desc("topix_group_backlog", "Lag plus pending: the entries the group still has to process. Scale on this.")
	descLagAge     = desc("topix_group_lag_age_seconds", "Age of the oldest entry not yet delivered to the group; 0 without lag.")
	descOldest     = desc("topix_group_oldest_pending_age_seconds", "Age of the oldest pending entry; 0 with none.")
	descStuck      = desc("topix_group_stuck", "Pending entries idle longer than the claim idle: their consumer is dead or stuck (counted up to 1000).")
	descConsumers  = desc("topix_group_consumers", "Consumers registered in the group.")
	descAlive      = desc("topix_group_consumers_alive", "Consumers of the group with a live heartbeat.")
	descLength     = desc("topix_stream_length", "Entries in the stream.")
	descDeadLength = desc("topix_dead_letter_length", "Entries in the dead-letter stream.")
	descReadFailed = desc("topix_group_reads_failed_total", "Reads of the group's figures from Redis that failed.")
)

func (g *groupCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLag, descLagExact, descPending, descBacklog, descLagAge, descOldest, descStuck, descConsumers, descAlive, descLength, descDeadLength, descReadFailed} {
		ch <- d
	}
}

func (g *groupCollector) Collect(ch chan<- prometheus.Metric) {
	gr, ok, failed := g.read()
	lv := []string{g.stream, g.group}
	ch <- prometheus.MustNewConstMetric(descReadFailed, prometheus.CounterValue, failed, lv...)
	if !ok {
		return
	}
	for d, v := range map[*prometheus.Desc]float64{
		descLag: float64(gr.Lag), descLagExact: b2f(gr.LagExact), descPending: float64(gr.Pending), descBacklog: float64(gr.Backlog),
		descLagAge: gr.LagAge, descOldest: gr.OldestPending, descStuck: float64(gr.Stuck), descConsumers: float64(gr.Consumers),
		descAlive: float64(gr.Alive), descLength: float64(gr.Length), descDeadLength: float64(gr.DeadLetters),
	} {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
}

// read returns the group's figures, read again if the last read is older
// than GroupEvery; concurrent scrapes share one read.
func (g *groupCollector) read() (inspect.Group, bool, float64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Since(g.at) < GroupEvery {
		return g.last, g.ok, g.failed
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	gr, err := g.in.Group(ctx, g.stream, g.group, g.opts)
	g.at = time.Now()
	g.ok = err == nil && gr.State != "missing"
	if err != nil {
		g.failed++
	} else {
		g.last = gr
	}
	return g.last, g.ok, g.failed
}
