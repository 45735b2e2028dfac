package starlib

import (
	"strings"
	"testing"

	starjson "go.starlark.net/lib/json"
	"go.starlark.net/starlark"
)

// jsonDocs are documents on both sides of the fast path's edge: the ones it
// parses itself and the ones it hands to the library.
var jsonDocs = []string{
	`{"id": 42, "kind": "order", "total": 12.50, "sku": "SKU-000042"}      `,
	`{}`, `[]`, `[1, 2, [3, {"a": null}]]`, `"plain"`, `""`, `0`, `-0`, `-7`, `1.5`, `-1.5e3`, `1E-2`,
	`true`, `false`, `null`, ` {"a" : 1 , "b":[ true,false ] } `, "\t\n{\"x\":\r\n1}\n",
	`{"a": 1, "a": 2}`, // the last value of a repeated key wins
	`9223372036854775807`, `-9223372036854775808`, `9223372036854775808`, `123456789012345678901234567890`,
	`{"big": 18446744073709551616}`, `1e400`, `-1e400`, `0.1`, `5e-324`,
	`"caf\u00e9"`, `"café"`, `"tab\tinside"`, "\"raw\ncontrol\"", `"\"quoted\""`, `"\/"`, `"\ud83d\ude00"`,
	`{"k\u0041": "v"}`,
	// invalid: each must give the library's error
	``, ` `, `{`, `}`, `[`, `[1,]`, `{"a":}`, `{"a" 1}`, `{a: 1}`, `{"a":1,}`, `[1 2]`, `01`, `-01`, `-`, `1-2`,
	`1.2.3`, `.5`, `+1`, `tru`, `nul`, `falsey`, `"unclosed`, `{"a":1}x`, `[1] [2]`, `{1: 2}`, `"\x"`, `NaN`,
	strings.Repeat("[", 100) + strings.Repeat("]", 100),
	strings.Repeat(`{"a":`, 70) + "1" + strings.Repeat("}", 70),
}

// decodeBoth runs src through topix's json.decode and the library's and
// returns what each gave: the value's repr (which tells 1 from 1.0) or the
// error's text.
func decodeBoth(t testing.TB, src string) (ours, lib string) {
	t.Helper()
	thread := &starlark.Thread{Name: "test"}
	show := func(v starlark.Value, err error) string {
		if err != nil {
			return "error: " + err.Error()
		}
		return v.Type() + " " + v.String()
	}
	args := starlark.Tuple{starlark.String(src)}
	ours = show(starlark.Call(thread, jsonModule.Members["decode"], args, nil))
	lib = show(starlark.Call(thread, starjson.Module.Members["decode"], args, nil))
	return ours, lib
}

func TestJSONDecodeIsTheLibrarys(t *testing.T) {
	for _, src := range jsonDocs {
		ours, lib := decodeBoth(t, src)
		if ours != lib {
			t.Errorf("json.decode(%q):\n ours    %s\n library %s", src, ours, lib)
		}
	}
}

func TestJSONDecodeFastPathTakesTheCommonDocuments(t *testing.T) {
	// The fast path must actually parse these; if it handed them to the
	// library the module would be no faster than the library's.
	for _, src := range []string{`{"id": 42, "kind": "order", "total": 12.50, "tags": ["a", "b"], "ok": true, "x": null}`, `[1, -2, 3.5e1]`} {
		d := fastDecoder{s: src}
		if _, ok := d.document(); !ok {
			t.Errorf("the fast path handed %q to the library", src)
		}
	}
	for _, src := range []string{`"caf\u00e9"`, `"café"`, `99999999999999999999`, `[1,]`} {
		d := fastDecoder{s: src}
		if _, ok := d.document(); ok {
			t.Errorf("the fast path parsed %q itself; it belongs to the library", src)
		}
	}
}

func TestJSONDecodeDefaultGoesToTheLibrary(t *testing.T) {
	thread := &starlark.Thread{Name: "test"}
	v, err := starlark.Call(thread, jsonModule.Members["decode"], starlark.Tuple{starlark.String("{bad")},
		[]starlark.Tuple{{starlark.String("default"), starlark.String("fallback")}})
	if err != nil || v != starlark.String("fallback") {
		t.Fatalf("json.decode(bad, default=...) = %v, %v; want the default", v, err)
	}
}

