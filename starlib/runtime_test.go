package starlib_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/topix-dev/topix"
	"github.com/topix-dev/topix/engine"
	"github.com/topix-dev/topix/starlib"
)

// compile writes src to a temporary app.star and compiles target's
// function from it; the log goes to the returned buffer.
func compile(t testing.TB, src, fn string) (*starlib.Script, *starlib.Env, *bytes.Buffer, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "app.star")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	env := &starlib.Env{Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	s, err := starlib.Compile(path, fn, env)
	return s, env, &logs, err
}

func handle(t testing.TB, s *starlib.Script, env *starlib.Env, msg *engine.Message) engine.Result {
	t.Helper()
	h, err := starlib.NewRuntime(s, env).NewHandler(0)
	if err != nil {
		t.Fatal(err)
	}
	return h.Handle(context.Background(), msg)
}

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct{ in, path, fn, err string }{
		{"app.star", "app.star", "consumer", ""},
		{"app.star:bill", "app.star", "bill", ""},
		{"dir/app.star:_x1", "dir/app.star", "_x1", ""},
		{"app.star:", "", "", "nothing after the colon"},
		{"app.star:1x", "", "", `"1x" is not a function name`},
		{":consumer", "", "", "the file name is empty"},
	} {
		path, fn, err := starlib.ParseTarget(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseTarget(%q) err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || path != tc.path || fn != tc.fn {
			t.Errorf("ParseTarget(%q) = %q, %q, %v; want %q, %q", tc.in, path, fn, err, tc.path, tc.fn)
		}
	}
}

func TestDataIsAnOrderedByteExactDictOfStr(t *testing.T) {
	s, env, _, err := compile(t, `
def consumer(data):
    if type(data) != "dict":
        fail("data is a " + type(data))
    if list(data.keys()) != ["z", "a", "bin"]:
        fail("keys out of order: %r" % list(data.keys()))
    if list(data["bin"].elem_ords()) != [0, 255]:
        fail("binary value changed: %r" % data["bin"])
    if type(data["a"]) != "string":
        fail("value is a " + type(data["a"]))
    data["new"] = "x"  # each call gets its own dict
`, "consumer")
	if err != nil {
		t.Fatal(err)
	}
	if s.Arity() != 1 {
		t.Errorf("arity = %d, want 1", s.Arity())
	}
	msg := &engine.Message{ID: "1-0", Fields: []topix.Field{{Name: "z", Value: "1"}, {Name: "a", Value: "2"}, {Name: "bin", Value: "\x00\xff"}}}
	if res := handle(t, s, env, msg); res.Err != nil {
		t.Fatal(res.Err)
	}
}

func TestMsgCarriesMetadata(t *testing.T) {
	s, env, logs, err := compile(t, `
def consumer(data, msg):
    print(msg.id, msg.stream, msg.group, msg.consumer, msg.attempt)
`, "consumer")
	if err != nil {
		t.Fatal(err)
	}
	if s.Arity() != 2 {
		t.Errorf("arity = %d, want 2", s.Arity())
	}
	msg := &engine.Message{ID: "5-1", Stream: "orders", Group: "billing", Consumer: "c1", Attempt: 3, Fields: []topix.Field{{Name: "k", Value: "v"}}}
	if res := handle(t, s, env, msg); res.Err != nil {
		t.Fatal(res.Err)
	}
	if !strings.Contains(logs.String(), `msg="5-1 orders billing c1 3" script=`) || !strings.Contains(logs.String(), "app.star:3:10") {
		t.Errorf("print record = %q; want the metadata and the script position", logs.String())
	}
}

func TestFailureIsAPositionedCallError(t *testing.T) {
	s, env, _, err := compile(t, `
def consumer(data):
    check(data)

def check(data):
    fail("bad entry", data["k"])
`, "consumer")
	if err != nil {
		t.Fatal(err)
	}
	res := handle(t, s, env, &engine.Message{Fields: []topix.Field{{Name: "k", Value: "v"}}})
	var ce *starlib.CallError
	if !errors.As(res.Err, &ce) {
		t.Fatalf("err = %#v, want a *CallError", res.Err)
	}
	if !strings.HasSuffix(ce.Error(), "app.star:6:9: bad entry v") {
		t.Errorf("Error() = %q", ce.Error())
	}
	bt := ce.Backtrace()
	for _, want := range []string{"Traceback (most recent call last):", "app.star:3:10: in consumer", "app.star:6:9: in check", "Error in fail: bad entry v"} {
		if !strings.Contains(bt, want) {
			t.Errorf("backtrace lacks %q:\n%s", want, bt)
		}
	}
}

