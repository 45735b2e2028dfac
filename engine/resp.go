package engine

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/topix-dev/topix"
)

// The reply of XREADGROUP is decoded here from its raw RESP bytes, not
// through go-redis's generic values: those cost two allocations per field
// name and value, a third of a consumer's CPU, and go-redis's typed
// XReadGroup returns fields as a map, which loses their order. The raw
// reply is copied into one string, and every id, name and value is a
// substring of it: a batch costs a handful of allocations, whatever its
// size.

// replyError is an error reply of Redis (NOGROUP, WRONGTYPE, ...).
type replyError string

func (e replyError) Error() string { return string(e) }

// RedisError marks it as a reply of Redis, as go-redis's errors are.
func (replyError) RedisError() {}

// errBadReply means the bytes are not the reply this decoder expects.
var errBadReply = errors.New("unexpected XREADGROUP reply")

// parseReadReply decodes the reply of XREADGROUP ... STREAMS one-stream id,
// in RESP2 (an array of [stream, entries]) or RESP3 (a map of stream to
// entries). A timed-out BLOCK is a null reply and no entries. An entry that
// was deleted while pending has nil Fields.
func (c *Consumer) parseReadReply(raw []byte, attempt int64) ([]*Message, error) {
	r := respReader{s: string(raw)}
	switch r.peek() {
	case '-':
		return nil, replyError(r.line()[1:])
	case '_':
		return nil, nil
	case '*':
		n := r.length('*')
		if n <= 0 {
			return nil, r.err
		}
		r.length('*') // [stream, entries]
	case '%':
		if r.length('%') <= 0 {
			return nil, r.err
		}
	default:
		return nil, errBadReply
	}
	r.bulk() // the stream's name
	n := r.length('*')
	if r.err != nil || n <= 0 {
		return nil, r.err
	}
	msgs := make([]Message, n)
	out := make([]*Message, n)
	var fields []topix.Field
	for i := range msgs {
		m := &msgs[i]
		start := r.i
		r.length('*') // [id, fields]
		m.ID = r.bulk()
		m.Stream, m.Group, m.Consumer, m.Attempt = c.opts.Stream, c.opts.Group, c.opts.Consumer, attempt
		if r.peek() == '_' || strings.HasPrefix(r.s[r.i:], "*-1\r\n") {
			r.line() // deleted while pending: no fields
			m.size = int64(r.i - start)
			out[i] = m
			continue
		}
		k := r.length('*') / 2
		if fields == nil {
			// Entries of a stream tend to have the same number of fields:
			// size for that, so the slice rarely grows.
			fields = make([]topix.Field, 0, n*k)
		}
		first := len(fields)
		for range k {
			name := r.bulk()
			fields = append(fields, topix.Field{Name: name, Value: r.bulk()})
		}
		m.Fields = fields[first:len(fields):len(fields)]
		m.size = int64(r.i - start)
		out[i] = m
	}
	if r.err != nil {
		return nil, r.err
	}
	return out, nil
}

// respReader reads RESP from a string; the first error sticks.
type respReader struct {
	s   string
	i   int
	err error
}

func (r *respReader) peek() byte {
	if r.err != nil || r.i >= len(r.s) {
		r.fail()
		return 0
	}
	return r.s[r.i]
}

func (r *respReader) fail() {
	if r.err == nil {
		r.err = fmt.Errorf("%w at byte %d", errBadReply, r.i)
	}
	r.i = len(r.s)
}

// line returns the next line, without its CRLF.
func (r *respReader) line() string {
	if r.err != nil {
		return ""
	}
	end := strings.Index(r.s[r.i:], "\r\n")
	if end < 0 {
		r.fail()
		return ""
	}
	line := r.s[r.i : r.i+end]
	r.i += end + 2
	return line
}

// length reads a header line of the given type (*, %, $) and returns its
// count; -1 for a null.
func (r *respReader) length(kind byte) int {
	line := r.line()
	if r.err != nil {
		return 0
	}
	if len(line) < 2 || line[0] != kind {
		r.fail()
		return 0
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil {
		r.fail()
		return 0
	}
	return n
}

// bulk reads a bulk string.
func (r *respReader) bulk() string {
	n := r.length('$')
	if r.err != nil || n < 0 || r.i+n+2 > len(r.s) {
		r.fail()
		return ""
	}
	v := r.s[r.i : r.i+n]
	r.i += n + 2
	return v
}
