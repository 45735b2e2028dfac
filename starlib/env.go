package starlib

import (
	"log/slog"

	"go.starlark.net/starlark"
)

// Env is the world a script runs in: where its print() and log records
// go, and the names every script can use without defining them. One Env
// serves every version of a script and every worker.
type Env struct {
	Logger *slog.Logger // default slog.Default()
}

func (e *Env) logger() *slog.Logger {
	if e == nil || e.Logger == nil {
		return slog.Default()
	}
	return e.Logger
}

// predeclared returns the names defined in every script besides
// Starlark's universe (len, str, fail, ...).
func (e *Env) predeclared() starlark.StringDict {
	return starlark.StringDict{}
}

// newThread makes a thread whose print() writes a log record carrying the
// script position of the call.
func (e *Env) newThread(name string) *starlark.Thread {
	log := e.logger()
	return &starlark.Thread{
		Name: name,
		Print: func(thread *starlark.Thread, msg string) {
			log.Info(msg, "script", thread.CallFrame(1).Pos.String())
		},
	}
}
