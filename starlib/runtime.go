package starlib

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/topix-dev/topix/engine"
)

// Runtime runs a Script's consumer function on stream entries. It is an
// engine.Runtime: each worker gets a handler with its own starlark.Thread,
// and all of them share the current Script, whose globals are frozen.
type Runtime struct {
	env    *Env
	script atomic.Pointer[Script]

	reloadsOK, reloadsFailed atomic.Int64
}

// NewRuntime returns a Runtime that runs s.
func NewRuntime(s *Script, env *Env) *Runtime {
	r := &Runtime{env: env}
	r.script.Store(s)
	return r
}

// Script returns the version of the script that new calls run.
func (r *Runtime) Script() *Script { return r.script.Load() }

// Version returns the running script's path and hash.
func (r *Runtime) Version() (path, hash string) {
	s := r.script.Load()
	return s.Path, s.Hash
}

// Reloads returns how many reloads swapped a new version in, and how many
// failed (it did not compile; the previous version runs on).
func (r *Runtime) Reloads() (ok, failed int64) {
	return r.reloadsOK.Load(), r.reloadsFailed.Load()
}

// NewHandler returns the handler of one worker.
func (r *Runtime) NewHandler(worker int) (engine.Handler, error) {
	h := &handler{rt: r, thread: r.env.newThread(fmt.Sprintf("worker-%d", worker), "the call")}
	h.guard = r.env.watchdog().newGuard(h.thread, fmt.Sprintf("the call took longer than the call timeout (%s)", r.env.callTimeout()))
	h.thread.SetLocal(callKey, &h.call)
	return h, nil
}

// callKey is the thread-local key of the call in progress.
const callKey = "topix.call"

// call is what a thread knows of the call in progress: the entry, and the
// entries emit() recorded.
type call struct {
	msg   *engine.Message // nil between calls
	emits []engine.Emit
}

// currentCall returns the call in progress on thread, or nil outside a
// call (at a script's top level).
func currentCall(thread *starlark.Thread) *call {
	c, _ := thread.Local(callKey).(*call)
	if c == nil || c.msg == nil {
		return nil
	}
	return c
}

// handler is one worker's: its Starlark thread runs one call at a time.
type handler struct {
	rt     *Runtime
	thread *starlark.Thread
	call   call
	args   [2]starlark.Value

	guard *guard // the watchdog's: call timeout, cancellation, memory
}

// Handle calls the consumer function on one entry, within the step budget
// (the interpreter's own, exact), the call timeout and the memory ceiling
// (the watchdog's); the call is cancelled when ctx is. A call that
// outlived a limit fails, even if it returned before it was stopped.
func (h *handler) Handle(ctx context.Context, msg *engine.Message) engine.Result {
	s := h.rt.script.Load()
	env := h.rt.env
	args := starlark.Tuple(h.args[:s.arity])
	args[0] = entryDict(msg, env.Bytes)
	if s.arity == 2 {
		args[1] = msgStruct(msg)
	}
	h.call = call{msg: msg}
	h.thread.Steps = 0
	deadline := h.guard.begin(ctx, env.callTimeout())

	_, err := starlark.Call(h.thread, s.fn, args, nil)
	why := h.guard.end(deadline)
	if why != "" && err == nil {
		err = errors.New(why)
	}

	emits := h.call.emits
	h.call = call{}
	h.args = [2]starlark.Value{}
	if err != nil {
		return engine.Result{Err: h.limited(runError(err), why)}
	}
	return engine.Result{Emits: emits}
}

// limited marks err with the limit that stopped the call, if one did: the
// watchdog's why (the call timeout, the memory ceiling), or the step limit.
func (h *handler) limited(err error, why string) error {
	kind := engine.CallError
	switch {
	case why == h.guard.timeout:
		kind = engine.CallTimeout
	case strings.HasPrefix(why, memoryExceeded):
		kind = engine.CallMemory
	case why == "" && h.thread.ExecutionSteps() >= h.rt.env.maxSteps():
		kind = engine.CallStepLimit
	default:
		return err
	}
	return &limitError{err, kind}
}

// limitError is the error of a call that a limit stopped.
type limitError struct {
	err  error
	kind engine.CallResult
}

func (e *limitError) Error() string                 { return e.err.Error() }
func (e *limitError) Unwrap() error                 { return e.err }
func (e *limitError) CallResult() engine.CallResult { return e.kind }

// entryDict converts an entry's fields to the dict a consumer gets: str
// keys and values (bytes with asBytes) holding the exact bytes, in the
// entry's order. Should a field name appear twice in an entry (XADD allows
// it), the last value wins.
func entryDict(msg *engine.Message, asBytes bool) *starlark.Dict {
	d := starlark.NewDict(len(msg.Fields))
	for _, f := range msg.Fields {
		// Setting str or bytes keys in a new dict cannot fail.
		if asBytes {
			_ = d.SetKey(starlark.Bytes(f.Name), starlark.Bytes(f.Value))
		} else {
			_ = d.SetKey(starlark.String(f.Name), starlark.String(f.Value))
		}
	}
	return d
}

// msgStruct converts an entry's metadata to the msg a two-parameter
// consumer gets: msg.id, msg.stream, msg.group, msg.consumer, msg.attempt.
func msgStruct(msg *engine.Message) *starlarkstruct.Struct {
	s := starlarkstruct.FromStringDict(starlark.String("msg"), starlark.StringDict{
		"id":       starlark.String(msg.ID),
		"stream":   starlark.String(msg.Stream),
		"group":    starlark.String(msg.Group),
		"consumer": starlark.String(msg.Consumer),
		"attempt":  starlark.MakeInt64(msg.Attempt),
	})
	s.Freeze()
	return s
}

// CallError is a Starlark error raised by a script: its message starts
// with the script position where it happened, and Backtrace gives the
// whole call stack.
type CallError struct {
	ev *starlark.EvalError
}

// Error returns "file:line:col: message", the position being the innermost
// frame of the script (not of a builtin like fail).
func (e *CallError) Error() string {
	for i := len(e.ev.CallStack) - 1; i >= 0; i-- {
		if pos := e.ev.CallStack[i].Pos; pos.Line > 0 {
			return pos.String() + ": " + e.message()
		}
	}
	return e.message()
}

// message is the error's text, without the "fail: " that the fail builtin
// puts before its message.
func (e *CallError) message() string {
	return strings.TrimPrefix(e.ev.Msg, "fail: ")
}

// Backtrace returns the Starlark traceback, ending with the error.
func (e *CallError) Backtrace() string {
	stack := e.ev.CallStack
	in := ""
	if last := len(stack) - 1; last >= 0 && stack[last].Pos.Line == 0 {
		in = " in " + stack[last].Name // a builtin: fail, len, ...
		stack = stack[:last]
	}
	return fmt.Sprintf("%sError%s: %s", stack, in, e.message())
}

// Unwrap returns the Starlark error.
func (e *CallError) Unwrap() error { return e.ev }