func TestGlobalsAreFrozen(t *testing.T) {
	s, env, _, err := compile(t, `
seen = []

def consumer(data):
    seen.append(data)
`, "consumer")
	if err != nil {
		t.Fatal(err)
	}
	res := handle(t, s, env, &engine.Message{Fields: []topix.Field{{Name: "k", Value: "v"}}})
	if res.Err == nil || !strings.Contains(res.Err.Error(), "app.star:5:16: append: cannot append to frozen list") {
		t.Errorf("err = %v, want a frozen-list error with its position", res.Err)
	}
}

func TestCancelledCallFailsAndTheThreadGoesOn(t *testing.T) {
	s, env, _, err := compile(t, `
def consumer(data):
    n = 0
    if data["k"] == "loop":
        for i in range(100000000):
            n += i
`, "consumer")
	if err != nil {
		t.Fatal(err)
	}
	h, _ := starlib.NewRuntime(s, env).NewHandler(0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := h.Handle(ctx, &engine.Message{Fields: []topix.Field{{Name: "k", Value: "loop"}}})
	if res.Err == nil || !strings.Contains(res.Err.Error(), "cancelled") {
		t.Fatalf("err = %v, want the call cancelled", res.Err)
	}
	if k := kindOf(res.Err); k != engine.CallError {
		t.Errorf("a cancelled call counted as %s, want error", k)
	}
	if res := h.Handle(context.Background(), &engine.Message{Fields: []topix.Field{{Name: "k", Value: "v"}}}); res.Err != nil {
		t.Errorf("the next call on the same thread failed: %v", res.Err)
	}
}

// writeTree writes files (path -> source) under a new directory and
// returns it.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, src := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoad(t *testing.T) {
	outside := writeTree(t, map[string]string{"secret.star": "X = 1\n"})
	dir := writeTree(t, map[string]string{
		"app/ok.star":      "load('lib/h.star', 'f')\ndef consumer(data):\n    f()\n",
		"app/lib/h.star":   "def f():\n    pass\n",
		"app/escape.star":  "load('../secret.star', 'X')\ndef consumer(data):\n    pass\n",
		"app/missing.star": "load('nope.star', 'X')\ndef consumer(data):\n    pass\n",
		"app/abs.star":     "load('" + filepath.Join(outside, "secret.star") + "', 'X')\ndef consumer(data):\n    pass\n",
		"app/cycle.star":   "load('lib/c1.star', 'A')\ndef consumer(data):\n    pass\n",
		"app/lib/c1.star":  "load('c2.star', 'B')\nA = 1\n",
		"app/lib/c2.star":  "load('c1.star', 'A')\nB = 1\n",
		"app/broken.star":  "load('lib/bad.star', 'X')\ndef consumer(data):\n    pass\n",
		"app/lib/bad.star": "X = \n",
		"secret.star":      "X = 1\n",
	})
	if err := os.Symlink(filepath.Join(outside, "secret.star"), filepath.Join(dir, "app", "link.star")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "app", "vialink.star"), []byte("load('link.star', 'X')\ndef consumer(data):\n    pass\n"), 0o644)

	s, err := starlib.Compile(filepath.Join(dir, "app", "ok.star"), "consumer", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Files) != 2 || !strings.HasSuffix(s.Files[1], filepath.Join("app", "lib", "h.star")) {
		t.Errorf("files = %v, want the script and its module", s.Files)
	}
	for _, tc := range []struct{ script, err string }{
		{"escape.star", "escape.star:1:1: cannot load ../secret.star: it is outside the script's directory"},
		{"missing.star", "missing.star:1:1: cannot load nope.star: no such file"},
		{"abs.star", "cannot load " + filepath.Join(outside, "secret.star") + ": give a path relative to abs.star"},
		{"cycle.star", "cannot load c1.star: it loads itself, through a cycle of loads"},
		{"broken.star", "broken.star:1:1: cannot load lib/bad.star: "},
		{"vialink.star", "cannot load link.star: it links to "},
	} {
		_, err := starlib.Compile(filepath.Join(dir, "app", tc.script), "consumer", nil)
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: err = %v, want %q", tc.script, err, tc.err)
		}
	}
}

func TestVersionHashCoversLoadedModules(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"app.star": "load('h.star', 'N')\ndef consumer(data):\n    pass\n",
		"h.star":   "N = 1\n",
	})
	v1, err := starlib.Compile(filepath.Join(dir, "app.star"), "consumer", nil)
	if err != nil {
		t.Fatal(err)
	}
	same, _ := starlib.Compile(filepath.Join(dir, "app.star"), "consumer", nil)
	os.WriteFile(filepath.Join(dir, "h.star"), []byte("N = 2\n"), 0o644)
	v2, _ := starlib.Compile(filepath.Join(dir, "app.star"), "consumer", nil)
	if v1.Hash != same.Hash || v1.Hash == v2.Hash {
		t.Errorf("hashes: %s, %s (same files), %s (module changed)", v1.Hash[:8], same.Hash[:8], v2.Hash[:8])
	}
}

