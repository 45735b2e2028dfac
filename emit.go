package topix

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix/internal/jsontext"
)

// Emit adds one entry to stream and returns its id.
//
// Values are converted as `topix emit` converts JSON: a string or []byte is
// stored as it is; every other value is stored as its compact JSON text
// (42 -> "42", 1.0 -> "1.0", true -> "true", nil -> "null", a slice or map
// -> its JSON), written by the one rule of every emit path (see the
// README): the map keys of a nested map sorted, < > & not escaped.
// Fields are sent in sorted name order, so the same map always makes the same
// entry. An empty map, an empty stream name or a value that cannot be encoded
// as JSON is an error and nothing is written.
//
// rdb is any go-redis client (single node, cluster, sentinel); Emit does not
// close it. Use EmitFields to control the field order or to trim the stream.
func Emit(ctx context.Context, rdb redis.Cmdable, stream string, fields map[string]any) (string, error) {
	fs, err := FieldsOf(fields)
	if err != nil {
		return "", err
	}
	return EmitFields(ctx, rdb, stream, fs, 0)
}

// EmitFields adds one entry with the given fields, in their order, to stream
// and returns its id. When maxLen is above zero the stream is trimmed to
// about that many entries (XADD MAXLEN ~), which is cheap for Redis.
func EmitFields(ctx context.Context, rdb redis.Cmdable, stream string, fields []Field, maxLen int64) (string, error) {
	args, err := XAddArgs(stream, fields, maxLen)
	if err != nil {
		return "", err
	}
	id, err := rdb.XAdd(ctx, args).Result()
	if err != nil {
		return "", fmt.Errorf("add entry to stream %q: %w", stream, err)
	}
	return id, nil
}

// CheckEntry says what is wrong with an entry that XADD would refuse or that
// makes no sense: an empty stream name, no fields, a negative maxLen.
func CheckEntry(stream string, fields []Field, maxLen int64) error {
	if stream == "" {
		return errors.New("the stream name is empty")
	}
	if len(fields) == 0 {
		return errors.New("an entry needs at least one field")
	}
	if maxLen < 0 {
		return fmt.Errorf("maxlen must be 0 (no trimming) or more, not %d", maxLen)
	}
	return nil
}

// XAddArgs checks stream and fields and builds the XADD arguments for them.
func XAddArgs(stream string, fields []Field, maxLen int64) (*redis.XAddArgs, error) {
	if err := CheckEntry(stream, fields, maxLen); err != nil {
		return nil, err
	}
	values := make([]string, 0, 2*len(fields))
	for _, f := range fields {
		values = append(values, f.Name, f.Value)
	}
	args := &redis.XAddArgs{Stream: stream, Values: values}
	if maxLen > 0 {
		args.MaxLen = maxLen
		args.Approx = true
	}
	return args, nil
}

// FieldsOf converts a Go map to fields in sorted name order, by the rules of
// Emit.
func FieldsOf(m map[string]any) ([]Field, error) {
	if len(m) == 0 {
		return nil, errors.New("an entry needs at least one field")
	}
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	slices.Sort(names)
	fields := make([]Field, 0, len(m))
	for _, name := range names {
		v, err := fieldValue(m[name])
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", name, err)
		}
		fields = append(fields, Field{Name: name, Value: v})
	}
	return fields, nil
}

func fieldValue(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case []byte:
		return string(v), nil
	}
	b, err := appendJSON(nil, v, 0)
	return string(b), err
}

