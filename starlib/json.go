package starlib

import (
	"fmt"
	"slices"
	"strconv"

	starjson "go.starlark.net/lib/json"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/topix-dev/topix/internal/jsontext"
)

// jsonModule is go.starlark.net's json module (encode, decode, indent) with
// a faster and safer decode: json.decode of a payload is most of a typical
// script's work. The documents it sees are parsed here directly; anything
// unusual (escapes, non-ASCII text, integers beyond 64 bits, invalid JSON,
// the default= argument) goes to the library's decoder, so results and
// error messages are the library's in every case, but one: a document
// nested deeper than MaxJSONDepth is refused before the library sees it.
// The library's decoder recurses once per level on the Go stack, and a
// field of a megabyte of "[" overflows it, which no recover can catch: it
// would end the process, not the call.
var jsonModule = func() *starlarkstruct.Module {
	members := make(starlark.StringDict, len(starjson.Module.Members))
	for name, v := range starjson.Module.Members {
		members[name] = v
	}
	libDecode := starjson.Module.Members["decode"].(*starlark.Builtin)
	members["decode"] = starlark.NewBuiltin("json.decode", func(thread *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		if len(args) == 1 && len(kwargs) == 0 {
			if s, ok := args[0].(starlark.String); ok {
				d := fastDecoder{s: string(s)}
				if v, ok := d.document(); ok {
					return v, nil
				}
			}
		}
		if src, ok := decodeSource(args, kwargs); ok {
			if depth := jsonDepth(src, MaxJSONDepth); depth > MaxJSONDepth {
				return nil, fmt.Errorf("%s: the document nests arrays and objects deeper than %d levels; "+
					"topix refuses it rather than risk the process's stack", b.Name(), MaxJSONDepth)
			}
		}
		return libDecode.CallInternal(thread, args, kwargs)
	})
	members["encode"] = starlark.NewBuiltin("json.encode", func(thread *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var x starlark.Value
		if err := starlark.UnpackPositionalArgs(b.Name(), args, kwargs, 1, &x); err != nil {
			return nil, err
		}
		out, err := appendJSON(nil, x, 0)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", b.Name(), err)
		}
		return starlark.String(out), nil
	})
	return &starlarkstruct.Module{Name: "json", Members: members}
}()

// appendJSON writes v as JSON text by the rule every emit path shares
// (package internal/jsontext): dicts in their order, structs in the order
// of their sorted field names, lists, tuples and other iterables as
// arrays, str and bytes as strings. It replaces the library's encoder,
// which wrote DEL as \x7f (not JSON) and recursed without a bound.
func appendJSON(dst []byte, v starlark.Value, depth int) ([]byte, error) {
	if depth > jsontext.MaxDepth {
		return dst, jsontext.ErrTooDeep
	}
	switch v := v.(type) {
	case starlark.NoneType:
		return append(dst, "null"...), nil
	case starlark.Bool:
		return strconv.AppendBool(dst, bool(v)), nil
	case starlark.Int:
		return append(dst, v.String()...), nil
	case starlark.Float:
		return jsontext.AppendFloat(dst, float64(v))
	case starlark.String:
		return jsontext.AppendString(dst, string(v)), nil
	case starlark.Bytes:
		return jsontext.AppendString(dst, string(v)), nil
	case starlark.IterableMapping:
		dst = append(dst, '{')
		iter := v.Iterate()
		defer iter.Done()
		var k starlark.Value
		for i := 0; iter.Next(&k); i++ {
			key, ok := k.(starlark.String)
			if !ok {
				return dst, fmt.Errorf("cannot encode a dict with %s keys as JSON; its keys must be str", k.Type())
			}
			val, _, err := v.Get(k)
			if err != nil {
				return dst, err
			}
			dst = jsontext.AppendKey(dst, i, string(key))
			if dst, err = appendJSON(dst, val, depth+1); err != nil {
				return dst, err
			}
		}
		return append(dst, '}'), nil
	case starlark.Iterable:
		dst = append(dst, '[')
		iter := v.Iterate()
		defer iter.Done()
		var e starlark.Value
		for i := 0; iter.Next(&e); i++ {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = appendJSON(dst, e, depth+1); err != nil {
				return dst, err
			}
		}
		return append(dst, ']'), nil
	case starlark.HasAttrs:
		names := v.AttrNames()
		slices.Sort(names)
		dst = append(dst, '{')
		for i, name := range names {
			val, err := v.Attr(name)
			if err != nil || val == nil {
				return dst, fmt.Errorf("cannot encode field %s of %s as JSON: %v", name, v.Type(), err)
			}
			dst = jsontext.AppendKey(dst, i, name)
			if dst, err = appendJSON(dst, val, depth+1); err != nil {
				return dst, err
			}
		}
		return append(dst, '}'), nil
	}
	return dst, fmt.Errorf("cannot encode %s as JSON", v.Type())
}

// MaxJSONDepth is the deepest nesting of arrays and objects json.decode
// accepts. Real documents stay far below it (Python's json stops near
// 1000 too); the library's recursive decoder is safe far above it.
const MaxJSONDepth = 1000

// decodeSource returns the document argument of a json.decode call, if it
// is a str (the library refuses anything else with its own error).
func decodeSource(args starlark.Tuple, kwargs []starlark.Tuple) (string, bool) {
	var x starlark.Value
	if len(args) > 0 {
		x = args[0]
	}
	for _, kv := range kwargs {
		if k, _ := kv[0].(starlark.String); k == "x" {
			x = kv[1]
		}
	}
	s, ok := x.(starlark.String)
	return string(s), ok
}