func TestStepBudget(t *testing.T) {
	s, env, _, err := compile(t, "def consumer(data):\n    while True:\n        pass\n", "consumer")
	if err != nil {
		t.Fatal(err)
	}
	env.MaxSteps = 10000
	res := handle(t, s, env, &engine.Message{})
	if res.Err == nil || !strings.Contains(res.Err.Error(), "the call took more than the step budget (10000 steps)") {
		t.Fatalf("err = %v, want the step budget", res.Err)
	}
	if k := kindOf(res.Err); k != engine.CallStepLimit {
		t.Errorf("counted as %s, want step_limit", k)
	}
	// A script's own error that reads like one is an error.
	s, env, _, _ = compile(t, "def consumer(data):\n    fail(\"the call took more than the step budget (10000 steps)\")\n", "consumer")
	env.MaxSteps = 10000
	if k := kindOf(handle(t, s, env, &engine.Message{}).Err); k != engine.CallError {
		t.Errorf("fail() counted as %s, want error", k)
	}
}

// kindOf returns how the engine counts a call that failed with err.
func kindOf(err error) engine.CallResult {
	var k interface{ CallResult() engine.CallResult }
	if errors.As(err, &k) {
		return k.CallResult()
	}
	return engine.CallError
}

func TestCallTimeout(t *testing.T) {
	s, env, _, err := compile(t, "def consumer(data):\n    while True:\n        pass\n", "consumer")
	if err != nil {
		t.Fatal(err)
	}
	env.MaxSteps = 1 << 62
	env.CallTimeout = 50 * time.Millisecond
	h, _ := starlib.NewRuntime(s, env).NewHandler(0)
	res := h.Handle(context.Background(), &engine.Message{})
	if res.Err == nil || !strings.Contains(res.Err.Error(), "the call took longer than the call timeout (50ms)") {
		t.Fatalf("err = %v, want the call timeout", res.Err)
	}
	if k := kindOf(res.Err); k != engine.CallTimeout {
		t.Errorf("counted as %s, want timeout", k)
	}
	var bt interface{ Backtrace() string }
	if !errors.As(res.Err, &bt) {
		t.Error("the timeout lost its backtrace")
	}
}

func TestTopLevelRunsUnderTheLimits(t *testing.T) {
	path := filepath.Join(writeTree(t, map[string]string{"app.star": "while True:\n    pass\n"}), "app.star")
	_, err := starlib.Compile(path, "consumer", &starlib.Env{MaxSteps: 1000})
	if err == nil || !strings.Contains(err.Error(), "step budget") {
		t.Fatalf("err = %v, want the step budget", err)
	}
}

func TestOnlyRegularStarFilesAreRunOrLoaded(t *testing.T) {
	// topix.toml is valid Starlark: loading it would hand a script the
	// Redis password, and compiling a non-Starlark file would quote it.
	dir := writeTree(t, map[string]string{
		"topix.toml":      "redis_url = \"redis://:hunter2@db:6379\"\n",
		"secret.txt":      "password = hunter2\n",
		"toml.star":       "load('topix.toml', 'redis_url')\ndef consumer(data):\n    pass\n",
		"txt.star":        "load('secret.txt', 'password')\ndef consumer(data):\n    pass\n",
		"fifo.star":       "load('pipe.star', 'X')\ndef consumer(data):\n    pass\n",
		"dir.star":        "load('sub.star', 'X')\ndef consumer(data):\n    pass\n",
		"sub.star/x.star": "X = 1\n",
		"big.star":        "load('huge.star', 'X')\ndef consumer(data):\n    pass\n",
	})
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe.star"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "main-pipe.star"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "huge.star"), bytes.Repeat([]byte("# padding\n"), starlib.MaxScriptSize/10+1), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ script, err string }{
		{"toml.star", "cannot load topix.toml: only .star files can be loaded"},
		{"txt.star", "cannot load secret.txt: only .star files can be loaded"},
		{"fifo.star", "pipe.star is not a regular file (a named pipe)"},
		{"dir.star", "sub.star is a directory"},
		{"big.star", "a Starlark file may hold at most 16 MiB"},
		{"main-pipe.star", "script " + filepath.Join(dir, "main-pipe.star") + " is not a regular file (a named pipe); give a .star file"},
		{"topix.toml", "script " + filepath.Join(dir, "topix.toml") + ": not a .star file"},
		{"secret.txt", "not a .star file; topix runs and loads Starlark files named *.star only"},
	} {
		t.Run(tc.script, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, err := starlib.Compile(filepath.Join(dir, tc.script), "consumer", nil)
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Compile hangs")
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("the error quotes a file or spans lines: %q", err)
			}
		})
	}
}
