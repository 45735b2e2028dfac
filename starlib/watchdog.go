package starlib

import (
	"context"
	"fmt"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"go.starlark.net/starlark"
)

// WatchdogTick is how often the watchdog looks at the calls in flight and
// at the heap. A limit is therefore enforced within about a tick, plus the
// time of the builtin call a script is in when it is cancelled (Starlark
// notices a cancellation between two steps, not inside a builtin like
// sorted or str of a big list).
const WatchdogTick = 2 * time.Millisecond

// A watchdog enforces the limits that the interpreter cannot enforce by
// itself, for every thread of one Env: the wall-clock limit of each call
// (or top level), the cancellation of its context (a forced shutdown), and
// the memory ceiling of the process. It cancels a thread with
// Thread.Cancel; there is no timer or goroutine per call, and a call pays
// for a few atomic operations and an uncontended lock. It keeps the clock
// the deadlines are measured on, advanced every tick: reading the system
// clock twice per call cost more than the rest of the watching together
// (about 50 ns a read on the virtual machines measured).
type watchdog struct {
	maxMemory uint64       // bytes of heap; 0 means no ceiling
	now       atomic.Int64 // unix nanoseconds at the last tick

	//
	// It runs one goroutine while any of its threads is alive. Threads are
	// held by weak pointers, so a consumer that is done with its handlers
	// needs no Close: the goroutine ends once they are collected.

	mu      sync.Mutex
	guards  []weak.Pointer[guard]
	running bool

	// After a memory cancellation, the watchdog waits until the cancelled
	// runs are over, then returns their memory to the OS, before it judges
	// the heap again.
	cancelled []cancelledRun
}

type cancelledRun struct {
	g   *guard
	run int64
}

// guard is the watchdog's view of one thread.
type guard struct {
	thread *starlark.Thread
	dog    *watchdog

	mu       sync.Mutex   // orders a cancellation against the start of a run
	run      atomic.Int64 // one more for each run; cancellations name the run
	deadline atomic.Int64 // unix nanoseconds; 0 while the thread runs nothing
	timeout  string       // the reason given when the deadline passes; set once, at newGuard
	ctx      atomic.Pointer[ctxBox]
	reason   atomic.Pointer[string] // why the watchdog cancelled the current run
}

type ctxBox struct{ ctx context.Context }

// newGuard registers thread with the watchdog; timeout is the reason a
// run of it fails with when it outlives its deadline.
func (w *watchdog) newGuard(thread *starlark.Thread, timeout string) *guard {
	g := &guard{thread: thread, dog: w, timeout: timeout}
	w.mu.Lock()
	w.guards = append(w.guards, weak.Make(g))
	start := !w.running
	w.running = true
	if start {
		w.now.Store(time.Now().UnixNano())
	}
	w.mu.Unlock()
	if start {
		go w.loop()
	}
	return g
}

// begin starts a run limited to timeout and to ctx:
// from here the watchdog may cancel the thread. The thread must not be
// running. The deadline is
// on the watchdog's clock, which may be a tick late: a run may be stopped
// up to a tick before its full timeout.
func (g *guard) begin(ctx context.Context, timeout time.Duration) (deadline int64) {
	deadline = g.dog.now.Load() + int64(timeout)
	g.mu.Lock()
	g.thread.Uncancel()
	g.reason.Store(nil)
	g.run.Add(1)
	g.deadline.Store(deadline)
	g.mu.Unlock()
	if box := g.ctx.Load(); box == nil || box.ctx != ctx {
		g.ctx.Store(&ctxBox{ctx})
	}
	return deadline
}

// end ends the run and returns why the watchdog cancelled it, or "". A run
// that overran its deadline is reported as such even when it returned
// before the watchdog's next look: an overrun (by the watchdog's clock)
// never counts as a success.
func (g *guard) end(deadline int64) string {
	g.deadline.Store(0)
	if r := g.reason.Load(); r != nil {
		return *r
	}
	if g.dog.now.Load() > deadline {
		return g.timeout
	}
	return ""
}

// cancel stops run n of the thread, if it is still the current one.
func (g *guard) cancel(n int64, reason string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.run.Load() != n || g.deadline.Load() == 0 {
		return false
	}
	if g.reason.CompareAndSwap(nil, &reason) {
		g.thread.Cancel(reason)
	}
	return true
}

// loop looks at the threads every tick until none is left.
func (w *watchdog) loop() {
	t := time.NewTicker(WatchdogTick)
	defer t.Stop()
	heap := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var live []*guard
	for range t.C {
		live = live[:0]
		w.mu.Lock()
		kept := w.guards[:0]
		for _, wp := range w.guards {
			if g := wp.Value(); g != nil {
				kept = append(kept, wp)
				live = append(live, g)
			}
		}
		clear(w.guards[len(kept):])
		w.guards = kept
		if len(kept) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()

		now := time.Now().UnixNano()
		w.now.Store(now)
		for _, g := range live {
			n := g.run.Load()
			d := g.deadline.Load()
			switch {
			case d == 0:
			case now > d:
				g.cancel(n, g.timeout)
			default:
				if box := g.ctx.Load(); box != nil && box.ctx.Err() != nil {
					g.cancel(n, "the call was cancelled: "+context.Cause(box.ctx).Error())
				}
			}
		}
		if w.maxMemory > 0 {
			w.checkMemory(heap, live)
		}
		clear(live) // hold no guard until the next tick
	}
}

// memoryExceeded starts the error of a call the memory ceiling stopped.
const memoryExceeded = "memory limit exceeded"

// checkMemory cancels every run in flight when the heap is above the
// ceiling. Which call allocated the memory cannot be known; stopping them
// all is what keeps the process alive, and their entries are retried like
// any failed call.
func (w *watchdog) checkMemory(heap []metrics.Sample, live []*guard) {
	if len(w.cancelled) > 0 {
		for _, c := range w.cancelled {
			if c.g.run.Load() == c.run && c.g.deadline.Load() != 0 {
				return // a cancelled run is still unwinding
			}
		}
		clear(w.cancelled)
		w.cancelled = w.cancelled[:0]
		debug.FreeOSMemory() // the runs are over: collect their garbage now
		return
	}
	metrics.Read(heap)
	used := heap[0].Value.Uint64()
	if used <= w.maxMemory {
		return
	}
	reason := fmt.Sprintf(memoryExceeded+": the heap reached %s, above the --max-memory of %s",
		formatBytes(used), formatBytes(w.maxMemory))
	for _, g := range live {
		if n := g.run.Load(); g.cancel(n, reason) {
			w.cancelled = append(w.cancelled, cancelledRun{g, n})
		}
	}
	if len(w.cancelled) == 0 {
		debug.FreeOSMemory() // nothing runs: the heap is garbage, or topix's own
	}
}

// formatBytes writes a byte count in binary units: 512 B, 1.5 KiB, 3 GiB.
func formatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	s := fmt.Sprintf("%.1f", v)
	if len(s) > 2 && s[len(s)-2:] == ".0" {
		s = s[:len(s)-2]
	}
	return s + " " + string("KMGTPE"[exp]) + "iB"
}
