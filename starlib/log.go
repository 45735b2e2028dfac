package starlib

import (
	"context"
	"fmt"
	"log/slog"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
)

// The log module writes records to topix's log, with the script position
// of the call and, during a call, the id of the entry:
//
//	log.debug(msg, **attrs)
//	log.info(msg, **attrs)
//	log.warn(msg, **attrs)
//	log.error(msg, **attrs)
//
// msg is converted with str() when it is not a string. Each keyword
// argument becomes an attribute of the record: str, int, float, bool and
// None keep their type; other values are written as str() makes them.
// Every function returns None. Records below the configured level
// (--log-level) are dropped without formatting.
func (e *Env) logModule() *starlarkstruct.Module {
	log := e.logger()
	member := func(name string, level slog.Level) *starlark.Builtin {
		return starlark.NewBuiltin("log."+name, func(thread *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			if len(args) != 1 {
				return nil, fmt.Errorf("%s: takes the message and keyword attributes, got %d positional arguments", b.Name(), len(args))
			}
			if !log.Enabled(context.Background(), level) {
				return starlark.None, nil
			}
			msg, ok := starlark.AsString(args[0])
			if !ok {
				msg = args[0].String()
			}
			attrs := scriptAttrs(thread)
			for _, kv := range kwargs {
				attrs = append(attrs, slog.Any(string(kv[0].(starlark.String)), goValue(kv[1])))
			}
			log.LogAttrs(context.Background(), level, msg, attrs...)
			return starlark.None, nil
		})
	}
	return &starlarkstruct.Module{
		Name: "log",
		Members: starlark.StringDict{
			"debug": member("debug", slog.LevelDebug),
			"info":  member("info", slog.LevelInfo),
			"warn":  member("warn", slog.LevelWarn),
			"error": member("error", slog.LevelError),
		},
	}
}

// scriptAttrs are the attributes of every record a script writes: where
// in the script it was written and, during a call, which entry it was for.
func scriptAttrs(thread *starlark.Thread) []slog.Attr {
	attrs := []slog.Attr{slog.String("script", thread.CallFrame(1).Pos.String())}
	if c := currentCall(thread); c != nil {
		attrs = append(attrs, slog.String("id", c.msg.ID))
	}
	return attrs
}

// goValue converts a Starlark value to a log attribute value.
func goValue(v starlark.Value) any {
	switch v := v.(type) {
	case starlark.String:
		return string(v)
	case starlark.Bool:
		return bool(v)
	case starlark.Float:
		return float64(v)
	case starlark.Int:
		if i, ok := v.Int64(); ok {
			return i
		}
	case starlark.NoneType:
		return nil
	}
	return v.String()
}
