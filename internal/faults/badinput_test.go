//go:build chaos

package faults

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// f. bad inputs: each is one clear line and a documented exit code, and
// writes nothing; valid but unusual input is processed correctly.
func TestBadInput(t *testing.T) {
	srv := startServer(t)
	locked := startServer(t, "--requirepass", "s3cret")
	script := filepath.Join(scripts, "recorder.star")
	dirScript := t.TempDir()
	unreadable := filepath.Join(scripts, "unreadable.star")
	if err := os.WriteFile(unreadable, []byte(recorder), 0o000); err != nil {
		t.Fatal(err)
	}
	srv.rdb.Set(context.Background(), "a-string", "x", 0)
	refused := "redis://127.0.0.1:1/0"
	wrongPass := "redis://:wrong@" + locked.Addr + "/0"
	noPass := "redis://" + locked.Addr + "/0"

	for _, tc := range []struct {
		name  string
		url   string // default: srv
		args  []string
		code  int
		line  string // the one line on stderr contains this
		asNob bool   // run as nobody (root reads any file)
	}{
		{"unreachable Redis", refused, []string{"consumer", "in", "g", script}, 3, "cannot use Redis at redis://127.0.0.1:1/0: connection refused", false},
		{"unreachable Redis, emit", refused, []string{"emit", "in", `{"k": "v"}`}, 3, "connection refused", false},
		{"wrong password", wrongPass, []string{"consumer", "in", "g", script}, 3, "wrong user name or password", false},
		{"no password", noPass, []string{"emit", "in", `{"k": "v"}`}, 3, "Redis wants a password", false},
		{"malformed URL", "redis://:s3cret@host:notaport/0", []string{"consumer", "in", "g", script}, 2, "invalid Redis URL", false},
		{"wrong scheme", "http://localhost", []string{"emit", "in", `{"k": "v"}`}, 2, `unknown scheme "http"`, false},
		{"a key of the wrong type", "", []string{"consumer", "a-string", "g", script}, 2, `key "a-string" is a string, not a stream`, false},
		{"missing script", "", []string{"consumer", "in", "g", "/nonexistent/app.star"}, 2, "script /nonexistent/app.star: no such file", false},
		{"directory script", "", []string{"consumer", "in", "g", dirScript}, 2, "is a directory; give a .star file", false},
		{"unreadable script", "", []string{"consumer", "in", "g", unreadable}, 2, "permission denied; make it readable", os.Geteuid() == 0},
		{"empty stream name", "", []string{"consumer", "", "g", script}, 2, "the stream name is empty", false},
		{"empty stream name, emit", "", []string{"emit", "", `{"k": "v"}`}, 2, "the stream name is empty", false},
		{"empty group name", "", []string{"consumer", "in", "", script}, 2, "the group name is empty", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := srv.rdb.DBSize(context.Background()).Result()
			url := tc.url
			if url == "" {
				url = srv.URL()
			}
			p := launch(t, launchEnv{url: url, asNobody: tc.asNob}, tc.args...)
			select {
			case <-p.done:
			case <-time.After(15 * time.Second):
				t.Fatal("topix did not exit on bad input")
			}
			code := p.exitCode(t)
			stderr := strings.TrimRight(p.stderr.String(), "\n")
			if code != tc.code || strings.Count(stderr, "\n") != 0 || !strings.Contains(stderr, tc.line) {
				t.Errorf("exit %d, stderr %q; want exit %d and one line containing %q", code, stderr, tc.code, tc.line)
			}
			if strings.Contains(stderr, "s3cret") {
				t.Errorf("the password shows: %q", stderr)
			}
			if after, _ := srv.rdb.DBSize(context.Background()).Result(); after != before {
				t.Errorf("DBSIZE went from %d to %d: bad input wrote something", before, after)
			}
			report(t, "f. %s: exit %d: %s", tc.name, code, stderr)
		})
	}

	// Valid but unusual: a 1 MB field and non-UTF-8 bytes are processed
	// byte-exact.
	t.Run("1 MB field and binary values", func(t *testing.T) {
		ctx := context.Background()
		big := strings.Repeat("€", 1<<20/3) + "x" // 1 MB of multi-byte text
		binary := "\x00\xff\xfe\x80 not utf-8 \xc3\x28"
		line := fmt.Sprintf(`{"big": %q}`+"\n", big)
		emit := launch(t, launchEnv{url: srv.URL(), stdin: line}, "emit", "in", "-")
		if code := emit.exitCode(t); code != 0 {
			t.Fatalf("emit - of a 1 MB line: exit %d: %s", code, emit.stderr.String())
		}
		srv.rdb.XAdd(ctx, &redis.XAddArgs{Stream: "in", Values: []string{"bin\xff", binary, "big", binary}})
		echo := filepath.Join(scripts, "echo.star")
		os.WriteFile(echo, []byte("def consumer(data):\n    emit('echo', data)\n"), 0o644)
		p := startTopix(t, srv, "consumer", "in", "echo", echo)
		waitFor(t, 10*time.Second, "both entries echoed", func() bool {
			n, _ := srv.rdb.XLen(ctx, "echo").Result()
			return n == 2
		})
		p.stop(t, syscall.SIGTERM, 15*time.Second)
		got, _ := srv.rdb.XRange(ctx, "echo", "-", "+").Result()
		// Two workers: the echoes can come in either order.
		for _, e := range got {
			if _, ok := e.Values["bin\xff"]; ok {
				if e.Values["bin\xff"] != binary || e.Values["big"] != binary {
					t.Errorf("binary values changed: %q", e.Values)
				}
			} else if v, _ := e.Values["big"].(string); v != big {
				t.Errorf("the 1 MB field came back with %d bytes, want %d (or different bytes)", len(v), len(big))
			}
		}
		report(t, "f. a %d-byte field through emit - and a consumer, and non-UTF-8 names and values: byte-exact", len(big))
	})
}
