// Package starlib is topix's Starlark runtime: it compiles a consumer
// script, checks the function it names, and runs that function on stream
// entries, one starlark.Thread per worker. It implements engine.Runtime.
//
// The script contract (see docs and the README): a script defines
//
//	def consumer(data):        # data: dict of field name -> value, both str
//	def consumer(data, msg):   # msg.id, msg.stream, msg.group, msg.consumer, msg.attempt
//
// Returning (with any value) acks the entry; an error (fail(...) or any
// runtime error) leaves it pending.
package starlib

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.starlark.net/resolve"
	"go.starlark.net/starlark"
	"go.starlark.net/syntax"
)

// DefaultFunc is the function a script target names when it names none.
const DefaultFunc = "consumer"

// fileOptions are the Starlark dialect of consumer scripts: while loops,
// sets and top-level if/for are allowed; globals cannot be reassigned.
var fileOptions = &syntax.FileOptions{Set: true, While: true, TopLevelControl: true}

// ParseTarget splits a script target "path/to/app.star[:func]" into the
// path and the function name (DefaultFunc when none is given). What
// follows the last colon is the function only if it is a name: in
// "dir:x/app.star" the colon is part of the path. A path that does not
// exist and reads as a dotted module name, the form of the original
// Python Topix ("pkg.mod:func"), names pkg/mod.star.
func ParseTarget(target string) (path, fn string, err error) {
	path, fn = target, DefaultFunc
	if i := strings.LastIndex(target, ":"); i >= 0 {
		switch after := target[i+1:]; {
		case after == "":
			return "", "", fmt.Errorf("script %q: nothing after the colon; write %s:FUNC, or leave out the colon for %s", target, target[:i], DefaultFunc)
		case isIdent(after):
			path, fn = target[:i], after
		case strings.Contains(after, "/") || strings.HasSuffix(after, ".star"):
			// A path with a colon in it: "dir:x/app.star".
		default:
			return "", "", fmt.Errorf("script %q: %q is not a function name (FUNC is a name like consumer, after the last colon)", target, after)
		}
	}
	if path == "" {
		return "", "", fmt.Errorf("script %q: the file name is empty; write app.star or app.star:FUNC", target)
	}
	if mod := moduleFile(path); mod != "" {
		path = mod
	}
	return path, fn, nil
}

// moduleFile returns the file a dotted module name like "pkg.mod" stands
// for, pkg/mod.star, when path is such a name, does not exist itself, and
// that file does.
func moduleFile(path string) string {
	if strings.HasSuffix(path, ".star") {
		return ""
	}
	if _, err := os.Stat(path); err == nil {
		return ""
	}
	parts := strings.Split(path, ".")
	for _, p := range parts {
		if !isIdent(p) {
			return ""
		}
	}
	file := filepath.Join(parts...) + ".star"
	if st, err := os.Stat(file); err == nil && st.Mode().IsRegular() {
		return file
	}
	return ""
}

// Script is one compiled version of a consumer script and the modules it
// loads: its globals, run once and frozen, and the function that consumes
// entries. A Script is immutable and shared by all workers.
type Script struct {
	Path       string   // the file, as it was given
	Func       string   // the consumer function's name
	Files      []string // the script and every module it loads, as absolute paths
	Hash       string   // SHA-256 of the files' names and contents: the version
	Generation int      // 1 for the first version, one more for each reload
	Warnings   []string // what may fail when it runs, as file:line:col: message (topix check prints them)

	fn    *starlark.Function
	arity int // 1: fn(data); 2: fn(data, msg)
}

// Arity is the number of arguments the consumer function takes: 1 (data)
// or 2 (data, msg).
func (s *Script) Arity() int { return s.arity }

