package starlib

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"go.starlark.net/starlark"
)

// loader compiles a script and the modules it loads with load(), each
// once, and remembers their files for hashing and watching. Modules are
// found relative to the file that loads them and must lie in the script's
// own directory tree: a script cannot reach other files through load.
type loader struct {
	env      *Env
	dir      string // the script's directory, absolute
	root     string // the same, symlinks resolved
	files    []string
	sources  [][]byte
	warnings []string
	modules  map[string]*module // by absolute path
}

type module struct {
	globals starlark.StringDict
	err     error
	loading bool
}

func newLoader(path, abs string, env *Env) (*loader, error) {
	root, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return nil, fmt.Errorf("script %s: %w", path, err)
	}
	return &loader{env: env, dir: filepath.Dir(abs), root: root, modules: map[string]*module{}}, nil
}

// exec compiles and runs one file and freezes its globals. name is how
// positions show the file: the path as the user gave it for the script,
// and a path relative to it for loaded modules.
func (l *loader) exec(name, abs string, src []byte) (starlark.StringDict, error) {
	l.files = append(l.files, abs)
	l.sources = append(l.sources, src)
	predeclared := l.env.predeclared()
	file, prog, err := starlark.SourceProgramOptions(fileOptions, name, src, predeclared.Has)
	if err != nil {
		return nil, compileError(err)
	}
	l.warnings = append(l.warnings, selfCalls(file)...)
	thread := l.env.newThread("load "+name, "the top level of "+name)
	thread.Load = l.load
	// The top level runs under the same limits as a call.
	g := l.env.watchdog().newGuard(thread, fmt.Sprintf("the top level took longer than the call timeout (%s)", l.env.callTimeout()))
	deadline := g.begin(context.Background(), l.env.callTimeout())
	globals, err := prog.Init(thread, predeclared)
	if why := g.end(deadline); why != "" && err == nil {
		err = errors.New(why)
	}
	if err != nil {
		return nil, runError(err)
	}
	globals.Freeze()
	return globals, nil
}

// load implements load("module.star", ...) for thread.Load.
func (l *loader) load(thread *starlark.Thread, name string) (starlark.StringDict, error) {
	from := thread.CallFrame(0).Pos.Filename()
	fromAbs, err := filepath.Abs(from)
	if err != nil {
		return nil, err
	}
	if filepath.IsAbs(name) {
		return nil, fmt.Errorf("give a path relative to %s", filepath.Base(from))
	}
	if filepath.Ext(name) != StarExt {
		return nil, fmt.Errorf("only %s files can be loaded; a module is a Starlark file named *%s", StarExt, StarExt)
	}
	abs := filepath.Join(filepath.Dir(fromAbs), name)
	if !within(l.dir, abs) {
		return nil, fmt.Errorf("it is outside the script's directory %s; modules must live under it", l.dir)
	}
	real, err := filepath.EvalSymlinks(abs)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("no such file %s", abs)
	case err != nil:
		return nil, err
	}
	if !within(l.root, real) {
		return nil, fmt.Errorf("it links to %s, outside the script's directory %s; modules must live under it", real, l.dir)
	}

	if m, ok := l.modules[real]; ok {
		if m.loading {
			return nil, errors.New("it loads itself, through a cycle of loads")
		}
		return m.globals, m.err
	}
	m := &module{loading: true}
	l.modules[real] = m
	src, err := readStar("module", real)
	if err != nil {
		m.err = err
	} else {
		display := filepath.Join(filepath.Dir(from), name)
		m.globals, m.err = l.exec(display, real, src)
	}
	m.loading = false
	return m.globals, m.err
}

// within reports whether path lies in the tree of dir.
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// hash is the version of the script: its files' names and contents.
func (l *loader) hash() string {
	h := sha256.New()
	for i, f := range l.files {
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(l.sources[i]))
		h.Write(l.sources[i])
	}
	return hex.EncodeToString(h.Sum(nil))
}
