package starlib

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarktest"

	"github.com/topix-dev/topix"
	"github.com/topix-dev/topix/engine"
)

// TestStarlarkFiles runs the script-level tests in testdata/*.star. A file
// is cut into chunks at lines "---"; each chunk runs on its own, with the
// names every script has, plus:
//
//	assert             go.starlark.net's assert module (eq, ne, true, contains, fails)
//	freeze(x)          freeze a value, as topix freezes globals
//	consume(fn, data, bytes=False)
//	                   call fn(data) as the engine would and return what it emitted,
//	                   a list of (stream, fields dict, maxlen) tuples; an error
//	                   in fn is raised again
//	logs()             the log output so far, as a string
func TestStarlarkFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/*.star")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/*.star: %v", err)
	}
	assertModule, err := starlarktest.LoadAssertModule()
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, chunk := range strings.Split(string(src), "\n---\n") {
			// Keep line numbers right: pad each chunk with the lines before it.
			offset := strings.Count(strings.Join(strings.Split(string(src), "\n---\n")[:i], "\n---\n"), "\n")
			if i > 0 {
				offset++
			}
			code := strings.Repeat("\n", offset) + chunk
			t.Run(fmt.Sprintf("%s:%d", filepath.Base(file), offset+1), func(t *testing.T) {
				var logs bytes.Buffer
				env := &Env{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
				predeclared := env.predeclared()
				for name, v := range assertModule {
					predeclared[name] = v
				}
				predeclared["consume"] = starlark.NewBuiltin("consume", consume(env))
				predeclared["logs"] = starlark.NewBuiltin("logs", func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
					return starlark.String(logs.String()), nil
				})
				l, err := newLoader(file, mustAbs(t, file), env)
				if err != nil {
					t.Fatal(err)
				}
				thread := env.newThread(file, "the top level of "+file)
				thread.Load = l.load
				starlarktest.SetReporter(thread, t)
				_, err = starlark.ExecFileOptions(fileOptions, thread, file, code, predeclared)
				if err != nil {
					if ev, ok := err.(*starlark.EvalError); ok {
						t.Fatal(ev.Backtrace())
					}
					t.Fatal(err)
				}
			})
		}
	}
}

func mustAbs(t *testing.T, path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// consume is the test builtin that calls a function the way a worker does.
func consume(env *Env) func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
	return func(thread *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var (
			fn      *starlark.Function
			data    *starlark.Dict
			asBytes bool
		)
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "fn", &fn, "data", &data, "bytes?", &asBytes); err != nil {
			return nil, err
		}
		msg := &engine.Message{ID: "1-1", Stream: "s", Group: "g", Consumer: "c", Attempt: 1}
		for _, kv := range data.Items() {
			name, _ := starlark.AsString(kv[0])
			value, _ := starlark.AsString(kv[1])
			msg.Fields = append(msg.Fields, topix.Field{Name: name, Value: value})
		}
		arity, err := checkParams(fn)
		if err != nil {
			return nil, err
		}
		script := &Script{Path: "test", Func: fn.Name(), fn: fn, arity: arity}
		e := &Env{Logger: env.Logger, Bytes: asBytes, MaxSteps: env.MaxSteps, CallTimeout: env.CallTimeout, MaxMemory: env.MaxMemory}
		h, _ := NewRuntime(script, e).NewHandler(0)
		res := h.Handle(context.Background(), msg)
		if res.Err != nil {
			return nil, res.Err
		}
		var emits []starlark.Value
		for _, e := range res.Emits {
			fields := starlark.NewDict(len(e.Fields))
			for _, f := range e.Fields {
				fields.SetKey(starlark.String(f.Name), starlark.String(f.Value))
			}
			var maxlen starlark.Value = starlark.None
			if e.MaxLen > 0 {
				maxlen = starlark.MakeInt64(e.MaxLen)
			}
			emits = append(emits, starlark.Tuple{starlark.String(e.Stream), fields, maxlen})
		}
		return starlark.NewList(emits), nil
	}
}
