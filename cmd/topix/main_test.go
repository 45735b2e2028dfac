package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/topix-dev/topix/internal/redistest"
)

// asTopix, set in a test binary's environment, makes it run as topix: the
// end-to-end tests start the real CLI this way, as testscript does.
const asTopix = "TOPIX_TEST_RUN_AS_TOPIX"

func TestMain(m *testing.M) {
	if os.Getenv(asTopix) == "1" {
		os.Exit(run(context.Background(), os.Args[1:], os.Environ(), os.Stdin, os.Stdout, os.Stderr))
	}
	testscript.Main(m, map[string]func(){
		"topix": func() {
			os.Exit(run(context.Background(), os.Args[1:], os.Environ(), os.Stdin, os.Stdout, os.Stderr))
		},
	})
}

// TestScripts runs the CLI sessions in testdata/script. Each script gets a
// private redis-server; TOPIX_REDIS_URL points at it, $SCRIPTS at the
// repository's example scripts and $DEVPORT is a free port for topix dev.
// Besides the standard commands, scripts can use:
//
//	redis ARGS...            run a Redis command, print the reply (one line per element)
//	await PATTERN ARGS...    re-run a Redis command until its reply matches PATTERN (15s)
//	exits CODE PROG ARGS...  run a program that must exit with CODE
func TestScripts(t *testing.T) {
	scripts, err := filepath.Abs("../../scripts")
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			srv, err := redistest.Start(env.WorkDir)
			if err != nil {
				return err
			}
			env.Defer(srv.Stop)
			port, err := redistest.FreePort()
			if err != nil {
				return err
			}
			env.Setenv("TOPIX_REDIS_URL", srv.URL())
			env.Setenv("SCRIPTS", scripts)
			env.Setenv("DEVPORT", strconv.Itoa(port))
			env.Setenv("NO_COLOR", "1")
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"redis": cmdRedis,
			"await": cmdAwait,
			"exits": cmdExits,
		},
	})
}

func scriptClient(ts *testscript.TestScript) *redis.Client {
	opts, err := redis.ParseURL(ts.Getenv("TOPIX_REDIS_URL"))
	ts.Check(err)
	opts.Protocol = 3 // XINFO replies are maps: readable lines
	return redis.NewClient(opts)
}

func redisDo(ts *testscript.TestScript, args []string) (string, error) {
	c := scriptClient(ts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmdArgs := make([]any, len(args))
	for i, a := range args {
		cmdArgs[i] = a
	}
	v, err := c.Do(ctx, cmdArgs...).Result()
	if err == redis.Nil {
		return "(nil)\n", nil
	}
	if err != nil {
		return "", err
	}
	return formatReply(v), nil
}

func cmdRedis(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) == 0 {
		ts.Fatalf("usage: redis COMMAND [ARGS...]")
	}
	out, err := redisDo(ts, args)
	if neg {
		if err == nil {
			ts.Fatalf("redis %s succeeded; want an error", strings.Join(args, " "))
		}
		fmt.Fprintln(ts.Stdout(), err)
		return
	}
	ts.Check(err)
	fmt.Fprint(ts.Stdout(), out)
}

func cmdAwait(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: await PATTERN COMMAND [ARGS...]")
	}
	re, err := regexp.Compile("(?m)" + args[0])
	ts.Check(err)
	deadline := time.Now().Add(15 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		out, err := redisDo(ts, args[1:])
		if err == nil && re.MatchString(out) {
			fmt.Fprint(ts.Stdout(), out)
			return
		}
		last = out
		if err != nil {
			last = err.Error()
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	ts.Fatalf("await: %q never matched the reply of %s; last reply:\n%s", args[0], strings.Join(args[1:], " "), last)
}

// formatReply prints a reply as one line per element of a top-level
// array, "key: value" lines for a top-level map, and nested values inline.
func formatReply(v any) string {
	var b strings.Builder
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			b.WriteString(inline(e))
			b.WriteByte('\n')
		}
	case map[any]any:
		for _, k := range sortedKeys(v) {
			fmt.Fprintf(&b, "%s: %s\n", inline(k), inline(v[k]))
		}
	default:
		b.WriteString(inline(v))
		b.WriteByte('\n')
	}
	return b.String()
}

func inline(v any) string {
	switch v := v.(type) {
	case string:
		if utf8.ValidString(v) && !strings.ContainsAny(v, "\x00\n\r\t ") && v != "" {
			return v
		}
		return strconv.Quote(v)
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			parts[i] = inline(e)
		}
		return "[" + strings.Join(parts, " ") + "]"
	case map[any]any:
		var parts []string
		for _, k := range sortedKeys(v) {
			parts = append(parts, inline(k)+": "+inline(v[k]))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case nil:
		return "(nil)"
	}
	return fmt.Sprint(v)
}

func sortedKeys(m map[any]any) []any {
	keys := make([]any, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b any) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	return keys
}

func cmdExits(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exits CODE PROGRAM [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	if ee, ok := err.(*exec.ExitError); ok {
		got = ee.ExitCode()
	} else if err != nil {
		ts.Fatalf("%s: %v", args[1], err)
	}
	if got != want {
		ts.Fatalf("%s exited with %d, want %d", strings.Join(args[1:], " "), got, want)
	}
}
