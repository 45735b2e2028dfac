package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix/internal/redistest"
)

func TestParseReadReply(t *testing.T) {
	c := &Consumer{opts: Options{Stream: "s", Group: "g", Consumer: "c"}}
	entries := "*2\r\n" +
		"*2\r\n$3\r\n1-0\r\n*4\r\n$1\r\na\r\n$5\r\nx\r\ny\x00\r\n$1\r\nb\r\n$0\r\n\r\n" +
		"*2\r\n$3\r\n2-0\r\n%s"
	for _, tc := range []struct {
		name, raw, want string
		err             string
	}{
		{"RESP2", "*1\r\n*2\r\n$1\r\ns\r\n" + fmt.Sprintf(entries, "*2\r\n$1\r\nk\r\n$1\r\nv\r\n"), `1-0 [{a x` + "\r\n" + `y` + "\x00" + `} {b }]; 2-0 [{k v}]`, ""},
		{"RESP3", "%1\r\n$1\r\ns\r\n" + fmt.Sprintf(entries, "*2\r\n$1\r\nk\r\n$1\r\nv\r\n"), `1-0 [{a x` + "\r\n" + `y` + "\x00" + `} {b }]; 2-0 [{k v}]`, ""},
		{"deleted RESP2", "*1\r\n*2\r\n$1\r\ns\r\n" + fmt.Sprintf(entries, "*-1\r\n"), `1-0 [{a x` + "\r\n" + `y` + "\x00" + `} {b }]; 2-0 []`, ""},
		{"deleted RESP3", "%1\r\n$1\r\ns\r\n" + fmt.Sprintf(entries, "_\r\n"), `1-0 [{a x` + "\r\n" + `y` + "\x00" + `} {b }]; 2-0 []`, ""},
		{"timeout RESP2", "*-1\r\n", "", ""},
		{"timeout RESP3", "_\r\n", "", ""},
		{"error", "-NOGROUP No such key\r\n", "", "NOGROUP No such key"},
		{"cut short", "*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\na\r\n$9\r\nxy\r\n", "", "unexpected XREADGROUP reply"},
		{"garbage", "+OK\r\n", "", "unexpected XREADGROUP reply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msgs, err := c.parseReadReply([]byte(tc.raw), 1)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err && !errors.Is(err, errBadReply) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			for i, m := range msgs {
				if i > 0 {
					got += "; "
				}
				got += fmt.Sprintf("%s %v", m.ID, m.Fields)
				if m.Stream != "s" || m.Attempt != 1 {
					t.Errorf("metadata %+v", m)
				}
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	// A deleted entry has nil fields, not an empty slice.
	msgs, _ := c.parseReadReply([]byte("_\r\n"), 1)
	if msgs != nil {
		t.Errorf("timeout gave %v", msgs)
	}
	msgs, _ = c.parseReadReply([]byte("%1\r\n$1\r\ns\r\n"+fmt.Sprintf(entries, "_\r\n")), 1)
	if msgs[1].Fields != nil {
		t.Errorf("deleted entry fields = %#v, want nil", msgs[1].Fields)
	}
	var re interface{ RedisError() }
	if _, err := c.parseReadReply([]byte("-WRONGTYPE x\r\n"), 1); !errors.As(err, &re) || classify(err) != errWrongType {
		t.Errorf("error reply %v is not a Redis error", err)
	}
}

func TestReadBufferIsKeptUnlessAReplyGrewItTooLarge(t *testing.T) {
	rdb := redistest.Must(t).Client()
	defer rdb.Close()
	ctx := context.Background()
	c := &Consumer{rdb: rdb, opts: Options{Stream: "s", Group: "g", Consumer: "c", Batch: 10, Block: 10 * time.Millisecond}}
	if err := rdb.XGroupCreateMkStream(ctx, "s", "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, size := range []int{100, 2 << 20, 100} {
		value := strings.Repeat("x", size)
		rdb.XAdd(ctx, &redis.XAddArgs{Stream: "s", Values: []string{"v", value}})
		msgs, err := c.readGroup(ctx, ">", 10, &buf)
		if err != nil || len(msgs) != 1 || msgs[0].Fields[0].Value != value {
			t.Fatalf("%d-byte entry: read %d entries, err %v", size, len(msgs), err)
		}
		switch kept := buf.Cap(); {
		case size > maxKeptReply && kept != 0:
			t.Errorf("after a %d-byte reply the reader keeps a %d-byte buffer", size, kept)
		case size < maxKeptReply && kept == 0:
			t.Errorf("after a %d-byte reply the reader dropped its buffer", size)
		}
	}
}
