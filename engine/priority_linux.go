package engine

import (
	"runtime"
	"syscall"
)

// lowerPriority wires the calling goroutine to its OS thread and raises that
// thread's nice value by n, up to 19. The goroutine never unlocks the
// thread, so the thread ends with it and no other goroutine ever runs at
// the lowered priority.
func lowerPriority(n int) error {
	runtime.LockOSThread()
	tid := syscall.Gettid()
	raw, err := syscall.Getpriority(syscall.PRIO_PROCESS, tid) // Linux returns 20 - nice
	if err != nil {
		return err
	}
	return syscall.Setpriority(syscall.PRIO_PROCESS, tid, min(19, 20-raw+n))
}