// FuzzJSONDecode checks that topix's json.decode gives what the library
// gives, for any input. `make test` runs it on the seeds; `go test -fuzz
// FuzzJSONDecode ./starlib` explores further.
func FuzzJSONDecode(f *testing.F) {
	for _, src := range jsonDocs {
		f.Add(src)
	}
	f.Fuzz(func(t *testing.T, src string) {
		if jsonDepth(src, MaxJSONDepth) > MaxJSONDepth {
			checkTooDeep(t, src)
			return
		}
		ours, lib := decodeBoth(t, src)
		if ours != lib {
			t.Errorf("json.decode(%q):\n ours    %s\n library %s", src, ours, lib)
		}
	})
}

// decodeOurs runs src through topix's json.decode.
func decodeOurs(src string) (starlark.Value, error) {
	thread := &starlark.Thread{Name: "test"}
	return starlark.Call(thread, jsonModule.Members["decode"], starlark.Tuple{starlark.String(src)}, nil)
}

// checkTooDeep asserts that json.decode refuses src for its depth. The
// library must never see such a document: at a megabyte of nesting its
// recursion overflows the Go stack and ends the process.
func checkTooDeep(t *testing.T, src string) {
	t.Helper()
	_, err := decodeOurs(src)
	if err == nil || !strings.Contains(err.Error(), "deeper than 1000 levels") {
		t.Fatalf("json.decode of a document nested beyond %d levels: err = %v; want the depth error", MaxJSONDepth, err)
	}
}

func TestJSONDecodeRefusesDeepNestingWithoutCrashing(t *testing.T) {
	for name, src := range map[string]string{
		"1.4 MB of [":                 strings.Repeat("[", 1400_000),
		"1.4 MB of {\"a\":":           strings.Repeat(`{"a":`, 280_000),
		"valid, one level too deep":   strings.Repeat("[", MaxJSONDepth+1) + strings.Repeat("]", MaxJSONDepth+1),
		"mixed, unclosed":             strings.Repeat(`[{"k":[`, 100_000),
		"deep after a wide prefix":    "[" + strings.Repeat("1,", 10_000) + strings.Repeat("[", 2*MaxJSONDepth),
		"deep with escapes (library)": strings.Repeat(`["\u00e9",`, 5_000),
	} {
		t.Run(name, func(t *testing.T) { checkTooDeep(t, src) })
	}
}

func TestJSONDecodeDepthIgnoresBracketsInStrings(t *testing.T) {
	// Brackets inside strings, escaped quotes included, do not nest.
	src := `["` + strings.Repeat(`[{\"`, 5_000) + `"]`
	v, err := decodeOurs(src)
	if err != nil {
		t.Fatalf("json.decode of a string full of brackets: %v", err)
	}
	if l, ok := v.(*starlark.List); !ok || l.Len() != 1 {
		t.Fatalf("json.decode = %v; want a list of one string", v)
	}
	// At the limit itself the library's result is given.
	deep := strings.Repeat("[", MaxJSONDepth) + strings.Repeat("]", MaxJSONDepth)
	if ours, lib := decodeBoth(t, deep); ours != lib {
		t.Fatalf("json.decode at the depth limit: ours %.80s, library %.80s", ours, lib)
	}
}

// FuzzJSONDecodeNesting builds documents nested deep and wide from a
// pattern and checks that json.decode never crashes, refuses exactly the
// ones deeper than MaxJSONDepth, and otherwise agrees with the library.
func FuzzJSONDecodeNesting(f *testing.F) {
	f.Add(uint16(10), uint8(3), `[`, `1`)
	f.Add(uint16(1001), uint8(1), `{"a":`, `null`)
	f.Add(uint16(999), uint8(2), `[{"k":`, `"x]"`)
	f.Add(uint16(60000), uint8(0), `[`, ``)
	f.Fuzz(func(t *testing.T, depth uint16, width uint8, open, leaf string) {
		if len(open) > 8 || len(leaf) > 16 {
			return
		}
		var b strings.Builder
		for range int(depth) {
			b.WriteString(open)
			for range int(width % 8) {
				b.WriteString(leaf)
				b.WriteByte(',')
			}
		}
		b.WriteString(leaf)
		src := b.String()
		if jsonDepth(src, MaxJSONDepth) > MaxJSONDepth {
			checkTooDeep(t, src)
			return
		}
		if ours, lib := decodeBoth(t, src); ours != lib {
			t.Fatalf("json.decode(%.200q):\n ours    %.200s\n library %.200s", src, ours, lib)
		}
	})
}
