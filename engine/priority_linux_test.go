package engine_test

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/topix-dev/topix/engine"
	"github.com/topix-dev/topix/internal/redistest"
)

// threadNice returns the nice value of the calling thread.
func threadNice(t *testing.T) int {
	raw, err := syscall.Getpriority(syscall.PRIO_PROCESS, syscall.Gettid())
	if err != nil {
		t.Fatal(err)
	}
	return 20 - raw // Linux returns 20 - nice
}

func TestWorkersRunAtTheLowerPriority(t *testing.T) {
	base := threadNice(t)
	for _, tc := range []struct{ nice, want int }{{0, base}, {5, min(19, base+5)}, {19, 19}} {
		rdb := realRedis.new(t)
		stream, group := names(t)
		stream = fmt.Sprintf("%s:%d", stream, tc.nice)
		for range 20 {
			add(t, rdb, stream, "k", "v")
		}
		var mu sync.Mutex
		seen := map[int]int{} // nice -> calls
		h := engine.HandlerFunc(func(_ context.Context, _ *engine.Message) engine.Result {
			n := threadNice(t)
			mu.Lock()
			seen[n]++
			mu.Unlock()
			return engine.Result{}
		})
		r := start(t, rdb, h, engine.Options{Stream: stream, Group: group, Consumer: "c", Concurrency: 2, WorkerNice: tc.nice, Block: 50 * time.Millisecond})
		redistest.WaitFor(t, 10*time.Second, "20 entries acked", func() bool { return r.c.Stats().Acked == 20 })
		if err := r.shutdown(t); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		if seen[tc.want] != 20 || len(seen) != 1 {
			t.Errorf("WorkerNice %d: calls by thread nice value = %v, want all 20 at %d", tc.nice, seen, tc.want)
		}
		mu.Unlock()
	}
	// The test's own thread, and so the threads the workers did not own,
	// kept their priority.
	if got := threadNice(t); got != base {
		t.Errorf("the test's thread runs at nice %d, want %d", got, base)
	}
}

func TestWorkerNiceOutOfRangeIsRefused(t *testing.T) {
	for _, n := range []int{-1, 20} {
		_, err := engine.New(realRedis.new(t), engine.HandlerFunc(nil), engine.Options{Stream: "s", Group: "g", Consumer: "c", WorkerNice: n})
		if err == nil {
			t.Errorf("WorkerNice %d was accepted", n)
		}
	}
}
