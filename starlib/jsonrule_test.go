package starlib_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/topix-dev/topix"
	"github.com/topix-dev/topix/engine"
)

// emitted runs `emit("out", {"v": expr})` in a consumer and returns the
// text stored for v.
func emitted(t *testing.T, expr string) string {
	t.Helper()
	s, env, _, err := compile(t, "def consumer(data):\n    emit(\"out\", {\"v\": "+expr+"})\n", "consumer")
	if err != nil {
		t.Fatal(err)
	}
	res := handle(t, s, env, &engine.Message{ID: "1-1"})
	if res.Err != nil {
		t.Fatalf("emit of %s: %v", expr, res.Err)
	}
	return res.Emits[0].Fields[0].Value
}

// TestEveryEmitPathWritesTheSameJSON emits the same values through the
// CLI's JSON input (topix.ParseJSON), a script's emit, and Go's
// topix.FieldsOf, and wants the same text from all three.
func TestEveryEmitPathWritesTheSameJSON(t *testing.T) {
	for _, tc := range []struct {
		json, starlark string
		goValue        any
	}{
		{`{"a": 1, "b": [true, false, null]}`, `{"a": 1, "b": [True, False, None]}`, map[string]any{"a": 1, "b": []any{true, false, nil}}},
		{`{"html": "<b>&amp;</b>"}`, `{"html": "<b>&amp;</b>"}`, map[string]any{"html": "<b>&amp;</b>"}},
		{`["\u003c\u0026\u003e"]`, `["<&>"]`, []any{"<&>"}},
		{`{"del": "a\u007fb", "nl": "x\ny", "nul": "\u0000", "tab": "\t"}`, `{"del": "a\x7fb", "nl": "x\ny", "nul": "\x00", "tab": "\t"}`,
			map[string]any{"del": "a\x7fb", "nl": "x\ny", "tab": "\t", "nul": "\x00"}},
		{`{"f": 1.0, "g": 2.5, "h": -0.125, "i": 7}`, `{"f": 1.0, "g": 2.5, "h": -0.125, "i": 7}`, map[string]any{"f": 1.0, "g": 2.5, "h": -0.125, "i": 7}},
		{`{"text": "café ☕"}`, `{"text": "café ☕"}`, map[string]any{"text": "café ☕"}},
		{`[[[1], {"deep": {"er": []}}]]`, `[[[1], {"deep": {"er": []}}]]`, []any{[]any{[]any{1}, map[string]any{"deep": map[string]any{"er": []any{}}}}}},
	} {
		t.Run(tc.json, func(t *testing.T) {
			cli, err := topix.ParseJSON([]byte(`{"v": ` + tc.json + `}`))
			if err != nil {
				t.Fatal(err)
			}
			gof, err := topix.FieldsOf(map[string]any{"v": tc.goValue})
			if err != nil {
				t.Fatal(err)
			}
			script := emitted(t, tc.starlark)
			if cli[0].Value != script || gof[0].Value != script {
				t.Errorf("the three paths differ:\n cli      %s\n script   %s\n go       %s", cli[0].Value, script, gof[0].Value)
			}
			if !json.Valid([]byte(script)) {
				t.Errorf("%s is not valid JSON", script)
			}
		})
	}
}

func TestEmitKeepsADictsOrder(t *testing.T) {
	if got := emitted(t, `{"z": 1, "a": 2, "m": {"y": 1, "b": 2}}`); got != `{"z":1,"a":2,"m":{"y":1,"b":2}}` {
		t.Errorf("emit wrote %s", got)
	}
	cli, _ := topix.ParseJSON([]byte(`{"v": {"z": 1, "a": 2}}`))
	if cli[0].Value != `{"z":1,"a":2}` {
		t.Errorf("the CLI wrote %s", cli[0].Value)
	}
}

func TestJSONEncodeRefusesWhatJSONCannotSay(t *testing.T) {
	for expr, want := range map[string]string{
		`float("nan")`:   "NaN and infinite floats have no JSON form",
		`{1: 2}`:         "its keys must be str",
		`len`:            "cannot encode builtin_function_or_method as JSON",
		`deep(2000)`:     "nests deeper than 1000 levels",
		`selfish()`:      "nests deeper than 1000 levels",
		`[float("inf")]`: "NaN and infinite floats",
	} {
		s, env, _, err := compile(t, `
def deep(n):
    x = []
    for i in range(n):
        x = [x]
    return x
def selfish():
    x = []
    x.append(x)
    return x
def consumer(data):
    json.encode(`+expr+`)
`, "consumer")
		if err != nil {
			t.Fatal(err)
		}
		res := handle(t, s, env, &engine.Message{ID: "1-1"})
		if res.Err == nil || !strings.Contains(res.Err.Error(), want) {
			t.Errorf("json.encode(%s): err = %v, want %q", expr, res.Err, want)
		}
	}
}

// FuzzEmitWritesValidJSON emits nested values holding any text and checks
// the result is JSON that encoding/json accepts and reads back.
func FuzzEmitWritesValidJSON(f *testing.F) {
	for _, s := range []string{"\x7f", "<script>", "\xff\xfe", "a\"b\\c", "\u2028", "\x1b[31m"} {
		f.Add(s)
	}
	s, env, _, err := compile(f, `
def consumer(data):
    t = data["t"]
    emit("out", {"v": [t, {t: t, "n": 1.5}, (t,)]})
    emit("out", {"v": json.encode({"k": t})})
`, "consumer")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, text string) {
		res := handle(t, s, env, &engine.Message{ID: "1-1", Fields: []topix.Field{{Name: "t", Value: text}}})
		if res.Err != nil {
			t.Fatal(res.Err)
		}
		for _, e := range res.Emits {
			v := e.Fields[0].Value
			if !json.Valid([]byte(v)) {
				t.Fatalf("emit of %q wrote %q: not valid JSON", text, v)
			}
		}
		var back []any
		if err := json.Unmarshal([]byte(res.Emits[0].Fields[0].Value), &back); err != nil || len(back) != 3 {
			t.Fatalf("read back: %v, %v", back, err)
		}
		if want := strings.ToValidUTF8(text, "\ufffd"); !strings.Contains(fmt.Sprint(back[0]), "\ufffd") && back[0] != want {
			t.Fatalf("the text %q came back as %q", text, back[0])
		}
	})
}
