package starlib_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/topix-dev/topix"
	"github.com/topix-dev/topix/engine"
	"github.com/topix-dev/topix/starlib"
)

// The per-entry path of a worker: entry -> Starlark dict -> call -> outcome.
// go test -bench . -benchmem ./starlib

func benchHandler(b *testing.B, src string) engine.Handler {
	b.Helper()
	path := filepath.Join(b.TempDir(), "app.star")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		b.Fatal(err)
	}
	s, err := starlib.Compile(path, "consumer", nil)
	if err != nil {
		b.Fatal(err)
	}
	h, err := starlib.NewRuntime(s, &starlib.Env{}).NewHandler(0)
	if err != nil {
		b.Fatal(err)
	}
	return h
}

func benchMessage() *engine.Message {
	payload := `{"id": 42, "kind": "order", "total": 12.50, "sku": "SKU-000042"}                                  `
	return &engine.Message{ID: "1700000000000-0", Stream: "in", Group: "g", Consumer: "c", Attempt: 1,
		Fields: []topix.Field{{Name: "payload", Value: payload}}}
}

// benchHandle measures Handle of src's consumer on msg, checking each result.
func benchHandle(b *testing.B, src string, msg *engine.Message, check func(engine.Result) bool) {
	h := benchHandler(b, src)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if res := h.Handle(ctx, msg); !check(res) {
			b.Fatal(res.Err)
		}
	}
}

func succeeded(res engine.Result) bool { return res.Err == nil }

func BenchmarkHandleTrivial(b *testing.B) {
	benchHandle(b, "def consumer(data):\n    pass\n", benchMessage(), succeeded)
}

func BenchmarkHandleWithMsg(b *testing.B) {
	benchHandle(b, "def consumer(data, msg):\n    pass\n", benchMessage(), succeeded)
}

func BenchmarkHandleRealistic(b *testing.B) {
	benchHandle(b, `def consumer(data):
    p = json.decode(data["payload"])
    if p["kind"] == "order":
        emit("out:orders", {"id": p["id"], "total": p["total"]}, maxlen = 10000)
    else:
        emit("out:other", {"id": p["id"]})
`, benchMessage(), func(res engine.Result) bool { return res.Err == nil && len(res.Emits) == 1 })
}

func BenchmarkHandleFields(b *testing.B) {
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("%d-fields", n), func(b *testing.B) {
			msg := benchMessage()
			for i := 1; i < n; i++ {
				msg.Fields = append(msg.Fields, topix.Field{Name: fmt.Sprintf("field%d", i), Value: "value"})
			}
			benchHandle(b, "def consumer(data):\n    pass\n", msg, succeeded)
		})
	}
}
