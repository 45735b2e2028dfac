package starlib

import (
	"errors"
	"fmt"

	"go.starlark.net/starlark"

	"github.com/topix-dev/topix"
	"github.com/topix-dev/topix/engine"
	"github.com/topix-dev/topix/internal/jsontext"
)

// emit adds an entry to a stream once the current call has succeeded:
//
//	emit(stream, fields, maxlen=None)
//
// stream is a non-empty str. fields is a non-empty dict whose keys are str
// (or bytes); a str or bytes value is stored as it is, any other value as
// its compact JSON text, as `topix emit` stores JSON values: 2 -> "2",
// True -> "true", None -> "null", [1, 2] -> "[1,2]". maxlen, when given,
// trims the stream to about that many entries.
//
// emit is an outbox: it checks and converts its arguments at once (a bad
// argument fails the call, at the emit's position), and records the entry.
// The engine adds the recorded entries, in order, after the call returned
// and before it acks the entry the call was for; a call that fails emits
// nothing. emit returns None: the new entry's id does not exist yet.
//
// emit is only valid during a call, not at a script's top level.
var emitBuiltin = starlark.NewBuiltin("emit", emit)

func emit(thread *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	stream, fields, maxlen, ok := emitArgs(args, kwargs)
	if !ok {
		var err error
		if stream, fields, maxlen, err = unpackEmitArgs(b.Name(), args, kwargs); err != nil {
			return nil, err
		}
	}
	c := currentCall(thread)
	if c == nil {
		return nil, errors.New("emit: only valid while consuming an entry, not at the top level of a script")
	}
	e, err := makeEmit(stream, fields, maxlen)
	if err != nil {
		return nil, fmt.Errorf("emit: %w", err)
	}
	c.emits = append(c.emits, e)
	return starlark.None, nil
}

// emitArgs unpacks the usual forms of emit's arguments, emit(stream,
// fields) and emit(stream, fields, maxlen = n), without the generic
// unpacking's cost; it reports false for any other form, which UnpackArgs
// then takes (and explains, when it is wrong).
func emitArgs(args starlark.Tuple, kwargs []starlark.Tuple) (stream string, fields *starlark.Dict, maxlen starlark.Value, ok bool) {
	if len(args) != 2 || len(kwargs) > 1 {
		return "", nil, nil, false
	}
	s, ok1 := args[0].(starlark.String)
	d, ok2 := args[1].(*starlark.Dict)
	if !ok1 || !ok2 {
		return "", nil, nil, false
	}
	maxlen = starlark.None
	if len(kwargs) == 1 {
		if kwargs[0][0] != starlark.String("maxlen") {
			return "", nil, nil, false
		}
		maxlen = kwargs[0][1]
	}
	return string(s), d, maxlen, true
}

// unpackEmitArgs unpacks any form of emit's arguments, or says what is
// wrong with them.
func unpackEmitArgs(name string, args starlark.Tuple, kwargs []starlark.Tuple) (stream string, fields *starlark.Dict, maxlen starlark.Value, err error) {
	maxlen = starlark.None
	err = starlark.UnpackArgs(name, args, kwargs, "stream", &stream, "fields", &fields, "maxlen?", &maxlen)
	return stream, fields, maxlen, err
}

func makeEmit(stream string, fields *starlark.Dict, maxlen starlark.Value) (engine.Emit, error) {
	e := engine.Emit{Stream: stream}
	if stream == "" {
		return e, errors.New("the stream name is empty")
	}
	if fields.Len() == 0 {
		return e, errors.New("fields is empty; an entry needs at least one field")
	}
	if maxlen != starlark.None {
		n, err := starlark.AsInt32(maxlen)
		if err != nil || n < 1 {
			return e, fmt.Errorf("maxlen must be a positive int, not %s", maxlen)
		}
		e.MaxLen = int64(n)
	}
	e.Fields = make([]topix.Field, 0, fields.Len())
	for _, kv := range fields.Items() {
		name, ok := asBytes(kv[0])
		if !ok {
			return e, fmt.Errorf("field names must be str, not %s (%s)", kv[0].Type(), kv[0])
		}
		value, err := fieldValue(kv[1])
		if err != nil {
			return e, fmt.Errorf("field %q: %w", name, err)
		}
		e.Fields = append(e.Fields, topix.Field{Name: name, Value: value})
	}
	return e, nil
}

// fieldValue stores str and bytes as they are and every other value as its
// JSON text.
func fieldValue(v starlark.Value) (string, error) {
	// The common scalars are written here as json.encode writes them,
	// without the cost of a Starlark call.
	switch v := v.(type) {
	case starlark.String:
		return string(v), nil
	case starlark.Bytes:
		return string(v), nil
	case starlark.Int:
		return v.String(), nil
	case starlark.Bool:
		if v {
			return "true", nil
		}
		return "false", nil
	case starlark.NoneType:
		return "null", nil
	case starlark.Float:
		var buf [32]byte
		out, err := jsontext.AppendFloat(buf[:0], float64(v))
		return string(out), err
	}
	out, err := appendJSON(nil, v, 0)
	return string(out), err
}

func asBytes(v starlark.Value) (string, bool) {
	switch v := v.(type) {
	case starlark.String:
		return string(v), true
	case starlark.Bytes:
		return string(v), true
	}
	return "", false
}
