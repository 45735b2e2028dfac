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
		ours, lib := decodeBoth(t, src)
		if ours != lib {
			t.Errorf("json.decode(%q):\n ours    %s\n library %s", src, ours, lib)
		}
	})
}
