package starlib

import (
	"context"
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
}

// NewRuntime returns a Runtime that runs s.
func NewRuntime(s *Script, env *Env) *Runtime {
	r := &Runtime{env: env}
	r.script.Store(s)
	return r
}

// Script returns the version of the script that new calls run.
func (r *Runtime) Script() *Script { return r.script.Load() }

// NewHandler returns the handler of one worker.
func (r *Runtime) NewHandler(worker int) (engine.Handler, error) {
	return &handler{rt: r, thread: r.env.newThread(fmt.Sprintf("worker-%d", worker))}, nil
}

type handler struct {
	rt     *Runtime
	thread *starlark.Thread
}

// Handle calls the consumer function on one entry. The call is cancelled
// when ctx is.
func (h *handler) Handle(ctx context.Context, msg *engine.Message) engine.Result {
	s := h.rt.script.Load()
	args := make(starlark.Tuple, s.arity)
	args[0] = EntryDict(msg)
	if s.arity == 2 {
		args[1] = MsgStruct(msg)
	}
	stop := context.AfterFunc(ctx, func() { h.thread.Cancel("the call was cancelled: " + context.Cause(ctx).Error()) })
	_, err := starlark.Call(h.thread, s.fn, args, nil)
	if !stop() {
		h.thread.Uncancel() // the thread lives on for the next entry
	}
	if err != nil {
		return engine.Result{Err: runError(err)}
	}
	return engine.Result{}
}

// EntryDict converts an entry's fields to the dict a consumer gets: str
// keys and values holding the exact bytes, in the entry's order. Should a
// field name appear twice in an entry (XADD allows it), the last value wins.
func EntryDict(msg *engine.Message) *starlark.Dict {
	d := starlark.NewDict(len(msg.Fields))
	for _, f := range msg.Fields {
		_ = d.SetKey(starlark.String(f.Name), starlark.String(f.Value)) // a new dict of strings cannot fail
	}
	return d
}

// MsgStruct converts an entry's metadata to the msg a two-parameter
// consumer gets: msg.id, msg.stream, msg.group, msg.consumer, msg.attempt.
func MsgStruct(msg *engine.Message) *starlarkstruct.Struct {
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