// Compile reads, compiles and runs the top level of the script at path and
// of the modules it loads, and checks that fn is a function taking 1 or 2
// positional parameters. Every error is one line that names the file, and
// the position (file:line:col) when there is one; a *CompileError holds
// all the errors of a file that does not compile.
func Compile(path, fn string, env *Env) (*Script, error) {
	path, src, err := readScript(path)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	l, err := newLoader(path, abs, env)
	if err != nil {
		return nil, err
	}
	globals, err := l.exec(path, abs, src)
	if err != nil {
		return nil, err
	}

	v, ok := globals[fn]
	if !ok {
		return nil, fmt.Errorf("%s: no function %q; %s", path, fn, defines(globals))
	}
	f, ok := v.(*starlark.Function)
	if !ok {
		return nil, fmt.Errorf("%s: %q is of type %s, not a function; define it with def %s(data)", path, fn, v.Type(), fn)
	}
	arity, err := checkParams(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %s", f.Position(), err)
	}
	return &Script{Path: path, Func: fn, Files: l.files, Hash: l.hash(), Generation: 1, Warnings: l.warnings, fn: f, arity: arity}, nil
}

// checkParams accepts fn(data) and fn(data, msg), with defaults or not.
func checkParams(f *starlark.Function) (int, error) {
	n := f.NumParams() - f.NumKwonlyParams()
	if f.HasVarargs() {
		n--
	}
	if f.HasKwargs() {
		n--
	}
	params := make([]string, 0, n)
	for i := range n {
		name, _ := f.Param(i)
		params = append(params, name)
	}
	// Keyword-only parameters follow the positional ones.
	for i := n; i < n+f.NumKwonlyParams(); i++ {
		if f.ParamDefault(i) == nil {
			name, _ := f.Param(i)
			return 0, fmt.Errorf("%s has a required keyword-only parameter %q; a consumer takes (data) or (data, msg)", f.Name(), name)
		}
	}
	if n < 1 || n > 2 {
		return 0, fmt.Errorf("%s(%s) takes %d positional parameters; a consumer takes 1 (data) or 2 (data, msg)",
			f.Name(), strings.Join(params, ", "), n)
	}
	return n, nil
}

// readScript reads a script, trying path + ".star" when path has no
// extension and does not exist (so app:consumer works as in the original).
func readScript(path string) (string, []byte, error) {
	if filepath.Ext(path) == "" {
		if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
			if _, err := os.Lstat(path + StarExt); err == nil {
				path += StarExt
			}
		}
		if st, err := os.Stat(path); err == nil && st.IsDir() {
			return "", nil, fmt.Errorf("script %s is a directory; give a .star file, like %s", path, filepath.Join(path, "app.star"))
		}
	}
	src, err := readStar("script", path)
	return path, src, err
}

// CompileError is a file that does not compile: every syntax or resolve
// error in it, each as file:line:col: message.
type CompileError struct {
	Errors []string
}

// Error returns the first error, noting how many more there are.
func (e *CompileError) Error() string {
	if n := len(e.Errors) - 1; n > 0 {
		return fmt.Sprintf("%s (and %d more %s)", e.Errors[0], n, plural(n, "error"))
	}
	return e.Errors[0]
}

func compileError(err error) error {
	var list resolve.ErrorList
	if errors.As(err, &list) {
		ce := &CompileError{}
		for _, e := range list {
			ce.Errors = append(ce.Errors, e.Error())
		}
		return ce
	}
	return &CompileError{Errors: []string{err.Error()}}
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// runError makes a *CallError of a Starlark error raised by a call or a
// top level; a cancelled computation's message is just the reason (a
// timeout, the step budget, a shutdown).
func runError(err error) error {
	var ev *starlark.EvalError
	if errors.As(err, &ev) {
		ev.Msg = strings.TrimPrefix(ev.Msg, "Starlark computation cancelled: ")
		return &CallError{ev: ev}
	}
	return err
}

// defines lists a script's functions, for a "no function" error.
func defines(globals starlark.StringDict) string {
	var fns []string
	for name, v := range globals {
		if _, ok := v.(*starlark.Function); ok {
			fns = append(fns, name)
		}
	}
	if len(fns) == 0 {
		return "the script defines no function"
	}
	slices.Sort(fns)
	return "the script defines " + strings.Join(fns, ", ")
}

func isIdent(s string) bool {
	for i, r := range s {
		if !(r == '_' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || i > 0 && '0' <= r && r <= '9') {
			return false
		}
	}
	return s != ""
}
