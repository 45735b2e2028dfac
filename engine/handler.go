// Package engine runs a consumer group over one Redis stream: it creates the
// group, reads entries (its own pending ones first, then new ones), hands
// each to a Handler on a fixed pool of workers, and acks the entries whose
// call succeeded, in batches. It knows nothing of Starlark: a runtime
// (package starlib, or a Go function in tests) plugs in through Runtime and
// Handler.
//
//	stream --XREADGROUP--> reader --chan--> workers (Handler) --chan--> acker --XADD+XACK--> stream
//
// What it does can be watched: an Observer (observer.go) is told counts as
// they happen, State says what it is doing now, and with Options.Records it
// keeps the small records of report.go in Redis, which package inspect reads.
package engine

import (
	"context"
	"errors"

	"github.com/topix-dev/topix"
	"github.com/topix-dev/topix/internal/logging"
)

// Message is one stream entry handed to a Handler.
//
// The engine owns a Message: a Handler must not keep it, or its Fields
// slice, after Handle returns. Field names and values are Go strings holding
// the entry's exact bytes, in the order the entry stores them.
type Message struct {
	ID       string // entry id, e.g. "1700000000000-0"
	Stream   string
	Group    string
	Consumer string // this consumer's name in the group
	// Attempt is the number of this call among the calls started on the
	// entry: 1 for the first. Deliveries that never reached a call (the
	// entry was read with others by a consumer that died first) do not
	// count; calls cut short by a dead consumer do (see attempts.go).
	Attempt int64
	Fields  []topix.Field

	redelivered bool       // delivered again after a stop: its attempts come from its record
	failed      int64      // calls on it known to have ended in a failure
	size        int64      // bytes of the reply it was read from that it holds
	deadReason  string     // set once it is to be dead-lettered: why
	deadWhy     DeadReason // and the kind of why, for the Observer
}

// Emit is an entry that a call asks to add to a stream. It is added only
// if the call succeeded, before the entry that caused it is acked.
type Emit struct {
	Stream string
	Fields []topix.Field
	MaxLen int64 // trim Stream to about this many entries; 0 does not trim
}

// Result is the outcome of one call.
type Result struct {
	// Err is nil when the entry was processed. Then the engine adds Emits
	// (in order) and, once every one of them was added, acks the entry. If
	// Redis refuses one of them (WRONGTYPE, OOM, NOPERM on its key), the
	// entry counts as failed with that error, as below.
	//
	// A non-nil Err means the entry was NOT processed: it is logged once,
	// Emits are dropped, and the entry stays pending and is called again
	// after a backoff. After its last attempt (Options.MaxAttempts) it is
	// added to the dead-letter stream with Err, and only then acked. If Err
	// has a method Backtrace() string, the backtrace is logged with it, and
	// kept in the dead letter (topix.backtrace).
	Err error

	Emits []Emit
}

// Handler processes entries one at a time; it is owned by one worker
// goroutine, so it needs no locking for its own state.
//
// What each outcome of a call does to the entry:
//
//	outcome                         entry                                   attempt counted
//	Err == nil                      Emits added, then acked                 yes
//	Err == nil, Redis refuses an    as Err != nil, with Redis's error       yes
//	  emit (WRONGTYPE, OOM, ...)      (the emits added before it stay)
//	Err != nil, attempts left       stays pending; retried after backoff    yes
//	Err != nil, last attempt        dead-lettered with Err, then acked      yes
//	Err wraps ErrDeadLetter         dead-lettered at once, then acked       yes
//	ctx cancelled (forced shutdown) stays pending for the next start        yes, if it ran over 10ms
//	the process died mid-call       pending; delivered again                yes, if it ran over 10ms
//	read, never started (a stop)    pending; delivered again                no
//	Redis unreachable at the ack    pending; delivered again (a duplicate)  yes
//
// An attempt is a call that started. An entry delivered again (after its
// consumer stopped, or claimed from a dead one) gets the attempt after the
// last recorded one, and one whose attempts were used up by calls that
// never ended is dead-lettered without another call; see attempts.go for
// how attempts survive a stop. A dead letter that Redis refuses is tried
// again after the backoff, without a call. A Redis error that retrying
// cannot fix (NOPERM on the stream, the stream replaced by another type)
// stops the consumer: Run returns it.
//
// Handle is called once per delivery of an entry. It must return when ctx
// is cancelled (on a forced shutdown), with a non-nil Err if the entry was
// not fully processed. It must not panic: a runtime turns its script's
// errors into Result.Err. Handle must not keep msg after it returns.
type Handler interface {
	Handle(ctx context.Context, msg *Message) Result
}

// Runtime makes the Handlers of a consumer, one per worker, before the
// first entry is read. An error from NewHandler stops the consumer before
// it reads anything.
type Runtime interface {
	NewHandler(worker int) (Handler, error)
}

// ErrorAttrs returns the log attributes of a failed call: "err" with the
// error's text and, when the error has a Backtrace() string method (as
// Starlark errors do), the backtrace under logging.BacktraceKey, which the
// text log prints as indented lines.
func ErrorAttrs(err error) []any {
	attrs := []any{"err", err.Error()}
	if bt := backtrace(err); bt != "" {
		attrs = append(attrs, logging.BacktraceKey, bt)
	}
	return attrs
}

// backtrace returns the backtrace of err, if it has one, or "".
func backtrace(err error) string {
	var bt interface{ Backtrace() string }
	if errors.As(err, &bt) {
		return bt.Backtrace()
	}
	return ""
}

// HandlerFunc is a Handler and a Runtime made of one function, shared by
// all workers; the function must be safe for concurrent use. It suits Go
// consumers and tests.
type HandlerFunc func(ctx context.Context, msg *Message) Result

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, msg *Message) Result { return f(ctx, msg) }

// NewHandler returns f itself for every worker.
func (f HandlerFunc) NewHandler(int) (Handler, error) { return f, nil }
