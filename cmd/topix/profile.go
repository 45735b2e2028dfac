package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
)

// startProfile records what the environment asks for, for the benchmarks
// (docs/benchmarks.md): a CPU profile to TOPIX_CPUPROFILE, an allocation
// profile to TOPIX_MEMPROFILE, an execution trace to TOPIX_TRACE. It
// returns the function that finishes them when the command ends. A file
// that cannot be written is reported on stderr and skipped.
func startProfile() func() {
	var stops []func()
	create := func(env string) *os.File {
		path := os.Getenv(env)
		if path == "" {
			return nil
		}
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "topix: %s: %v\n", env, err)
			return nil
		}
		return f
	}
	if f := create("TOPIX_CPUPROFILE"); f != nil {
		if err := pprof.StartCPUProfile(f); err == nil {
			stops = append(stops, pprof.StopCPUProfile)
		}
		stops = append(stops, func() { f.Close() })
	}
	if f := create("TOPIX_MEMPROFILE"); f != nil {
		runtime.MemProfileRate = 4096 // every allocation site of the hot path shows
		stops = append(stops, func() {
			_ = pprof.Lookup("allocs").WriteTo(f, 0)
			f.Close()
		})
	}
	if f := create("TOPIX_TRACE"); f != nil {
		if err := trace.Start(f); err == nil {
			stops = append(stops, trace.Stop)
		}
		stops = append(stops, func() { f.Close() })
	}
	return func() {
		for _, stop := range stops {
			stop()
		}
	}
}