// jsonDepth returns how deep the arrays and objects of a JSON text nest,
// brackets inside strings aside, stopping as soon as it passes limit. It
// does not validate: invalid text is the decoder's to report.
func jsonDepth(s string, limit int) int {
	depth, deepest := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[', '{':
			depth++
			if depth > deepest {
				deepest = depth
				if deepest > limit {
					return deepest
				}
			}
		case ']', '}':
			depth--
		case '"':
			for i++; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' {
					i++
				}
			}
		}
	}
	return deepest
}

// fastDecoder parses the common subset of JSON into the values the
// library's decoder makes (dict, list, string, int, float, bool, None). It
// reports ok=false, and the caller falls back to the library, for anything
// outside that subset or not valid JSON.
type fastDecoder struct {
	s string
	i int
}

// maxFastDepth bounds the nesting the fast path follows; deeper documents
// go to the library.
const maxFastDepth = 64

func (d *fastDecoder) document() (starlark.Value, bool) {
	v, ok := d.value(0)
	if !ok {
		return nil, false
	}
	d.space()
	return v, d.i == len(d.s)
}

// space skips the whitespace JSON allows.
func (d *fastDecoder) space() {
	for d.i < len(d.s) {
		switch d.s[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *fastDecoder) value(depth int) (starlark.Value, bool) {
	d.space()
	if d.i >= len(d.s) || depth > maxFastDepth {
		return nil, false
	}
	switch c := d.s[d.i]; {
	case c == '"':
		s, ok := d.str()
		return starlark.String(s), ok
	case c == '{':
		return d.object(depth)
	case c == '[':
		return d.array(depth)
	case c == '-' || '0' <= c && c <= '9':
		return d.number()
	case c == 't':
		return starlark.True, d.word("true")
	case c == 'f':
		return starlark.False, d.word("false")
	case c == 'n':
		return starlark.None, d.word("null")
	}
	return nil, false
}

func (d *fastDecoder) word(w string) bool {
	if len(d.s)-d.i >= len(w) && d.s[d.i:d.i+len(w)] == w {
		d.i += len(w)
		return true
	}
	return false
}

// str reads a string made of plain ASCII without escapes.
func (d *fastDecoder) str() (string, bool) {
	start := d.i + 1
	for j := start; j < len(d.s); j++ {
		switch c := d.s[j]; {
		case c == '"':
			d.i = j + 1
			return d.s[start:j], true
		case c == '\\' || c >= 0x80:
			return "", false
		}
	}
	return "", false
}

func (d *fastDecoder) object(depth int) (starlark.Value, bool) {
	dict := new(starlark.Dict)
	if d.empty('}') {
		return dict, true
	}
	for {
		d.space()
		if d.i >= len(d.s) || d.s[d.i] != '"' {
			return nil, false
		}
		key, ok := d.str()
		if !ok {
			return nil, false
		}
		d.space()
		if d.i >= len(d.s) || d.s[d.i] != ':' {
			return nil, false
		}
		d.i++
		v, ok := d.value(depth + 1)
		if !ok {
			return nil, false
		}
		_ = dict.SetKey(starlark.String(key), v) // a new dict accepts any string key
		if more, ok := d.after('}'); !ok || !more {
			return dict, ok
		}
	}
}

func (d *fastDecoder) array(depth int) (starlark.Value, bool) {
	var elems []starlark.Value
	if d.empty(']') {
		return starlark.NewList(elems), true
	}
	for {
		v, ok := d.value(depth + 1)
		if !ok {
			return nil, false
		}
		elems = append(elems, v)
		if more, ok := d.after(']'); !ok || !more {
			return starlark.NewList(elems), ok
		}
	}
}

// empty consumes the opening bracket of an object or array and, if the
// closing one comes next, that too, and reports whether it did.
func (d *fastDecoder) empty(closing byte) bool {
	d.i++
	d.space()
	if d.i < len(d.s) && d.s[d.i] == closing {
		d.i++
		return true
	}
	return false
}

// after consumes what follows an element: a comma (more elements follow)
// or the closing bracket (the last one). Anything else is not ok.
func (d *fastDecoder) after(closing byte) (more, ok bool) {
	d.space()
	if d.i < len(d.s) {
		switch d.s[d.i] {
		case ',':
			d.i++
			return true, true
		case closing:
			d.i++
			return false, true
		}
	}
	return false, false
}

// number reads a number as the library does: with a '.', 'e' or 'E' it is
// a float, otherwise an int; here only ints that fit in 64 bits.
func (d *fastDecoder) number() (starlark.Value, bool) {
	start := d.i
	float := false
	j := start + 1
scan:
	for ; j < len(d.s); j++ {
		switch c := d.s[j]; {
		case '0' <= c && c <= '9':
		case c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-':
			float = true
		default:
			break scan
		}
	}
	num := d.s[start:j]
	digits := num
	if num[0] == '-' {
		digits = num[1:]
	}
	// JSON has no leading zeros and no bare sign.
	if digits == "" || digits[0] == '0' && len(digits) > 1 && '0' <= digits[1] && digits[1] <= '9' {
		return nil, false
	}
	d.i = j
	if float {
		x, err := strconv.ParseFloat(num, 64)
		return starlark.Float(x), err == nil
	}
	x, err := strconv.ParseInt(num, 10, 64)
	return starlark.MakeInt64(x), err == nil
}
