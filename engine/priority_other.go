//go:build !linux

package engine

// lowerPriority does nothing where threads have no nice value of their own.
func lowerPriority(int) error { return nil }
