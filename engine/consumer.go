package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix"
)

// Options configure a Consumer. Stream, Group and Consumer are required;
// the others have defaults.
type Options struct {
	Stream   string
	Group    string
	Consumer string // this consumer's name in the group

	// Start is where a newly created group begins: "0" (default) for every
	// entry already in the stream, "$" for new entries only, or an entry id.
	Start string

	Concurrency int // workers; default 1
	Batch       int // COUNT of each read; default 20 per worker, at least 100

	// BatchBytes bounds the entries held in memory, read and not yet
	// processed: reads take fewer entries than Batch when they are big,
	// and wait while the held ones reach it. An entry bigger than it is
	// read and processed alone. Default DefaultBatchBytes.
	BatchBytes int64

	Block time.Duration // BLOCK of each read of new entries; default 1s

	// ShutdownTimeout bounds a graceful stop: the calls in flight and the
	// entries already read are processed until then; the rest stay pending.
	// Default 30s.
	ShutdownTimeout time.Duration

	// ClaimIdle is how long an entry may sit in any consumer's pending list
	// before this consumer claims it (XAUTOCLAIM) and processes it, as when
	// its consumer died. Entries this consumer works on are kept fresh, so
	// nobody claims them mid-call. Default 60s.
	ClaimIdle time.Duration

	// MaxAttempts is how many calls a failing entry gets before it goes
	// to the dead-letter stream. Calls cut short because their consumer
	// stopped count; deliveries that never reached a call do not (see
	// attempts.go). Default 5.
	MaxAttempts int

	// RetryBackoff is the wait before the second attempt of a failed entry;
	// it doubles with each attempt, up to MaxRetryBackoff. Default 1s.
	RetryBackoff time.Duration

	// DeadLetter is the stream that receives entries that failed their last
	// attempt, or that a Handler rejected (ErrDeadLetter). Default
	// "<Stream>:dead".
	DeadLetter string

	// PruneIdle, when above zero, removes other consumers of the group that
	// have been idle at least that long and own no pending entries. It
	// must be at least MinPruneIdle(Block), and above the Block of every
	// consumer of the group: a consumer waiting in a read looks idle.
	PruneIdle time.Duration

	// WorkerNice, when above zero, runs the workers' calls at that much
	// lower CPU priority (a higher nice value, at most 19) than the reading
	// and acking, on Linux. When Redis shares the machine, the calls then
	// cannot starve Redis and the goroutines that talk to it, which every
	// entry waits on; when nothing competes for the CPU it changes nothing.
	WorkerNice int

	// WaitReplicas, when above zero, makes each flush that adds emits or
	// dead letters WAIT until that many replicas have them, for up to
	// WaitTimeout (default 1s), before the entries are acked. Entries whose
	// emits are not confirmed in time are not acked: they stay pending and
	// are processed again (their emits may then be added twice). On a
	// Redis Cluster the emits go to each stream's master in a pipeline of
	// their own, with a WAIT each: all must confirm.
	WaitReplicas int
	WaitTimeout  time.Duration

	// ExactlyOnce adds an entry's emits (its dead letter included) and acks
	// it in one server-side script, atomically, and only while the entry is
	// pending: a second processing of an entry (after a crash, a reclaim,
	// a lapsed lease) adds no emit; see exactlyonce.go. It needs Redis 7.0
	// or later. On a Cluster every emit must hash to the stream's slot (a
	// call emitting elsewhere fails), and so must DeadLetter (whose
	// default becomes "{Stream}:dead" there).
	ExactlyOnce bool

	// Observer, if set, is told what the consumer does, for metrics.
	Observer Observer

	// Records, when set, makes the consumer keep the small records of
	// report.go in Redis (a heartbeat with Describe's Presence, per-minute
	// counts, the group's registry entry) that `topix stats` and the web
	// page read. They are bounded and expire, and never delay an entry.
	Records  bool
	Describe func() Presence

	Logger *slog.Logger // default slog.Default()
}

