//go:build chaos

// Package faults is topix's fault suite: it runs the real topix binary
// against real redis-server processes, breaks things (kill -9, Redis
// restarts, poison entries, long calls, SIGTERM in a burst, bad input) and
// counts exactly what happened to every entry. Run it with `make chaos`.
//
// "Processed" is recorded by the consumers' own script, which emits the id
// of every entry it handled to a results stream; an emit is only added when
// the call succeeded, before the entry's ack. So for every entry sent the
// suite knows whether it was processed (and how often), dead-lettered,
// still pending, or lost.
package faults

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix/internal/redistest"
)

var (
	topixBin string // the binary under test, built by TestMain
	scripts  string // a directory with the suite's scripts

	reportMu sync.Mutex
	reports  []string
)

// recorder is the consumers' script: it records every entry it processes
// in the results stream, fails on poison entries, and busy-waits on slow
// ones (Starlark has no sleep).
const recorder = `
def consumer(data, msg):
    if data.get("poison") == "1":
        fail("poison entry " + data.get("i", "?"))
    spin = data.get("spin")
    if spin:
        end = time.now() + time.parse_duration(spin)
        while time.now() < end:
            pass
    emit("results", {"id": msg.id, "by": msg.consumer, "attempt": msg.attempt, "size": len(data.get("big", ""))})
`

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "topix-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Readable by everyone: scenario f runs topix as nobody.
	os.Chmod(dir, 0o755)
	topixBin = filepath.Join(dir, "topix")
	build := exec.Command("go", "build", "-o", topixBin, "../../cmd/topix")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build topix:", err)
		return 1
	}
	scripts = filepath.Join(dir, "scripts")
	os.Mkdir(scripts, 0o755)
	if err := os.WriteFile(filepath.Join(scripts, "recorder.star"), []byte(recorder), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	fmt.Println("\nfault suite figures:")
	sort.SliceStable(reports, func(i, j int) bool { return reports[i][:2] < reports[j][:2] })
	for _, r := range reports {
		fmt.Println("  " + r)
	}
	return code
}

// report records a scenario's figures for the summary printed at the end.
func report(t *testing.T, format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	t.Log(line)
	reportMu.Lock()
	reports = append(reports, line)
	reportMu.Unlock()
}

// server is a private redis-server, optionally persistent.
type server struct {
	*redistest.Server
	rdb   *redis.Client
	extra []string
}

func startServer(t *testing.T, extra ...string) *server {
	t.Helper()
	dir := t.TempDir()
	s, err := redistest.Start(dir, extra...)
	if err != nil {
		t.Fatal(err)
	}
	srv := &server{Server: s, rdb: s.Client(), extra: extra}
	t.Cleanup(func() { srv.rdb.Close(); srv.Server.Stop() })
	return srv
}

// restart kills the server with SIGKILL and starts it again on the same
// port and directory.
func (s *server) restart(t *testing.T) {
	t.Helper()
	s.Server.Stop()
	var port int
	fmt.Sscanf(s.Addr[strings.LastIndex(s.Addr, ":")+1:], "%d", &port)
	ns, err := redistest.StartOn(s.Dir, port, s.extra...)
	if err != nil {
		t.Fatal(err)
	}
	s.Server = ns
}

// proc is a topix process.
type proc struct {
	cmd    *exec.Cmd
	stderr *redistest.Buffer
	done   chan struct{}
	err    error
}

func startTopix(t *testing.T, srv *server, args ...string) *proc {
	return launch(t, launchEnv{url: srv.URL()}, args...)
}

// launchEnv is how a topix process is started.
type launchEnv struct {
	url      string // TOPIX_REDIS_URL
	stdin    string
	asNobody bool // run as user nobody: root can read any file
}

func launch(t *testing.T, env launchEnv, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(topixBin, args...)
	cmd.Env = append(os.Environ(), "TOPIX_REDIS_URL="+env.url, "NO_COLOR=1")
	cmd.Stdin = strings.NewReader(env.stdin)
	if env.asNobody {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	p := &proc{cmd: cmd, stderr: &redistest.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			t.Errorf("topix %v (pid %d) did not exit within 30s of SIGKILL", args, cmd.Process.Pid)
		}
		if t.Failed() {
			t.Logf("stderr of %v:\n%s", args, tail(p.stderr.String(), 40))
		}
	})
	return p
}

// consumer starts `topix consumer in g recorder.star` with extra flags.
func consumer(t *testing.T, srv *server, name string, flags ...string) *proc {
	args := append([]string{"consumer", "in", "g", filepath.Join(scripts, "recorder.star"), "--name", name,
		"--max-steps", "100000000000", "--log-level", "warn"}, flags...)
	return startTopix(t, srv, args...)
}

