package starlib_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix/engine"
	"github.com/topix-dev/topix/internal/redistest"
	"github.com/topix-dev/topix/starlib"
)

var srv *redistest.Server

func TestMain(m *testing.M) { os.Exit(redistest.Main(m, &srv)) }

// live is a consumer running a script against the test's redis-server,
// with hot reload on.
type live struct {
	rdb    *redis.Client
	rt     *starlib.Runtime
	c      *engine.Consumer
	logs   *redistest.Buffer
	stream string
}

func startScript(t *testing.T, path string) *live {
	t.Helper()
	logs := &redistest.Buffer{}
	env := &starlib.Env{Logger: slog.New(slog.NewTextHandler(logs, nil))}
	script, err := starlib.Compile(path, "consumer", env)
	if err != nil {
		t.Fatal(err)
	}
	rdb := srv.Client()
	t.Cleanup(func() { rdb.Close() })
	rt := starlib.NewRuntime(script, env)
	stream := "in:" + t.Name()
	c, err := engine.New(rdb, rt, engine.Options{Stream: stream, Group: "g", Consumer: "c", Concurrency: 2, Block: 50 * time.Millisecond, Logger: env.Logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { c.Run(ctx) })
	wg.Go(func() { rt.Watch(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	// The group exists once Run has started.
	redistest.WaitFor(t, 5*time.Second, "the consumer group", func() bool {
		g, _ := rdb.XInfoGroups(context.Background(), stream).Result()
		return len(g) == 1
	})
	return &live{rdb: rdb, rt: rt, c: c, logs: logs, stream: stream}
}

func (l *live) add(t *testing.T, fields ...string) {
	t.Helper()
	if err := l.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: l.stream, Values: fields}).Err(); err != nil {
		t.Fatal(err)
	}
}

// out returns the "v" field of the entries of stream out, by their "n".
func (l *live) out(t *testing.T, out string) map[string][]string {
	t.Helper()
	entries, err := l.rdb.XRange(context.Background(), out, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, e := range entries {
		n, _ := e.Values["n"].(string)
		v, _ := e.Values["v"].(string)
		got[n] = append(got[n], v)
	}
	return got
}

func writeFile(t *testing.T, path, src string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestEmitIsSentOnlyForSucceedingCalls(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.star")
	writeFile(t, path, `
def consumer(data):
    emit(data["to"], {"n": data["n"], "v": "x"})
    if data.get("fail") == "1":
        fail("failing after an emit")
`)
	l := startScript(t, path)
	out := "out:" + t.Name()
	for i := range 6 {
		fail := "0"
		if i%3 == 0 {
			fail = "1"
		}
		l.add(t, "to", out, "n", strconv.Itoa(i), "fail", fail)
	}
	redistest.WaitFor(t, 10*time.Second, "6 calls", func() bool {
		st := l.c.Stats()
		return st.Acked == 4 && st.Failed == 2
	})
	got := l.out(t, out)
	for i := range 6 {
		n := strconv.Itoa(i)
		want := 1
		if i%3 == 0 {
			want = 0
		}
		if len(got[n]) != want {
			t.Errorf("entry %s emitted %d times, want %d", n, len(got[n]), want)
		}
	}
	if p, _ := l.rdb.XPending(context.Background(), l.stream, "g").Result(); p.Count != 2 {
		t.Errorf("pending = %d, want the 2 failed entries", p.Count)
	}
}

const version = `
def consumer(data):
    emit("%s", {"n": data["n"], "v": "%s"})
`

// saves are the ways editors write a file.
var saves = map[string]func(t *testing.T, path, src string){
	"in-place": func(t *testing.T, path, src string) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(src)
		f.Close()
	},
	"temp-then-rename": func(t *testing.T, path, src string) {
		tmp := path + ".tmp123"
		writeFile(t, tmp, src)
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	},
	// vim's default (writebackup, backupcopy=auto): probe the directory,
	// move the original aside, write a new file, remove the backup.
	"vim": func(t *testing.T, path, src string) {
		probe := filepath.Join(filepath.Dir(path), "4913")
		writeFile(t, probe, "")
		os.Remove(probe)
		if err := os.Rename(path, path+"~"); err != nil {
			t.Fatal(err)
		}
		writeFile(t, path, src)
		os.Remove(path + "~")
	},
}

func TestHotReload(t *testing.T) {
	for name, save := range saves {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "app.star")
			out := "out:" + t.Name()
			writeFile(t, path, strings.ReplaceAll(strings.Replace(version, "%s", out, 1), "%s", "1"))
			l := startScript(t, path)

			l.add(t, "n", "1")
			redistest.WaitFor(t, 5*time.Second, "entry 1 acked", func() bool { return l.c.Stats().Acked == 1 })

			edited := time.Now()
			save(t, path, strings.ReplaceAll(strings.Replace(version, "%s", out, 1), "%s", "2"))
			redistest.WaitFor(t, 5*time.Second, "generation 2", func() bool { return l.rt.Script().Generation == 2 })
			t.Logf("reloaded %s after the save", time.Since(edited).Round(time.Millisecond))

			l.add(t, "n", "2")
			// The emit is added before the ack: wait for the ack.
			redistest.WaitFor(t, 5*time.Second, "entry 2 acked", func() bool { return l.c.Stats().Acked == 2 })
			got := l.out(t, out)
			if len(got) != 2 || got["1"][0] != "1" || got["2"][0] != "2" || len(got["1"]) != 1 {
				t.Errorf("emitted %v; want entry 1 by version 1 and entry 2 by version 2, once each", got)
			}
			if st := l.c.Stats(); st.Acked != 2 || st.Failed != 0 {
				t.Errorf("stats %+v, want 2 acked", st)
			}
			if !strings.Contains(l.logs.String(), "msg=\"script reloaded\" script="+path+" generation=2") {
				t.Errorf("no reload record in the log:\n%s", l.logs.String())
			}
			if ok, failed := l.rt.Reloads(); ok != 1 || failed != 0 {
				t.Errorf("reloads: %d ok, %d failed; want 1 and 0", ok, failed)
			}
			if p, h := l.rt.Version(); p != path || h != l.rt.Script().Hash {
				t.Errorf("Version() = %s %s", p, h)
			}
		})
	}
}

func TestBrokenEditKeepsThePreviousVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.star")
	out := "out:" + t.Name()
	writeFile(t, path, strings.ReplaceAll(strings.Replace(version, "%s", out, 1), "%s", "1"))
	l := startScript(t, path)

	writeFile(t, path, "def consumer(data):\n    emit(\"x\", {\"k\": undefined_name})\n    also_undefined()\n")
	redistest.WaitFor(t, 5*time.Second, "the failed reload in the log", func() bool {
		return strings.Count(l.logs.String(), "reload failed") == 2
	})
	logs := l.logs.String()
	for _, want := range []string{path + ":2:21: undefined: undefined_name", path + ":3:5: undefined: also_undefined"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	l.add(t, "n", "1")
	redistest.WaitFor(t, 5*time.Second, "entry 1", func() bool { return len(l.out(t, out)["1"]) == 1 })
	if got := l.out(t, out)["1"][0]; got != "1" || l.rt.Script().Generation != 1 {
		t.Errorf("entry handled by version %s, generation %d; want the first version still running", got, l.rt.Script().Generation)
	}

	// A syntax error is reported with its position too.
	writeFile(t, path, "def consumer(data):\n    emit(\"x\", {\"k\": }\n")
	redistest.WaitFor(t, 5*time.Second, "the syntax error in the log", func() bool {
		return strings.Contains(l.logs.String(), path+":2:21: got '}', want primary expression")
	})
	if g := l.rt.Script().Generation; g != 1 {
		t.Errorf("generation %d after broken edits, want 1", g)
	}

	// Fixing the file brings the new version in.
	writeFile(t, path, strings.ReplaceAll(strings.Replace(version, "%s", out, 1), "%s", "2"))
	redistest.WaitFor(t, 5*time.Second, "generation 2", func() bool { return l.rt.Script().Generation == 2 })
	if ok, failed := l.rt.Reloads(); ok != 1 || failed < 2 {
		t.Errorf("reloads: %d ok, %d failed; want 1 and at least 2", ok, failed)
	}
}