// DefaultBatchBytes is the default of Options.BatchBytes: a thousand
// times a batch of the 100-byte entries the benchmark uses, 16 entries of
// 1 MiB.
const DefaultBatchBytes = 16 << 20

// MaxConcurrency bounds Options.Concurrency: with WorkerNice each worker
// holds an OS thread, and Go ends the process past 10,000 threads.
const MaxConcurrency = 4096

// MaxRetryBackoff caps the wait between two attempts of a failed entry
// (unless RetryBackoff itself is longer).
const MaxRetryBackoff = time.Minute

func (o *Options) setDefaults() error {
	if o.Stream == "" {
		return errors.New("the stream name is empty")
	}
	if o.Group == "" {
		return errors.New("the group name is empty")
	}
	if o.Consumer == "" {
		return errors.New("the consumer name is empty")
	}
	if o.Start == "" {
		o.Start = "0"
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.Concurrency > MaxConcurrency {
		return fmt.Errorf("concurrency %d: use at most %d workers (with WorkerNice each holds an OS thread)", o.Concurrency, MaxConcurrency)
	}
	if o.Batch <= 0 {
		o.Batch = max(100, 20*o.Concurrency)
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = DefaultBatchBytes
	}
	if o.Block <= 0 {
		o.Block = time.Second
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 30 * time.Second
	}
	if o.ClaimIdle <= 0 {
		o.ClaimIdle = time.Minute
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 5
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = time.Second
	}
	if o.DeadLetter == "" {
		o.DeadLetter = o.Stream + ":dead"
	}
	if o.DeadLetter == o.Stream {
		return errors.New("the dead-letter stream is the stream itself; name another")
	}
	if o.PruneIdle > 0 && o.PruneIdle < MinPruneIdle(o.Block) {
		return fmt.Errorf("prune idle %s: use at least %s (3 × the read block of %s, and 1s): a consumer waiting in a read looks idle for up to a block",
			o.PruneIdle, MinPruneIdle(o.Block), o.Block)
	}
	if o.WorkerNice < 0 || o.WorkerNice > 19 {
		return fmt.Errorf("the worker nice value %d is out of range; use 0 (off) to 19", o.WorkerNice)
	}
	if o.WaitReplicas < 0 {
		return fmt.Errorf("wait replicas %d: use 0 (do not wait) or more", o.WaitReplicas)
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Stats counts what a Consumer did.
type Stats struct {
	Processed    int64 // calls that succeeded
	Failed       int64 // calls that failed
	DeadLettered int64 // entries added to the dead-letter stream (then acked)
	Claimed      int64 // entries claimed from other consumers' pending lists
	Acked        int64 // entries acked, including dead-lettered and deleted ones
	Pending      int64 // entries this consumer still owned when it stopped

	// Resent counts emits sent again because the connection failed before
	// Redis confirmed them: Redis may have added them already, so each may
	// be in its stream twice.
	Resent int64

	// Unreplicated counts entries left pending because the replicas did
	// not confirm their emits in time (WaitReplicas).
	Unreplicated int64

	// Suppressed counts, with ExactlyOnce, entries found acked already
	// when this consumer flushed them: another consumer (or an earlier try
	// of the flush whose answer was lost) acked them first, and their
	// emits were not added again.
	Suppressed int64
}

// Consumer reads one stream through a consumer group and runs a Handler on
// every entry. Make one with New and start it with Run.
type Consumer struct {
	rdb  redis.UniversalClient
	rt   Runtime
	opts Options
	log  *slog.Logger
	obs  Observer

	processed, failed, dead, claimed, acked, resent atomic.Int64
	unreplicated, suppressed                        atomic.Int64
	pending                                         int64
	slot                                            int // with ExactlyOnce on a Cluster, the stream's slot, which every emit must share; else -1

	inflight inflight    // entries this consumer holds: read, not yet acked
	attempts *attempts   // the attempt records of entries whose attempts matter after a stop
	budget   *byteBudget // bytes of the entries held in memory
	retries  retryQueue  // failed entries waiting for their next attempt
	redis    *outage     // logs Redis failures once per outage
	// maxBackoff caps the wait between tries during an outage.
	maxBackoff time.Duration
	entries    chan []*Message // to the workers, in chunks

	niceFailed  sync.Once // a failed WorkerNice is logged once
	noHeartbeat sync.Once // so is a heartbeat refused
	noRecords   sync.Once // and stats records refused

	seen position // where this consumer last saw the group

	phase    atomic.Int32 // a Phase
	noGroup  atomic.Bool  // the last read found the group gone
	progress atomic.Int64 // Unix ns of the last progress of a loop (see State)
	rep      reporter     // what the last report of the records sent

	stopBy atomic.Int64 // when a stop began: its deadline, in Unix ns (see opCtx)

	stopRun context.CancelFunc // stops the run as a signal would
	fatalMu sync.Mutex
	fatal   error // why the run stopped by itself, returned by Run
}

// New checks opts and returns a Consumer that is not yet running.
func New(rdb redis.UniversalClient, rt Runtime, opts Options) (*Consumer, error) {
	_, cluster := rdb.(*redis.ClusterClient)
	if opts.ExactlyOnce && cluster && opts.DeadLetter == "" && opts.Stream != "" {
		opts.DeadLetter = exactlyOnceDeadLetter(opts.Stream)
	}
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if opts.ExactlyOnce && cluster {
		if err := checkSlots(&opts); err != nil {
			return nil, err
		}
	}
	log := opts.Logger.With("stream", opts.Stream, "group", opts.Group, "consumer", opts.Consumer)
	c := &Consumer{rdb: rdb, rt: rt, opts: opts, log: log, obs: opts.Observer, redis: &outage{log: log}}
	if c.obs == nil {
		c.obs = nopObserver{}
	}
	c.rep.host, _ = os.Hostname()
	c.slot = -1
	if opts.ExactlyOnce && cluster {
		c.slot = topix.Slot(opts.Stream)
	}
	c.maxBackoff = maxBackoff
	if cluster {
		c.redis.each = c.reroute
		c.maxBackoff = clusterBackoff
	}
	c.inflight.m = map[string]time.Time{}
	c.attempts = newAttempts(AttemptsKey(opts.Stream, opts.Group), opts.Concurrency)
	c.budget = newByteBudget(opts.BatchBytes)
	c.retries.wake = make(chan struct{}, 1)
	return c, nil
}

// Stats returns what the consumer did so far.
func (c *Consumer) Stats() Stats {
	return Stats{
		Processed:    c.processed.Load(),
		Failed:       c.failed.Load(),
		DeadLettered: c.dead.Load(),
		Claimed:      c.claimed.Load(),
		Acked:        c.acked.Load(),
		Pending:      c.pending,
		Resent:       c.resent.Load(),
		Unreplicated: c.unreplicated.Load(),
		Suppressed:   c.suppressed.Load(),
	}
}

// DeadLetter is the dead-letter stream the consumer adds to.
func (c *Consumer) DeadLetter() string { return c.opts.DeadLetter }

// Run creates the group if needed, then consumes until ctx is cancelled.
//
// Cancelling ctx is a graceful stop: no new read is started, the entries
// already read are processed (for at most ShutdownTimeout; after that the
// calls in flight get a cancelled context and the rest stay pending), acks
// are flushed, and the consumer is deleted from the group if it owns no
// pending entries. Run then returns nil.
//
// Run returns an error when it cannot start (the group cannot be created,
// the stream's key is not a stream, the Runtime fails to make a Handler),
// and when it stopped because of an error that retrying cannot fix: a
// *PermissionError (the ACL user may not run a command it needs), or the
// stream's key replaced by another type (ErrWrongType). Then it stops as
// gracefully as Redis allows. Other Redis errors are logged and retried.
func (c *Consumer) Run(ctx context.Context) error {
	defer c.phase.Store(int32(PhaseStopped))
	ctx, c.stopRun = context.WithCancel(ctx)
	defer c.stopRun()
	handlers := make([]Handler, c.opts.Concurrency)
	for i := range handlers {
		h, err := c.rt.NewHandler(i)
		if err != nil {
			return fmt.Errorf("start worker %d: %w", i, err)
		}
		handlers[i] = h
	}
	begun := make(chan error, 1)
	go func() { begun <- c.begin(ctx) }()
	select {
	case err := <-begun:
		if err != nil {
			return err
		}
	case <-ctx.Done():
		// Stopped while starting: nothing was read, so nothing is left to
		// finish, and a command Redis does not answer (sent before the
		// stop, it has no deadline) is not waited for past the timeout.
		select {
		case err := <-begun:
			if errors.Is(err, context.Canceled) {
				return nil
			}
			if err != nil {
				return err
			}
		case <-time.After(c.opts.ShutdownTimeout):
			c.log.Warn("stopped while starting: Redis did not answer within the shutdown timeout; nothing was read")
			return nil
		}
	}
	c.advanced()
	c.phase.Store(int32(PhaseRunning))
	c.log.Info("consuming", "workers", c.opts.Concurrency, "batch", c.opts.Batch, "batch_bytes", c.opts.BatchBytes,
		"claim_idle", c.opts.ClaimIdle.String(), "max_attempts", c.opts.MaxAttempts, "dead_letter", c.opts.DeadLetter,
		"worker_nice", c.opts.WorkerNice, "exactly_once", c.opts.ExactlyOnce)

	// hard is cancelled ShutdownTimeout after ctx: it cuts the calls in
	// flight and the entries not yet started.
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	stopTimer := context.AfterFunc(ctx, func() {
		c.phase.Store(int32(PhaseDraining))
		c.log.Info("stopping: finishing the entries already read", "timeout", c.opts.ShutdownTimeout.String())
		c.stopBy.Store(time.Now().Add(c.opts.ShutdownTimeout).UnixNano())
		time.AfterFunc(c.opts.ShutdownTimeout, cancelHard)
	})
	defer stopTimer()

	// Entries travel in chunks and acks in slices: a channel operation
	// (and the wake-up of a parked goroutine) per chunk, not per entry.
	c.entries = make(chan []*Message, 2*c.opts.Concurrency)
	acks := make(chan []ack, 64) // room for what the workers finish during a flush

	// Three producers feed the workers: the reader (own pending entries,
	// then new ones), the claimer (entries idle in any pending list) and
	// the retrier (failed entries whose backoff is over). All stop at ctx.
	var producers, workers sync.WaitGroup
	producers.Go(func() { c.read(ctx, hard) })
	producers.Go(func() { c.claimLoop(ctx, hard) })
	producers.Go(func() { c.retryLoop(ctx, hard) })
	go func() {
		producers.Wait()
		close(c.entries)
	}()
	for w, h := range handlers {
		workers.Go(func() { c.work(hard, w, h, acks) })
	}
	leasing, stopLease := context.WithCancel(context.WithoutCancel(ctx))
	var lease sync.WaitGroup
	lease.Go(func() { c.leaseLoop(leasing) })
	lease.Go(func() { c.markLoop(leasing) })
	if c.opts.Records {
		lease.Go(func() { c.reportLoop(leasing) })
	}
	ackerDone := make(chan struct{})
	go func() {
		defer close(ackerDone)
		c.ackLoop(hard, acks)
	}()

	workers.Wait()
	stopLease()
	// With Redis not answering, the lease, the marker and the last acks
	// are not waited for past the shutdown deadline: the entries they were
	// for stay pending, and are delivered again.
	leaseDone := make(chan struct{})
	go func() { lease.Wait(); close(leaseDone) }()
	if waitOr(leaseDone, hard) {
		close(acks)
		waitOr(ackerDone, hard)
	}
	if hard.Err() != nil && c.stopBy.Load() != 0 {
		select {
		case <-ackerDone:
		default:
			c.log.Warn("the shutdown timeout passed with acks still unsent (Redis does not answer); their entries stay pending and are delivered again")
		}
	}

	c.finish()
	c.fatalMu.Lock()
	defer c.fatalMu.Unlock()
	return c.fatal
}

// waitOr waits for done, or for stop; it reports whether done came first.
func waitOr(done <-chan struct{}, stop context.Context) bool {
	select {
	case <-done:
		return true
	case <-stop.Done():
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
}

// stopWith stops the run because of err, which retrying cannot fix, as a
// signal would: the entries read are finished and acked if Redis lets it.
// Run returns the first such err.
func (c *Consumer) stopWith(err error) {
	c.fatalMu.Lock()
	defer c.fatalMu.Unlock()
	if c.fatal == nil {
		c.fatal = err
		c.log.Error("stopping: Redis refused what retrying cannot fix", "err", err.Error())
		c.stopRun()
	}
}

// work runs one worker: one Handler, one entry at a time. A success goes
// to the acker; a failure is retried later, or dead-lettered after its
// last attempt.
func (c *Consumer) work(hard context.Context, w int, h Handler, acks chan<- []ack) {
	if c.opts.WorkerNice > 0 {
		if err := lowerPriority(c.opts.WorkerNice); err != nil {
			c.niceFailed.Do(func() {
				c.log.Warn("could not lower the CPU priority of the workers; they run at the normal one", "err", err)
			})
		}
	}
	var calls []Call // of the chunk, for the Observer
	for {
		var chunk []*Message
		select {
		case next, ok := <-c.entries:
			if !ok {
				return
			}
			chunk = next
		case <-hard.Done():
			// The shutdown timed out: what is still queued stays pending. A
			// read that Redis does not answer is not waited for.
			return
		}
		done := make([]ack, 0, len(chunk))
		var clock callClock
		if c.opts.Observer != nil {
			clock.reset()
		}
		for _, msg := range chunk {
			a, ok := c.process(hard, w, h, msg, &calls, &clock)
			switch {
			case ok && msg.redelivered:
				// An entry delivered again after a stop is acked before the
				// next call starts: if that call ends this consumer too,
				// this one must not come back charged with an attempt.
				c.flush(hard, []ack{a})
				if c.opts.Observer != nil {
					clock.reset() // the flush is not the next call's
				}
			case ok:
				done = append(done, a)
			}
		}
		c.budget.release(sizeOf(chunk))
		if len(calls) > 0 {
			c.obs.Calls(calls)
			calls = calls[:0]
		}
		c.advanced()
		if len(done) > 0 {
			acks <- done
		}
	}
}

// process runs one entry and says what to ack for it, if anything now.
//
// With an Observer, the call is timed (see callClock) and appended to
// calls.
func (c *Consumer) process(hard context.Context, w int, h Handler, msg *Message, calls *[]Call, clock *callClock) (ack, bool) {
	if hard.Err() != nil {
		c.inflight.remove(msg.ID) // shutdown timed out: it stays pending for the next start
		return ack{}, false
	}
	var res Result
	switch {
	case msg.deadReason != "":
		// Its dead letter was refused before: try adding it again, without
		// another call.
		return ack{id: msg.ID, emits: []Emit{c.deadLetter(msg, errors.New(msg.deadReason))}, dead: true, why: msg.deadWhy, msg: msg}, true
	case msg.redelivered && msg.Attempt > int64(c.opts.MaxAttempts):
		// Its attempts are used up, and the last did not end: its
		// consumer stopped while processing it. Calling it again might
		// end this one too.
		started := msg.Attempt - 1
		msg.Attempt = started
		msg.deadWhy = DeadCrashed
		res.Err = fmt.Errorf("the consumer stopped while processing it %d %s, in %d %s (it died, was killed, or a shutdown cut the call short)",
			started-msg.failed, plural(started-msg.failed, "time"), started, plural(started, "attempt"))
	case msg.redelivered && !c.recordStart(context.WithoutCancel(hard), msg):
		// Without its record a crash in this call would go uncounted:
		// leave it pending; it is claimed again after ClaimIdle.
		c.inflight.remove(msg.ID)
		return ack{}, false
	default:
		slot := &c.attempts.running[w]
		slot.m.Store(msg)
		res = h.Handle(hard, msg)
		slot.m.Store(nil)
		if c.opts.Observer != nil {
			start, end := clock.tick()
			slot.done.Store(end)
			*calls = append(*calls, Call{Result: resultOf(res.Err), Duration: time.Duration(end - start), Age: ageAt(msg.ID, start)})
		}
	}
	if res.Err == nil && c.opts.ExactlyOnce && len(res.Emits) > 0 {
		res.Err = c.checkEmits(res.Emits)
	}
	if res.Err == nil {
		c.processed.Add(1)
		a := ack{id: msg.ID, emits: res.Emits}
		if len(res.Emits) > 0 {
			a.msg = msg // for its retry or dead letter, should Redis refuse an emit
		}
		return a, true
	}
	return c.failCall(hard, msg, res.Err)
}

// callClock times the calls of a chunk with one reading of the monotonic
// clock a call (a wall-clock reading costs twice as much, which a drain of
// hundreds of thousands of entries a second notices): a call starts when
// the one before it in the chunk ended, the engine's work in between, a
// fraction of a microsecond, counting as the next call's; the wall time is
// the chunk's start plus the monotonic time since.
type callClock struct {
	base   time.Time
	baseNs int64         // base in Unix ns
	last   time.Duration // when the last call ended, after base
}

func (k *callClock) reset() {
	k.base = time.Now()
	k.baseNs, k.last = k.base.UnixNano(), 0
}

// tick ends a call and returns when it started and ended, in Unix ns.
func (k *callClock) tick() (start, end int64) {
	now := time.Since(k.base)
	start, end = k.baseNs+int64(k.last), k.baseNs+int64(now)
	k.last = now
	return start, end
}

// ageAt returns the age at t (Unix ns) of the entry id: t minus the
// milliseconds its id starts with.
func ageAt(id string, t int64) time.Duration {
	var ms int64
	for i := 0; i < len(id) && id[i] != '-'; i++ {
		ms = ms*10 + int64(id[i]-'0')
	}
	return time.Duration(t - ms*int64(time.Millisecond))
}

// failCall handles an entry whose call failed with err (or whose emits
// Redis refused): it is retried after its backoff, or dead-lettered after
// its last attempt, or at once for ErrDeadLetter; then the dead letter is
// returned, to be flushed like an ack.
func (c *Consumer) failCall(hard context.Context, msg *Message, err error) (ack, bool) {
	c.failed.Add(1)
	rejected := errors.Is(err, ErrDeadLetter)
	last := msg.Attempt >= int64(c.opts.MaxAttempts)
	attrs := append([]any{"id", msg.ID, "attempt", msg.Attempt}, ErrorAttrs(err)...)
	switch {
	case hard.Err() != nil:
		c.log.Warn("entry cut short by the shutdown; it stays pending", attrs...)
		c.inflight.remove(msg.ID)
	case rejected || last:
		c.log.Warn("entry failed; sending it to the dead-letter stream", append(attrs, "dead_letter", c.opts.DeadLetter)...)
		msg.deadReason = err.Error()
		if rejected {
			msg.deadWhy = DeadRejected
		}
		return ack{id: msg.ID, emits: []Emit{c.deadLetter(msg, err)}, dead: true, why: msg.deadWhy, msg: msg}, true
	default:
		wait := c.retryDelay(msg.Attempt)
		c.log.Warn("entry failed; it stays pending and is retried", append(attrs, "retry_in", wait.String())...)
		// Recorded, so that a stop before the retry does not forget it.
		c.obs.Retried(1)
		c.attempts.enqueue(msg.ID, record{msg.Attempt, msg.failed + 1})
		c.retries.add(retry{id: msg.ID, attempt: msg.Attempt, failed: msg.failed + 1, due: time.Now().Add(wait)})
	}
	return ack{}, false
}

// opCtx returns the context for a command the engine sends on its own
// behalf: parent, or once a stop began, parent bounded by the stop's
// deadline, so that a Redis that stopped answering cannot stretch a stop
// past ShutdownTimeout. (go-redis honours the deadline of a command in
// flight when its client has ContextTimeoutEnabled, as topix's has; it
// refuses to start one past it in any case.)
func (c *Consumer) opCtx(parent context.Context) (context.Context, context.CancelFunc) {
	if d := c.stopBy.Load(); d != 0 {
		return context.WithDeadline(parent, time.Unix(0, d))
	}
	return parent, func() {}
}

// finish deletes this consumer from the group unless it owns pending
// entries, and logs what the run did.
func (c *Consumer) finish() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ctx, cancelOp := c.opCtx(ctx)
	defer cancelOp()
	// The last report is a courtesy: never waited for long, and not tried
	// while Redis does not answer (a frozen Redis must not stretch a stop).
	if since, _, _ := c.redis.state(); since.IsZero() && ctx.Err() == nil {
		rctx, cancelReport := context.WithTimeout(ctx, finalReportTimeout)
		done := make(chan struct{})
		go func() { defer close(done); c.finalReport(rctx) }()
		select {
		case <-done:
		case <-rctx.Done():
		}
		cancelReport()
	}
	pending, err := deleteConsumerIfIdle(ctx, c.rdb, c.opts.Stream, c.opts.Group, c.opts.Consumer)
	c.pending = pending
	switch {
	case err != nil && ctx.Err() != nil:
		c.log.Warn("no time left within the shutdown timeout to remove the consumer from the group; it stays, and its next start (or --prune-idle) tidies it")
	case err != nil:
		c.log.Warn("could not tidy the consumer up", "err", err)
	case pending > 0:
		c.log.Warn("kept the consumer in the group: it owns pending entries, which a start with the same --name processes first",
			"pending", pending)
	default:
		c.log.Debug("deleted the consumer from the group")
	}
	attrs := []any{"processed", c.processed.Load(), "failed", c.failed.Load(), "dead_lettered", c.dead.Load(),
		"claimed", c.claimed.Load(), "acked", c.acked.Load(), "pending", pending}
	if n := c.resent.Load(); n > 0 {
		attrs = append(attrs, "emits_resent", n) // each may be in its stream twice
	}
	if n := c.unreplicated.Load(); n > 0 {
		attrs = append(attrs, "unreplicated", n) // processed again
	}
	if c.opts.ExactlyOnce {
		attrs = append(attrs, "duplicates_suppressed", c.suppressed.Load())
	}
	c.log.Info("stopped", attrs...)
}

// begin checks the server for ExactlyOnce, makes sure the group exists
// and writes the first heartbeat: what a start does before it reads.
func (c *Consumer) begin(ctx context.Context) error {
	if c.opts.ExactlyOnce {
		if err := c.checkExactlyOnce(ctx); err != nil {
			return err
		}
	}
	if err := c.ensureGroup(ctx); err != nil {
		return err
	}
	c.rep.started = time.Now()
	// The first heartbeat is bounded: a Redis slow to answer must not hold
	// the start for the client's read timeout (or two: a report is two
	// round trips). The report loop writes the next one.
	hctx, cancelBeat := context.WithTimeout(ctx, firstBeatTimeout)
	c.heartbeat(hctx)
	cancelBeat()
	return nil
}

// firstBeatTimeout bounds the heartbeat a start writes before it reads.
const firstBeatTimeout = 500 * time.Millisecond

// finalReportTimeout bounds the last report of a stop.
const finalReportTimeout = 500 * time.Millisecond

// loopFailed handles the error of a command a loop sent at sent, doing
// what: an error that retrying cannot fix (a permission refused, the
// stream replaced by another type) stops the consumer; a vanished group is
// the reader's to create again; anything else is an outage, logged once,
// and the loop retries.
func (c *Consumer) loopFailed(what, command, key string, err error, sent time.Time) {
	if perm := c.permanent(command, key, err); perm != nil {
		c.stopWith(perm)
	} else if classify(err) != errNoGroup {
		c.redis.fail(what, err, sent)
	}
}

// outage logs a Redis failure once when it starts, then once a minute
// while it lasts, and once when it is over, instead of once per retry. One
// outage is shared by the readers, the claimer, the lease and the acker, so
// that Redis going away is one line, not one per loop.
//
// Commands overlap: a command sent before Redis went away may succeed after
// another one failed, and one sent before Redis came back may fail after
// another one succeeded. Each report therefore says when its command was
// sent, and only a success sent after the outage began ends it, and only a
// failure sent after the last recovery starts a new one.
type outage struct {
	log       *slog.Logger
	mu        sync.Mutex
	since     time.Time     // when the current outage was first seen; zero when none
	last      time.Time     // when it was last logged
	recovered time.Time     // when the last outage ended
	count     int64         // outages so far
	total     time.Duration // how long the ended ones lasted
	// each, if set, is told of every failure, logged or not: a cluster
	// client reloads its slot map then (Consumer.reroute).
	each func(error)
}

// fail reports that a command sent at sent failed while doing what.
func (o *outage) fail(what string, err error, sent time.Time) {
	if o.each != nil {
		o.each(err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	now := time.Now()
	if o.since.IsZero() {
		if sent.Before(o.recovered) {
			return // part of the outage that just ended
		}
		o.since, o.last = now, now
		o.count++
		o.log.Error("Redis failed; retrying with backoff", "while", what, "err", err)
		return
	}
	if now.Sub(o.last) >= time.Minute {
		o.last = now
		o.log.Error("Redis still failing; retrying with backoff", "while", what, "err", err, "for", now.Sub(o.since).Round(time.Second))
	}
}

// ok reports that a command sent at sent succeeded.
func (o *outage) ok(sent time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.since.IsZero() && !sent.Before(o.since) {
		o.log.Info("Redis works again", "after", time.Since(o.since).Round(time.Millisecond))
		o.total += time.Since(o.since)
		o.since, o.recovered = time.Time{}, time.Now()
	}
}

// state returns when the current outage began (zero if none), the
// outages so far and their total duration, the current one's included.
func (o *outage) state() (since time.Time, count int64, total time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	total = o.total
	if !o.since.IsZero() {
		total += time.Since(o.since)
	}
	return o.since, o.count, total
}

// backoff waits before retry n (0-based): 50ms doubling to c.maxBackoff,
// or less if ctx is done first. It reports whether ctx is still live.
func (c *Consumer) backoff(ctx context.Context, n int) bool {
	d := 50 * time.Millisecond << min(n, 4)
	d = min(d, c.maxBackoff)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// maxBackoff is the longest wait between two tries during an outage. It
// bounds how long topix takes to notice that Redis is back, or that a
// replica took over (a Sentinel failover): reading resumes at most this
// long after. Half a second of retries costs a down Redis a refused
// connection per loop, nothing more.
//
// On a Cluster it is clusterBackoff: there each failed try also asks for
// the slot map to be reloaded, in the background, and the next try is the
// first to use the new one; after a master died, reading resumes within
// two tries of its replica's promotion.
const (
	maxBackoff     = 500 * time.Millisecond
	clusterBackoff = 100 * time.Millisecond
)

func plural(n int64, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
