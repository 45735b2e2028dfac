package starlib_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/topix-dev/topix"
	"github.com/topix-dev/topix/engine"
	"github.com/topix-dev/topix/starlib"
)

// expensiveLoop is a call that spends its time inside builtins: each str()
// of a big list is one Starlark step and several milliseconds of work, so
// a limit checked by counting steps is not reached for hours.
const expensiveLoop = `
def consumer(data):
    big = list(range(100000))
    while True:
        s = str(big)
        t = sorted(big, reverse = True)
`

// handleWithin runs one call and fails the test if it takes longer than
// limit; it returns the result and how long the call took.
func handleWithin(t *testing.T, h engine.Handler, ctx context.Context, limit time.Duration) (engine.Result, time.Duration) {
	t.Helper()
	done := make(chan engine.Result, 1)
	start := time.Now()
	go func() { done <- h.Handle(ctx, &engine.Message{ID: "1-1"}) }()
	select {
	case res := <-done:
		return res, time.Since(start)
	case <-time.After(limit):
		t.Fatalf("the call was not stopped within %s", limit)
		return engine.Result{}, 0
	}
}

func newHandler(t *testing.T, src string, env *starlib.Env) engine.Handler {
	t.Helper()
	path := filepath.Join(t.TempDir(), "app.star")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if env.Logger == nil {
		env.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := starlib.Compile(path, "consumer", env)
	if err != nil {
		t.Fatal(err)
	}
	h, err := starlib.NewRuntime(s, env).NewHandler(0)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestCallTimeoutStopsALoopOfExpensiveBuiltins(t *testing.T) {
	h := newHandler(t, expensiveLoop, &starlib.Env{CallTimeout: 200 * time.Millisecond})
	// The bound is the timeout plus one str() or sorted() of the list, with
	// room for a loaded machine under the race detector.
	res, took := handleWithin(t, h, context.Background(), 10*time.Second)
	if res.Err == nil || !strings.Contains(res.Err.Error(), "the call took longer than the call timeout (200ms)") {
		t.Fatalf("err = %v, want the call timeout", res.Err)
	}
	t.Logf("stopped %s after its start (timeout 200ms)", took)
}

func TestShutdownStopsALoopOfExpensiveBuiltins(t *testing.T) {
	h := newHandler(t, expensiveLoop, &starlib.Env{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	res, _ := handleWithin(t, h, ctx, 10*time.Second)
	if res.Err == nil || !strings.Contains(res.Err.Error(), "cancelled") {
		t.Fatalf("err = %v, want the call cancelled", res.Err)
	}
}

func TestACallThatOverranInsideABuiltinFails(t *testing.T) {
	// One sorted() of 200,000 ints takes far longer than 1ms, and the
	// call returns right after it: it overran, so it must not succeed.
	h := newHandler(t, `
def consumer(data):
    sorted(range(200000), reverse = True)
`, &starlib.Env{CallTimeout: time.Millisecond})
	res, _ := handleWithin(t, h, context.Background(), 10*time.Second)
	if res.Err == nil || !strings.Contains(res.Err.Error(), "call timeout (1ms)") {
		t.Fatalf("err = %v, want the call timeout", res.Err)
	}
}

// memoryBombs each allocate far more than the 64 MiB ceiling the tests
// set, in a few steps.
var memoryBombs = map[string]string{
	"doubling string": `
def consumer(data):
    s = "x"
    for i in range(40):
        s = s + s
`,
	"growing list": `
def consumer(data):
    l = [0]
    for i in range(40):
        l = l + l
`,
	"list of a range": `
def consumer(data):
    parts = []
    for i in range(1000):
        parts.append(list(range(1 << 20)))
`,
	"strings of 16 MiB": `
def consumer(data):
    parts = []
    for i in range(1000):
        parts.append("y" * (16 << 20))
`,
}

func TestMemoryCeilingFailsTheCallAndThreadGoesOn(t *testing.T) {
	for name, src := range memoryBombs {
		t.Run(name, func(t *testing.T) {
			h := newHandler(t, src+`
def ok():
    pass
`, &starlib.Env{MaxMemory: 64 << 20})
			res, _ := handleWithin(t, h, context.Background(), 30*time.Second)
			if res.Err == nil || !strings.Contains(res.Err.Error(), "memory limit exceeded") {
				t.Fatalf("err = %v, want the memory limit", res.Err)
			}
			if k := kindOf(res.Err); k != engine.CallMemory {
				t.Errorf("counted as %s, want memory", k)
			}
			runtime.GC()
		})
	}
}

func TestAfterAMemoryCancellationCallsSucceedAgain(t *testing.T) {
	h := newHandler(t, `
def consumer(data):
    if data.get("bomb"):
        s = "x"
        for i in range(40):
            s = s + s
`, &starlib.Env{MaxMemory: 64 << 20})
	bomb := &engine.Message{Fields: []topix.Field{{Name: "bomb", Value: "1"}}}
	if res := h.Handle(context.Background(), bomb); res.Err == nil {
		t.Fatal("the bomb succeeded")
	}
	// Once the cancelled call's memory is collected, calls run again.
	deadline := time.Now().Add(10 * time.Second)
	for {
		res := h.Handle(context.Background(), &engine.Message{})
		if res.Err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls still fail after the bomb: %v", res.Err)
		}
	}
}

func TestATopLevelAboveTheMemoryCeilingDoesNotCompile(t *testing.T) {
	path := filepath.Join(writeTree(t, map[string]string{"app.star": `
def bomb():
    s = "x"
    for i in range(40):
        s = s + s
    return s
x = bomb()
def consumer(data):
    pass
`}), "app.star")
	_, err := starlib.Compile(path, "consumer", &starlib.Env{MaxMemory: 64 << 20})
	if err == nil || !strings.Contains(err.Error(), "memory limit exceeded") {
		t.Fatalf("err = %v, want the memory limit", err)
	}
}
