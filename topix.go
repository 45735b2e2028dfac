// Package topix runs code over every entry of a Redis stream, through a
// consumer group, and adds entries to streams.
//
// Most users run the topix command (see the README). This package is the Go
// side of it: the words the rest of the module speaks (Field), and Emit, the
// counterpart of the original Python framework's `from topix import emit`,
// for Go programs that feed streams which topix consumers read.
//
// The stream flows through the module's packages in this order:
//
//	config/   command line, file and environment -> Config, Redis client options
//	engine/   consumer group, reader, worker pool, acker: entries in, acks out
//	starlib/  the Starlark runtime that turns one entry into one call
//	cmd/topix the binary that wires them together
package topix

// Field is one field of a stream entry. Name and Value hold any bytes: Redis
// stream fields are binary-safe and so is a Go string.
type Field struct {
	Name  string
	Value string
}
