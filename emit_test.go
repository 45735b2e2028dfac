package topix_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix"
	"github.com/topix-dev/topix/internal/redistest"
)

var srv *redistest.Server

func TestMain(m *testing.M) { os.Exit(redistest.Main(m, &srv)) }

func ExampleEmit() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr}) // your Redis, e.g. "localhost:6379"
	defer rdb.Close()

	id, err := topix.Emit(ctx, rdb, "orders", map[string]any{"sku": "A-1", "qty": 2, "gift": true})
	if err != nil {
		fmt.Println(err)
		return
	}

	// What a consumer of "orders" gets: every value as a string.
	entry, _ := rdb.XRange(ctx, "orders", id, id).Result()
	fmt.Println(entry[0].Values["sku"], entry[0].Values["qty"], entry[0].Values["gift"])
	// Output: A-1 2 true
}

func TestParseJSON(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     string // fields as name=value, space-separated
		err      string
	}{
		{"order is kept", `{"b": "1", "a": "2"}`, "b=1 a=2", ""},
		{"strings as they are", `{"s": "a \"q\" \u00e9"}`, `s=a "q" é`, ""},
		{"numbers keep their digits", `{"n": 1.50, "e": 1e3, "i": -7}`, "n=1.50 e=1e3 i=-7", ""},
		{"booleans and null as JSON", `{"t": true, "f": false, "z": null}`, "t=true f=false z=null", ""},
		{"arrays and objects compact", `{"a": [1, 2], "o": {"k": [ "v" ]}}`, `a=[1,2] o={"k":["v"]}`, ""},
		{"empty string value", `{"e": ""}`, "e=", ""},
		{"escapes and brackets inside strings", `{"a\"b": "x}y", "n": {"s": "a]b,\"c"}, "e": "\u00e9\\n"}`, `a"b=x}y n={"s":"a]b,\"c"} e=é\n`, ""},
		{"no spaces at all", `{"a":1,"b":[{"c":"d"}],"e":false}`, `a=1 b=[{"c":"d"}] e=false`, ""},
		{"surrounding space", " \n{\"k\": \"v\"}\n ", "k=v", ""},
		{"empty input", "  ", "", "expected a JSON object, got nothing"},
		{"array", `[1]`, "", "got an array"},
		{"number", `42`, "", "got a number"},
		{"null", `null`, "", "got null"},
		{"empty object", `{}`, "", "the JSON object is empty"},
		{"duplicate name", `{"k": 1, "k": 2}`, "", `field "k" appears twice`},
		{"cut short", `{"k": `, "", "it ends early after 6 bytes"},
		{"bad character", `{"k": x}`, "", "invalid JSON at byte 7: invalid character 'x'"},
		{"two objects", `{"a": 1}{"b": 2}`, "", "invalid character '{' after top-level value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fields, err := topix.ParseJSON([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				if fields != nil {
					t.Errorf("fields = %v with an error, want none", fields)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := show(fields); got != tc.want {
				t.Errorf("fields = %s, want %s", got, tc.want)
			}
		})
	}
}

func show(fields []topix.Field) string {
	parts := make([]string, len(fields))
	for i, f := range fields {
		parts[i] = f.Name + "=" + f.Value
	}
	return strings.Join(parts, " ")
}

func TestFieldsOf(t *testing.T) {
	fields, err := topix.FieldsOf(map[string]any{
		"s": "x", "b": []byte{0, 0xff}, "n": 2, "f": 0.5, "z": nil, "l": []int{1, 2}, "m": map[string]int{"k": 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "b=\x00\xff f=0.5 l=[1,2] m={\"k\":1} n=2 s=x z=null"
	if got := show(fields); got != want {
		t.Errorf("fields = %q, want %q", got, want)
	}
	if _, err := topix.FieldsOf(map[string]any{"c": make(chan int)}); err == nil || !strings.Contains(err.Error(), `field "c"`) {
		t.Errorf("a channel value: err = %v, want an error naming the field", err)
	}
	if _, err := topix.FieldsOf(nil); err == nil {
		t.Error("an empty map: no error")
	}
}

func TestEmitFieldsRefusesBadInputAndWritesNothing(t *testing.T) {
	ctx := context.Background()
	rdb := srv.Client()
	defer rdb.Close()
	for _, tc := range []struct {
		name   string
		stream string
		fields []topix.Field
		maxLen int64
		err    string
	}{
		{"empty stream", "", []topix.Field{{Name: "k", Value: "v"}}, 0, "the stream name is empty"},
		{"no fields", "bad", nil, 0, "at least one field"},
		{"negative maxlen", "bad", []topix.Field{{Name: "k", Value: "v"}}, -1, "maxlen must be 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := topix.EmitFields(ctx, rdb, tc.stream, tc.fields, tc.maxLen)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
		})
	}
	if n, _ := rdb.DBSize(ctx).Result(); n != 0 {
		t.Errorf("DBSIZE = %d after refused emits, want 0", n)
	}
}

func TestEmitFieldsBinaryAndTrim(t *testing.T) {
	ctx := context.Background()
	rdb := srv.Client()
	defer rdb.Close()
	for i := range 300 {
		if _, err := topix.EmitFields(ctx, rdb, "trimmed", []topix.Field{{Name: "\x00k", Value: fmt.Sprint(i, "\xff")}}, 10); err != nil {
			t.Fatal(err)
		}
	}
	n, _ := rdb.XLen(ctx, "trimmed").Result()
	if n >= 300 || n < 10 {
		t.Errorf("XLEN = %d after MAXLEN ~ 10, want between 10 and 300", n)
	}
	last, _ := rdb.XRevRangeN(ctx, "trimmed", "+", "-", 1).Result()
	if got := last[0].Values["\x00k"]; got != "299\xff" {
		t.Errorf("last value = %q, want %q", got, "299\xff")
	}
}
