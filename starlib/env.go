package starlib

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	starmath "go.starlark.net/lib/math"
	startime "go.starlark.net/lib/time"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
)

// Defaults of the per-call limits.
const (
	DefaultMaxSteps    = 100_000_000 // about a second or two of pure Starlark work
	DefaultCallTimeout = 30 * time.Second
)

// Env is the world a script runs in: where its print() and log records
// go, how entries are handed to it, the limits of each call, and the names
// every script can use without defining them. One Env serves every version
// of a script and every worker; it must not change once in use.
type Env struct {
	Logger *slog.Logger // default slog.Default()

	// Bytes hands data to the consumer as a dict of bytes to bytes, like
	// the original's Dict[bytes, bytes], instead of str to str.
	Bytes bool

	MaxSteps    uint64        // Starlark steps one call may take; 0 means DefaultMaxSteps
	CallTimeout time.Duration // wall-clock time one call may take; 0 means DefaultCallTimeout

	// MaxMemory is the heap, in bytes, above which every call in flight
	// (and a top level being run, as by a reload) is cancelled with
	// "memory limit exceeded"; 0 means no ceiling. See the watchdog.
	MaxMemory uint64

	dogOnce sync.Once
	dog     *watchdog
}

// defaultWatchdog serves a nil Env.
var defaultWatchdog = &watchdog{}

// watchdog returns the Env's watchdog, made on first use.
func (e *Env) watchdog() *watchdog {
	if e == nil {
		return defaultWatchdog
	}
	e.dogOnce.Do(func() { e.dog = &watchdog{maxMemory: e.MaxMemory} })
	return e.dog
}

func (e *Env) logger() *slog.Logger {
	if e == nil || e.Logger == nil {
		return slog.Default()
	}
	return e.Logger
}

func (e *Env) maxSteps() uint64 {
	if e == nil || e.MaxSteps == 0 {
		return DefaultMaxSteps
	}
	return e.MaxSteps
}

func (e *Env) callTimeout() time.Duration {
	if e == nil || e.CallTimeout <= 0 {
		return DefaultCallTimeout
	}
	return e.CallTimeout
}

// predeclared returns the names defined in every script besides
// Starlark's universe (len, str, fail, ...): the modules log, json, time
// and math, the functions emit and dead_letter, and the struct constructor.
func (e *Env) predeclared() starlark.StringDict {
	return starlark.StringDict{
		"log":         e.logModule(),
		"emit":        emitBuiltin,
		"dead_letter": deadLetterBuiltin,
		"json":        jsonModule,
		"time":        startime.Module,
		"math":        starmath.Module,
		"struct":      starlark.NewBuiltin("struct", starlarkstruct.Make),
	}
}

// newThread makes a thread whose print() writes a log record carrying the
// script position of the call (and the entry's id during a call), and
// which stops after the step budget. what names what it runs in errors:
// "the call", "the top level of app.star".
func (e *Env) newThread(name, what string) *starlark.Thread {
	log := e.logger()
	maxSteps := e.maxSteps()
	thread := &starlark.Thread{
		Name: name,
		Print: func(thread *starlark.Thread, msg string) {
			log.LogAttrs(context.Background(), slog.LevelInfo, msg, scriptAttrs(thread)...)
		},
		OnMaxSteps: func(thread *starlark.Thread) {
			thread.Cancel(fmt.Sprintf("%s took more than the step budget (%d steps)", what, maxSteps))
		},
	}
	thread.SetMaxExecutionSteps(maxSteps)
	return thread
}