// appendJSON writes v by the JSON rule of package jsontext. The kinds
// emits usually hold are written here; any other (a struct, a typed map or
// slice) is marshalled by encoding/json and then rewritten by the rule.
func appendJSON(dst []byte, v any, depth int) ([]byte, error) {
	if depth > jsontext.MaxDepth {
		return dst, jsontext.ErrTooDeep
	}
	switch v := v.(type) {
	case nil:
		return append(dst, "null"...), nil
	case string:
		return jsontext.AppendString(dst, v), nil
	case bool:
		return strconv.AppendBool(dst, v), nil
	case int:
		return strconv.AppendInt(dst, int64(v), 10), nil
	case int64:
		return strconv.AppendInt(dst, v, 10), nil
	case int32:
		return strconv.AppendInt(dst, int64(v), 10), nil
	case uint:
		return strconv.AppendUint(dst, uint64(v), 10), nil
	case uint64:
		return strconv.AppendUint(dst, v, 10), nil
	case uint32:
		return strconv.AppendUint(dst, uint64(v), 10), nil
	case float64:
		return jsontext.AppendFloat(dst, v)
	case float32:
		return jsontext.AppendFloat(dst, float64(v))
	case json.Number:
		s, err := jsontext.Recompact([]byte(v))
		return append(dst, s...), err
	case json.RawMessage:
		s, err := jsontext.Recompact(v)
		return append(dst, s...), err
	case []any:
		dst = append(dst, '[')
		for i, e := range v {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = appendJSON(dst, e, depth+1); err != nil {
				return dst, err
			}
		}
		return append(dst, ']'), nil
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		dst = append(dst, '{')
		for i, k := range keys {
			dst = jsontext.AppendKey(dst, i, k)
			var err error
			if dst, err = appendJSON(dst, v[k], depth+1); err != nil {
				return dst, err
			}
		}
		return append(dst, '}'), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return dst, err
	}
	s, err := jsontext.Recompact(b)
	return append(dst, s...), err
}

// ParseJSON converts a JSON object to fields, in the order the object
// names them. A string value is stored as it is; any other value (number,
// true, false, null, array, object) as its compact JSON text, so 2 becomes
// "2", null becomes "null" and {"a": [1, 2]} becomes `{"a":[1,2]}`, written
// by the one rule of every emit path (members in the order written, strings
// escaped the same way whatever escapes the input used). Numbers keep the
// digits they were written with (1.50 stays "1.50").
//
// Anything else than one JSON object with at least one field is an error that
// says what is wrong, and returns no fields.
func ParseJSON(data []byte) ([]Field, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("expected a JSON object, got nothing")
	}
	if !json.Valid(data) {
		// Unmarshal reports where the text goes wrong counting from its
		// start, which the token walk below does not.
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, jsonError(data, err)
		}
	}
	// The text is valid JSON: walk it once, keeping each value's text.
	i := skipSpace(data, 0)
	if data[i] != '{' {
		var v any
		_ = json.Unmarshal(data, &v)
		return nil, fmt.Errorf("expected a JSON object like {\"key\": \"value\"}, got %s", describe(v))
	}
	var fields []Field
	for i = skipSpace(data, i+1); data[i] != '}'; i = skipSpace(data, i+1) {
		if data[i] == ',' {
			i = skipSpace(data, i+1)
		}
		end := stringEnd(data, i)
		name, err := unquote(data[i:end])
		if err != nil {
			return nil, jsonError(data, err)
		}
		for _, f := range fields {
			if f.Name == name {
				return nil, fmt.Errorf("field %q appears twice in the JSON object", name)
			}
		}
		i = skipSpace(data, end) // at the colon
		i = skipSpace(data, i+1) // at the value
		end = valueEnd(data, i)
		value, err := rawValue(data[i:end])
		if err != nil {
			return nil, jsonError(data, err)
		}
		fields = append(fields, Field{Name: name, Value: value})
		i = skipSpace(data, end) - 1 // the loop steps onto the comma or the brace
	}
	if len(fields) == 0 {
		return nil, errors.New("the JSON object is empty; an entry needs at least one field")
	}
	return fields, nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index after the JSON string that starts at i.
func stringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// valueEnd returns the index after the JSON value that starts at i.
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = stringEnd(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
		j++
	}
	return j
}

// unquote decodes a JSON string token; most need no unescaping.
func unquote(raw []byte) (string, error) {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), nil
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
}

func rawValue(raw []byte) (string, error) {
	switch raw[0] {
	case '"':
		return unquote(raw)
	case '{', '[':
		return jsontext.Recompact(raw)
	}
	return string(raw), nil // a number, true, false or null, as written
}

func describe(v any) string {
	switch v.(type) {
	case []any:
		return "an array"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// jsonError turns a decoder error into a message that names where the
// problem is, without repeating the whole input.
func jsonError(data []byte, err error) error {
	var syn *json.SyntaxError
	if errors.As(err, &syn) && syn.Error() == "unexpected end of JSON input" {
		return fmt.Errorf("invalid JSON: it ends early after %d bytes", len(data))
	}
	if errors.As(err, &syn) {
		return fmt.Errorf("invalid JSON at byte %d: %s", syn.Offset, strings.TrimPrefix(syn.Error(), "json: "))
	}
	return fmt.Errorf("invalid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
}
