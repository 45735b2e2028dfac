// Package jsontext writes JSON text by the one rule topix uses wherever it
// turns a value into JSON: the three ways to emit (the CLI, a script's
// emit and json.encode, and the Go topix.Emit) all write the same text
// for the same value.
//
// The rule: compact (no spaces); object members in the value's own order
// (a Go map, which has none, in sorted key order); strings with '"', '\\'
// and the control characters U+0000-U+001F and U+007F escaped (\n, \r, \t,
// \b and \f in their short forms, the others as \u00XX), bytes that are not
// UTF-8 written as U+FFFD, and everything else, '<', '>', '&' and non-ASCII
// text included, as it is; integers in decimal; floats in the shortest form
// that reads back as the same float, with ".0" when they are whole (1.0,
// 2.5, 1e+21); NaN and infinities refused. Numbers that arrive as JSON text
// (the CLI's input) keep the digits they were written with.
package jsontext

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"unicode/utf8"
)

const hex = "0123456789abcdef"

// AppendString appends s as a JSON string.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < 0x7f {
			i++
			continue
		}
		if c >= 0x80 {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
			dst = append(dst, s[start:i]...)
			dst = append(dst, "\ufffd"...)
			i++
			start = i
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// AppendKey appends what comes before the value of member i of an object:
// the comma after the member before it, the key, and the colon.
func AppendKey(dst []byte, i int, key string) []byte {
	if i > 0 {
		dst = append(dst, ',')
	}
	dst = AppendString(dst, key)
	return append(dst, ':')
}

// ErrNonFinite is the error for NaN and the infinities, which JSON lacks.
var ErrNonFinite = errors.New("NaN and infinite floats have no JSON form")

// AppendFloat appends f in its shortest round-trip form, with ".0" when it
// is whole.
func AppendFloat(dst []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return dst, ErrNonFinite
	}
	start := len(dst)
	dst = strconv.AppendFloat(dst, f, 'g', -1, 64)
	if !bytes.ContainsAny(dst[start:], ".e") {
		dst = append(dst, '.', '0')
	}
	return dst, nil
}

// MaxDepth bounds the nesting of the values written, as json.decode bounds
// what it reads: the writers recurse once per level.
const MaxDepth = 1000

// ErrTooDeep is the error for a value nested deeper than MaxDepth (or one
// that contains itself).
var ErrTooDeep = fmt.Errorf("the value nests deeper than %d levels (or contains itself)", MaxDepth)

// Recompact rewrites JSON text by the rule: compact, members in the order
// written, strings re-escaped, numbers as written. It fails on text that is
// not one valid JSON value.
func Recompact(raw []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	out := make([]byte, 0, len(raw))
	// Each open array or object: whether a member was written, and for an
	// object whether the next token is a key.
	type level struct {
		object, any, key bool
	}
	var stack []level
	values := 0 // complete values at the top level
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if len(stack) > 0 || values != 1 {
				return "", io.ErrUnexpectedEOF
			}
			break
		}
		if err != nil {
			return "", err
		}
		if len(stack) == 0 {
			if values++; values > 1 {
				return "", errors.New("more than one JSON value")
			}
		}
		if d, ok := tok.(json.Delim); ok && (d == ']' || d == '}') {
			stack = stack[:len(stack)-1]
			out = append(out, byte(d))
			if n := len(stack); n > 0 && stack[n-1].object {
				stack[n-1].key = true
			}
			continue
		}
		if n := len(stack); n > 0 {
			top := &stack[n-1]
			if top.any && (!top.object || top.key) {
				out = append(out, ',')
			}
			top.any = true
			if top.object {
				if top.key {
					out = AppendString(out, tok.(string))
					out = append(out, ':')
					top.key = false
					continue
				}
				top.key = true
			}
		}
		switch t := tok.(type) {
		case json.Delim:
			if len(stack) >= MaxDepth {
				return "", ErrTooDeep
			}
			stack = append(stack, level{object: t == '{', key: t == '{'})
			out = append(out, byte(t))
		case string:
			out = AppendString(out, t)
		case json.Number:
			out = append(out, t...)
		case bool:
			out = strconv.AppendBool(out, t)
		case nil:
			out = append(out, "null"...)
		}
	}
	return string(out), nil
}