func TestBurstOfWritesReloadsOnce(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.star")
	out := "out:" + t.Name()
	writeFile(t, path, strings.ReplaceAll(strings.Replace(version, "%s", out, 1), "%s", "1"))
	l := startScript(t, path)
	for i := range 10 {
		writeFile(t, path, strings.ReplaceAll(strings.Replace(version, "%s", out, 1), "%s", "burst"+strconv.Itoa(i)))
	}
	redistest.WaitFor(t, 5*time.Second, "the reload", func() bool { return l.rt.Script().Generation >= 2 })
	l.add(t, "n", "1")
	redistest.WaitFor(t, 5*time.Second, "entry 1", func() bool { return len(l.out(t, out)["1"]) == 1 })
	if g := l.rt.Script().Generation; g != 2 {
		t.Errorf("generation %d after a burst of writes, want 2 (one reload)", g)
	}
	if got := l.out(t, out)["1"][0]; got != "burst9" {
		t.Errorf("entry handled by version %q, want the last write", got)
	}
}

func TestReloadFollowsLoadedModules(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "lib"), 0o755)
	path := filepath.Join(dir, "app.star")
	out := "out:" + t.Name()
	writeFile(t, filepath.Join(dir, "lib", "v.star"), "V = \"1\"\n")
	writeFile(t, path, "load(\"lib/v.star\", \"V\")\ndef consumer(data):\n    emit(\""+out+"\", {\"n\": data[\"n\"], \"v\": V})\n")
	l := startScript(t, path)
	writeFile(t, filepath.Join(dir, "lib", "v.star"), "V = \"2\"\n")
	redistest.WaitFor(t, 5*time.Second, "generation 2", func() bool { return l.rt.Script().Generation == 2 })
	l.add(t, "n", "1")
	redistest.WaitFor(t, 5*time.Second, "entry 1", func() bool { return len(l.out(t, out)["1"]) == 1 })
	if got := l.out(t, out)["1"][0]; got != "2" {
		t.Errorf("entry handled with V = %q, want the edited module's 2", got)
	}
}

func TestDeadLetterBuiltin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.star")
	writeFile(t, path, `
def consumer(data):
    if data["n"] == "2":
        dead_letter("no customer " + data["n"])
`)
	l := startScript(t, path)
	l.add(t, "n", "1")
	l.add(t, "n", "2")
	redistest.WaitFor(t, 5*time.Second, "both entries done", func() bool { return l.c.Stats().Acked == 2 })
	dead, err := l.rdb.XRange(context.Background(), l.stream+":dead", "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].Values["n"] != "2" || dead[0].Values["topix.attempts"] != "1" ||
		dead[0].Values["topix.error"] != path+":4:20: no customer 2" {
		t.Errorf("dead letters %+v; want entry 2, at its first attempt, with the reason and its position", dead)
	}
}

// TestDeadLettersKeepTheBacktrace: a dead letter of a script's error keeps
// its backtrace, every frame of the script, bounded for an error of any
// size; one not raised by the script has an empty one.
func TestDeadLettersKeepTheBacktrace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.star")
	writeFile(t, path, `
def check(data):
    if data["n"] == "big":
        dead_letter("x" * 100000)
    dead_letter("no customer " + data["n"])

def consumer(data):
    check(data)
`)
	l := startScript(t, path)
	l.add(t, "n", "2")
	l.add(t, "n", "big")
	redistest.WaitFor(t, 5*time.Second, "both entries dead-lettered", func() bool { return l.c.Stats().Acked == 2 })
	dead, err := l.rdb.XRange(context.Background(), l.stream+":dead", "-", "+").Result()
	if err != nil || len(dead) != 2 {
		t.Fatalf("dead letters %d, %v", len(dead), err)
	}
	bt, _ := dead[0].Values["topix.backtrace"].(string)
	for _, want := range []string{path + ":8:10: in consumer", path + ":5:16: in check", "Error in dead_letter: no customer 2"} {
		if !strings.Contains(bt, want) {
			t.Errorf("backtrace %q lacks %q", bt, want)
		}
	}
	bt, _ = dead[1].Values["topix.backtrace"].(string)
	if e, _ := dead[1].Values["topix.error"].(string); len(e) < 100000 || len(bt) > engine.MaxBacktrace+100 || !strings.HasSuffix(bt, "(cut at 16 KiB)") {
		t.Errorf("a 100 kB error: topix.error %d bytes, backtrace %d bytes ending %q", len(e), len(bt), bt[max(0, len(bt)-30):])
	}
}