// stop sends sig and waits for the exit, returning how long it took.
func (p *proc) stop(t *testing.T, sig syscall.Signal, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("topix (pid %d) did not exit within %s of %s", p.cmd.Process.Pid, within, sig)
	}
	return time.Since(start)
}

// exitCode waits for the process to exit, for at most a minute.
func (p *proc) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		t.Fatalf("topix %v (pid %d) has not exited after a minute:\n%s", p.cmd.Args[1:], p.cmd.Process.Pid, tail(p.stderr.String(), 20))
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if p.err != nil {
		return -1
	}
	return 0
}

// seed adds n entries to stream in with fields made by fields(i).
func seed(t *testing.T, rdb *redis.Client, n int, fields func(i int) []string) {
	t.Helper()
	seedInto(t, rdb, "in", n, fields)
}

// seedInto adds n entries to stream with fields made by fields(i).
func seedInto(t *testing.T, rdb redis.UniversalClient, stream string, n int, fields func(i int) []string) {
	t.Helper()
	ctx := context.Background()
	for start := 0; start < n; start += 1000 {
		pipe := rdb.Pipeline()
		for i := start; i < min(start+1000, n); i++ {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: fields(i)})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func plain(i int) []string { return []string{"i", fmt.Sprint(i), "pad", strings.Repeat("x", 64)} }

// tally is what happened to the entries of stream in.
type tally struct {
	sent, processed, duplicated, dead, pending, lost int
	results                                          map[string]int // id -> times processed
	deadIDs                                          map[string]string
}

func (c tally) String() string {
	return fmt.Sprintf("sent %d, processed %d, duplicated %d, dead-lettered %d, pending %d, lost %d",
		c.sent, c.processed, c.duplicated, c.dead, c.pending, c.lost)
}

// keys are the streams a scenario counts: its input, the results its
// script emits to, and the dead-letter stream.
type keys struct{ in, results, dead string }

var plainKeys = keys{"in", "results", "in:dead"}

// count reads the input stream, the results stream, the dead-letter stream
// and the pending list, and accounts for every entry.
func count(t *testing.T, rdb redis.UniversalClient) tally { return countOf(t, rdb, plainKeys) }

func countOf(t *testing.T, rdb redis.UniversalClient, k keys) tally {
	t.Helper()
	ctx := context.Background()
	c := tally{results: map[string]int{}, deadIDs: map[string]string{}}
	sent := map[string]bool{}
	scan(t, rdb, k.in, func(m redis.XMessage) { sent[m.ID] = true })
	c.sent = len(sent)
	scan(t, rdb, k.results, func(m redis.XMessage) { c.results[m.Values["id"].(string)]++ })
	scan(t, rdb, k.dead, func(m redis.XMessage) { c.deadIDs[m.Values["topix.id"].(string)] = m.Values["topix.error"].(string) })
	for id, n := range c.results {
		if sent[id] {
			c.processed++
			c.duplicated += n - 1
		}
	}
	c.dead = len(c.deadIDs)
	if p, err := rdb.XPending(ctx, k.in, "g").Result(); err == nil {
		c.pending = int(p.Count)
	}
	for id := range sent {
		if c.results[id] == 0 && c.deadIDs[id] == "" {
			c.lost++
		}
	}
	return c
}

func scan(t *testing.T, rdb redis.UniversalClient, stream string, fn func(redis.XMessage)) {
	t.Helper()
	cursor := "-"
	for {
		msgs, err := rdb.XRangeN(context.Background(), stream, cursor, "+", 5000).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			return
		}
		for _, m := range msgs {
			fn(m)
		}
		cursor = "(" + msgs[len(msgs)-1].ID
	}
}

// waitFor waits for cond, polling, for at most timeout.
var waitFor = redistest.WaitFor

// waitDrained waits until every entry sent was processed and none is
// pending: what every scenario waits for before it stops its consumers.
func waitDrained(t *testing.T, rdb redis.UniversalClient) { waitDrainedOf(t, rdb, plainKeys) }

func waitDrainedOf(t *testing.T, rdb redis.UniversalClient, k keys) {
	t.Helper()
	waitFor(t, 120*time.Second, "every entry processed and nothing pending", func() bool {
		c := countOf(t, rdb, k)
		return c.processed == c.sent && c.pending == 0
	})
}

func resultsLen(rdb redis.UniversalClient) int64 {
	n, _ := rdb.XLen(context.Background(), "results").Result()
	return n
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
