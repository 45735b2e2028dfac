package main

import (
	"os"
	"runtime/pprof"
)

// startProfile writes a CPU profile to the file named by TOPIX_CPUPROFILE,
// for the benchmarks (docs/benchmarks.md); it returns the function that
// finishes it.
func startProfile() func() {
	path := os.Getenv("TOPIX_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
