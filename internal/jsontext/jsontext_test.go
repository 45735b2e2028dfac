package jsontext

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppendString(t *testing.T) {
	for in, want := range map[string]string{
		"plain":          `"plain"`,
		"<a & b>":        `"<a & b>"`,
		"quote \" \\":    `"quote \" \\"`,
		"del \x7f":       `"del \u007f"`,
		"nl\nret\r\ttab": `"nl\nret\r\ttab"`,
		"\x00\x1b\b\f":   `"\u0000\u001b\b\f"`,
		"café ☕ \u2028":  "\"café ☕ \u2028\"",
		"bad \xff\xfe!":  "\"bad \ufffd\ufffd!\"",
		"":               `""`,
	} {
		got := string(AppendString(nil, in))
		if got != want {
			t.Errorf("AppendString(%q) = %s, want %s", in, got, want)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("AppendString(%q) = %s is not valid JSON", in, got)
		}
	}
}

func TestAppendFloat(t *testing.T) {
	for in, want := range map[float64]string{1: "1.0", 2.5: "2.5", -0.125: "-0.125", 1e21: "1e+21", 1e-7: "1e-07", 100000: "100000.0", 0.1: "0.1"} {
		got, err := AppendFloat(nil, in)
		if err != nil || string(got) != want {
			t.Errorf("AppendFloat(%v) = %s, %v; want %s", in, got, err, want)
		}
	}
}

func TestRecompact(t *testing.T) {
	for in, want := range map[string]string{
		`{ "b" : 1 , "a" : [ 1.50 , -0 , 1e3 ] }`:    `{"b":1,"a":[1.50,-0,1e3]}`,
		`{"x": "\u003c\u0026\u003e", "y": "\u00e9"}`: `{"x":"<&>","y":"é"}`,
		`[{"a": {}}, [], [[null, true, false]]]`:     `[{"a":{}},[],[[null,true,false]]]`,
		`{"del": "\u007f", "nl": "a\nb"}`:            `{"del":"\u007f","nl":"a\nb"}`,
		`"just a string"`:                            `"just a string"`,
	} {
		got, err := Recompact([]byte(in))
		if err != nil || got != want {
			t.Errorf("Recompact(%s) = %s, %v; want %s", in, got, err, want)
		}
	}
	if _, err := Recompact([]byte(strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1))); err != ErrTooDeep {
		t.Errorf("Recompact of a too deep array: err = %v", err)
	}
	if _, err := Recompact([]byte(`{"a":`)); err == nil {
		t.Error("Recompact of invalid JSON succeeded")
	}
}

// FuzzAppendString checks that any string, valid UTF-8 or not, becomes
// valid JSON that reads back as the same text (invalid bytes as U+FFFD).
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a\x7fb", "<>&", "\xff", "\u2028", "\"\\", "\x00\x1f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := AppendString(nil, s)
		if !json.Valid(out) {
			t.Fatalf("AppendString(%q) = %s: not valid JSON", s, out)
		}
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatal(err)
		}
		want := s
		if !utf8.ValidString(s) {
			want = replaceInvalid(s)
		}
		if back != want {
			t.Fatalf("AppendString(%q) reads back as %q, want %q", s, back, want)
		}
	})
}

// replaceInvalid replaces each byte that is not UTF-8 with U+FFFD.
func replaceInvalid(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteString("\ufffd")
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func TestRecompactRefusesTrailingValues(t *testing.T) {
	for _, in := range []string{`{"a":1} 2`, `[1][2]`, ``, `   `} {
		if out, err := Recompact([]byte(in)); err == nil {
			t.Errorf("Recompact(%q) = %q, want an error", in, out)
		}
	}
}
