package engine

import (
	"errors"
	"time"
)

// Observer is told what a Consumer does, for metrics. The consumer's loops
// call it concurrently, with counts: once per chunk of entries, batch or
// flush, never per entry where a batch exists. Its methods must be cheap
// and must not block or call back into the Consumer. Options.Observer nil
// observes nothing.
//
// Gauges (calls in flight, entries waiting for a retry, whether Redis
// answers) are not pushed: Consumer.State reads them when asked.
type Observer interface {
	// Received: n entries handed to the workers, read from source.
	Received(source Source, n int)
	// Calls: the calls of one chunk of entries, in the order they ran.
	Calls(calls []Call)
	// Acked: n entries acked (XACK answered), including dead-lettered ones
	// and those whose data was gone.
	Acked(n int)
	// Retried: n failed entries left pending, to be called again after
	// their backoff.
	Retried(n int)
	// DeadLettered: n entries added to the dead-letter stream, and acked.
	DeadLettered(reason DeadReason, n int)
	// LeaseLost: n entries in progress found claimed by another consumer
	// (this one's lease on them lapsed); they may be processed twice.
	LeaseLost(n int)
	// Gone: n pending entries whose data was deleted or trimmed before they
	// were processed; acked away, nothing to process.
	Gone(n int)
	// Emitted: n emits added by Redis (dead letters not included);
	// EmitsFailed: n emits Redis refused, which failed their entries.
	Emitted(n int)
	EmitsFailed(n int)
	// GroupRecreated: the group was gone and this consumer created it again.
	GroupRecreated()
	// Suppressed: with ExactlyOnce, n entries found acked already when
	// flushed (another consumer did first); their emits were not added.
	Suppressed(n int)
}

// Source is where an entry handed to the workers came from.
type Source uint8

const (
	FromNew     Source = iota // a read of new entries (XREADGROUP >)
	FromOwn                   // this consumer's own pending entries, at start (XREADGROUP 0)
	FromClaimed               // claimed from another consumer, idle too long (XAUTOCLAIM)
	FromRetry                 // a failed entry delivered again after its backoff (XCLAIM)
)

// Sources lists the sources, for exporters that resolve labels once.
var Sources = []Source{FromNew, FromOwn, FromClaimed, FromRetry}

func (s Source) String() string {
	return [...]string{"new", "own_pending", "claimed", "retry"}[s]
}

// Call is one call of a Handler, as an Observer sees it.
type Call struct {
	Result   CallResult
	Duration time.Duration // how long Handle took
	Age      time.Duration // the entry's age when the call started: now minus its id's time
}

// CallResult is how a call ended.
type CallResult uint8

const (
	CallOK         CallResult = iota // Err == nil
	CallError                        // any other error
	CallTimeout                      // stopped by the call timeout
	CallStepLimit                    // stopped by the step limit
	CallMemory                       // stopped by the memory ceiling
	CallDeadLetter                   // the Handler asked for a dead letter (ErrDeadLetter)
)

// CallResults lists the results, for exporters that resolve labels once.
var CallResults = []CallResult{CallOK, CallError, CallTimeout, CallStepLimit, CallMemory, CallDeadLetter}

func (r CallResult) String() string {
	return [...]string{"ok", "error", "timeout", "step_limit", "memory", "dead_letter"}[r]
}

// A Handler tells which limit stopped a call by returning an error that
// has a method CallResult() CallResult (the Starlark runtime's do);
// otherwise a failure is CallError, or CallDeadLetter for ErrDeadLetter.
func resultOf(err error) CallResult {
	if err == nil {
		return CallOK
	}
	if errors.Is(err, ErrDeadLetter) {
		return CallDeadLetter
	}
	var k interface{ CallResult() CallResult }
	if errors.As(err, &k) {
		return k.CallResult()
	}
	return CallError
}

// DeadReason is why an entry went to the dead-letter stream.
type DeadReason uint8

const (
	DeadAttempts DeadReason = iota // its last attempt failed
	DeadRejected                   // the Handler asked for it (ErrDeadLetter)
	DeadCrashed                    // its attempts were used up by calls that never ended

	numDeadReasons = 3
)

// DeadReasons lists the reasons, for exporters that resolve labels once.
var DeadReasons = []DeadReason{DeadAttempts, DeadRejected, DeadCrashed}

func (r DeadReason) String() string {
	return [...]string{"attempts", "rejected", "crashed"}[r]
}

// nopObserver is the Observer of a Consumer given none.
type nopObserver struct{}

func (nopObserver) Received(Source, int)         {}
func (nopObserver) Calls([]Call)                 {}
func (nopObserver) Acked(int)                    {}
func (nopObserver) Retried(int)                  {}
func (nopObserver) DeadLettered(DeadReason, int) {}
func (nopObserver) LeaseLost(int)                {}
func (nopObserver) Gone(int)                     {}
func (nopObserver) Emitted(int)                  {}
func (nopObserver) EmitsFailed(int)              {}
func (nopObserver) GroupRecreated()              {}
func (nopObserver) Suppressed(int)               {}
