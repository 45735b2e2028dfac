package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix/internal/redistest"
)

// topixCmd returns the topix CLI (this test binary, running as topix) with
// the given Redis.
func topixCmd(t *testing.T, srv *redistest.Server, args ...string) *exec.Cmd {
	t.Helper()
	return topixAt(t, srv.URL(), nil, args...)
}

func writeScript(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "app.star")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func onlyGroup(t *testing.T, rdb *redis.Client, stream string) redis.XInfoGroup {
	t.Helper()
	groups, err := rdb.XInfoGroups(context.Background(), stream).Result()
	if err != nil || len(groups) != 1 {
		t.Fatalf("XINFO GROUPS %s = %v, %v; want one group", stream, groups, err)
	}
	return groups[0]
}

// waitExit waits for cmd to exit and returns its exit code.
func waitExit(t *testing.T, cmd *exec.Cmd, timeout time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		t.Fatalf("%s did not exit within %s", cmd.Args, timeout)
		return -1
	}
}

// TestDrainTenThousandThenSIGTERM is the foundation's acceptance run: 10,000
// entries through emit -, a no-op consumer with 4 workers, SIGTERM once
// drained: every entry read and acked, no consumer left.
func TestDrainTenThousandThenSIGTERM(t *testing.T) {
	srv := redistest.Must(t)
	rdb := srv.Client()
	defer rdb.Close()
	const n = 10000

	var lines bytes.Buffer
	for i := range n {
		fmt.Fprintf(&lines, `{"i": %d, "sku": "A-%d", "note": "entry number %d"}`+"\n", i, i%17, i)
	}
	emit := topixCmd(t, srv, "emit", "s", "-")
	emit.Stdin = &lines
	out, err := emit.Output()
	if err != nil {
		t.Fatalf("emit -: %v", err)
	}
	if ids := strings.Fields(string(out)); len(ids) != n {
		t.Fatalf("emit - printed %d ids, want %d", len(ids), n)
	}

	script := writeScript(t, "def consumer(data):\n    pass\n")
	var stderr bytes.Buffer
	consumer := topixCmd(t, srv, "consumer", "s", "g", script, "--concurrency", "4")
	consumer.Stderr = &stderr
	if err := consumer.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = consumer.Process.Kill() })
	redistest.WaitFor(t, 60*time.Second, "all entries read and acked", func() bool {
		g, err := rdb.XInfoGroups(context.Background(), "s").Result()
		return err == nil && len(g) == 1 && g[0].EntriesRead == n && g[0].Pending == 0
	})
	if err := consumer.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, consumer, 15*time.Second); code != 0 {
		t.Fatalf("consumer exited with %d after SIGTERM, want 0; stderr:\n%s", code, stderr.String())
	}
	g := onlyGroup(t, rdb, "s")
	if g.EntriesRead != n || g.Pending != 0 {
		t.Errorf("group: entries-read %d, pending %d; want %d and 0", g.EntriesRead, g.Pending, n)
	}
	consumers, err := rdb.XInfoConsumers(context.Background(), "s", "g").Result()
	if err != nil || len(consumers) != 0 {
		t.Errorf("consumers left: %v (%v)", consumers, err)
	}
	if !strings.Contains(stderr.String(), fmt.Sprintf("processed=%d failed=0 dead_lettered=0 claimed=0 acked=%d pending=0", n, n)) {
		t.Errorf("no final summary in stderr:\n%s", stderr.String())
	}
}

// TestSecondSignalExitsAtOnce: a call that would run for minutes does not
// hold up a second signal; its entry stays pending.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	srv := redistest.Must(t)
	rdb := srv.Client()
	defer rdb.Close()
	if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: "s", Values: []string{"k", "v"}}).Err(); err != nil {
		t.Fatal(err)
	}
	script := writeScript(t, `
def consumer(data):
    print("started")
    n = 0
    for i in range(1000000000):
        n += i
`)
	var stderr redistest.Buffer
	consumer := topixCmd(t, srv, "consumer", "s", "g", script, "--concurrency", "1")
	consumer.Stderr = &stderr
	if err := consumer.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = consumer.Process.Kill() })
	redistest.WaitFor(t, 10*time.Second, "the call to start", func() bool { return strings.Contains(stderr.String(), "started") })
	consumer.Process.Signal(syscall.SIGTERM)
	first := time.Now()
	redistest.WaitFor(t, 10*time.Second, "the first signal to be seen", func() bool { return strings.Contains(stderr.String(), "stopping") })
	// A repeat within repeatWindow is the same stop; what is tested here is
	// a second one, after it.
	time.Sleep(time.Until(first.Add(repeatWindow + 100*time.Millisecond)))
	start := time.Now()
	consumer.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, consumer, 10*time.Second); code != exitSignaled {
		t.Fatalf("exit code %d after a second signal, want %d; stderr:\n%s", code, exitSignaled, stderr.String())
	}
	t.Logf("exited %s after the second signal", time.Since(start).Round(time.Millisecond))
	if g := onlyGroup(t, rdb, "s"); g.Pending != 1 {
		t.Errorf("pending = %d, want the entry in flight left pending", g.Pending)
	}
}

// TestEditingTheScriptOfARunningConsumer drives hot reload through the CLI:
// an edit is picked up, a broken one is reported and ignored.
func TestEditingTheScriptOfARunningConsumer(t *testing.T) {
	srv := redistest.Must(t)
	rdb := srv.Client()
	defer rdb.Close()
	ctx := context.Background()
	script := writeScript(t, "def consumer(data):\n    emit('out', {'n': data['n'], 'v': '1'})\n")

	var stderr redistest.Buffer
	consumer := topixCmd(t, srv, "consumer", "s", "g", script, "--concurrency", "2")
	consumer.Stderr = &stderr
	if err := consumer.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = consumer.Process.Kill() })
	emitAndWait := func(n string) string {
		t.Helper()
		rdb.XAdd(ctx, &redis.XAddArgs{Stream: "s", Values: []string{"n", n}})
		var v string
		redistest.WaitFor(t, 10*time.Second, "entry "+n+" emitted", func() bool {
			entries, _ := rdb.XRange(ctx, "out", "-", "+").Result()
			for _, e := range entries {
				if e.Values["n"] == n {
					v, _ = e.Values["v"].(string)
					return true
				}
			}
			return false
		})
		return v
	}
	if v := emitAndWait("1"); v != "1" {
		t.Fatalf("entry 1 handled by version %q, want 1", v)
	}

	if err := os.WriteFile(script, []byte("def consumer(data):\n    emit('out', {'n': data['n'], 'v': '2'})\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 10*time.Second, "the reload", func() bool { return strings.Contains(stderr.String(), "script reloaded") })
	if v := emitAndWait("2"); v != "2" {
		t.Errorf("entry 2 handled by version %q, want 2", v)
	}

	if err := os.WriteFile(script, []byte("def consumer(data)\n    pass\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 10*time.Second, "the failed reload", func() bool { return strings.Contains(stderr.String(), "reload failed") })
	if v := emitAndWait("3"); v != "2" {
		t.Errorf("entry 3 handled by version %q, want 2, the last good one", v)
	}
	log := stderr.String()
	for _, want := range []string{"script reloaded script=" + script + " generation=2", `err="` + script + `:2:1: got newline, want ':'" generation=2`} {
		if !strings.Contains(log, want) {
			t.Errorf("stderr lacks %q:\n%s", want, log)
		}
	}
	consumer.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, consumer, 15*time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

// idleConsumer starts a consumer of srv with nothing to do and waits until
// it reads.
func idleConsumer(t *testing.T, srv *redistest.Server, args ...string) (*exec.Cmd, *redistest.Buffer) {
	t.Helper()
	script := writeScript(t, "def consumer(data):\n    pass\n")
	var stderr redistest.Buffer
	cmd := topixCmd(t, srv, append([]string{"consumer", "s", "g", script}, args...)...)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	redistest.WaitFor(t, 10*time.Second, "the consumer to start", func() bool { return strings.Contains(stderr.String(), "consuming") })
	return cmd, &stderr
}

// timeout(1) sends SIGTERM to its child and then to the child's process
// group: two in a row are one stop, not "second signal, exit now". SIGHUP
// stops gracefully too.
func TestASignalSentTwiceInARowIsOneStop(t *testing.T) {
	srv := redistest.Must(t)
	for i, sigs := range [][]syscall.Signal{
		{syscall.SIGTERM, syscall.SIGTERM},
		{syscall.SIGINT, syscall.SIGTERM},
		{syscall.SIGTERM, syscall.SIGTERM, syscall.SIGTERM},
		{syscall.SIGHUP},
	} {
		cmd, stderr := idleConsumer(t, srv, "--name", fmt.Sprint("c", i))
		for _, sig := range sigs {
			cmd.Process.Signal(sig)
		}
		if code := waitExit(t, cmd, 10*time.Second); code != 0 {
			t.Errorf("signals %v: exit code %d, want 0 (one graceful stop); stderr:\n%s", sigs, code, stderr.String())
		}
		if !strings.Contains(stderr.String(), "stopped") {
			t.Errorf("signals %v: no graceful stop in the log:\n%s", sigs, stderr.String())
		}
	}
}

// A stop while topix is still connecting exits with 0.
func TestASignalWhileConnectingExitsAtOnce(t *testing.T) {
	silent, accepted := redistest.Silent(t)
	script := writeScript(t, "def consumer(data):\n    pass\n")
	cmd := exec.Command(os.Args[0], "consumer", "s", "g", script)
	cmd.Env = append(os.Environ(), asTopix+"=1", "TOPIX_REDIS_URL=redis://"+silent+"/0", "NO_COLOR=1")
	var stderr redistest.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("topix never connected")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	// How soon it exits is measured by the fault suite (scenario n).
	if code := waitExit(t, cmd, 10*time.Second); code != 0 {
		t.Errorf("SIGTERM while connecting: exit %d; want 0. stderr:\n%s", code, stderr.String())
	}
}

// twoNodeCluster starts a Redis Cluster of two masters on loopback, each
// serving half the slots, and returns them once both say the cluster is ok.
func twoNodeCluster(t *testing.T) (a, b *redistest.Server) {
	t.Helper()
	a = redistest.Must(t, "--cluster-enabled", "yes", "--cluster-node-timeout", "2000")
	b = redistest.Must(t, "--cluster-enabled", "yes", "--cluster-node-timeout", "2000")
	ctx := context.Background()
	ca, cb := a.Client(), b.Client()
	defer ca.Close()
	defer cb.Close()
	host, port, _ := net.SplitHostPort(b.Addr)
	if err := ca.Do(ctx, "CLUSTER", "MEET", host, port).Err(); err != nil {
		t.Fatal(err)
	}
	if err := ca.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 8191).Err(); err != nil {
		t.Fatal(err)
	}
	if err := cb.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 8192, 16383).Err(); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 20*time.Second, "the cluster to be ok", func() bool {
		for _, c := range []*redis.Client{ca, cb} {
			info, _ := c.ClusterInfo(ctx).Result()
			if !strings.Contains(info, "cluster_state:ok") {
				return false
			}
		}
		return true
	})
	return a, b
}

// redis:// pointed at one node of a Cluster: the key's slot is on the
// other node, which answers MOVED. topix says so and how to fix it, and
// does not retry for ever.
func TestOneNodeOfAClusterIsNamedAsSuch(t *testing.T) {
	a, _ := twoNodeCluster(t)
	// "b" hashes to slot 3300 (node a), "a" to 15495 (node b).
	const stream = "a"
	script := writeScript(t, "def consumer(data):\n    pass\n")
	for _, args := range [][]string{
		{"emit", stream, `{"k": "v"}`},
		{"consumer", stream, "g", script},
	} {
		cmd := topixCmd(t, a, args...)
		var out redistest.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		code := waitExit(t, cmd, 20*time.Second)
		if got := out.String(); code != exitRedis || !strings.Contains(got, "one node of a Redis Cluster") || !strings.Contains(got, "redis+cluster://") {
			t.Errorf("topix %s against one cluster node: exit %d, output:\n%s", args[0], code, got)
		}
	}
}

// repeatReader yields b for ever.
type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// A line of emit - longer than the limit is named, with the limit, after
// the lines before it were sent.
func TestEmitNamesALineTooLong(t *testing.T) {
	srv := redistest.Must(t)
	cmd := topixCmd(t, srv, "emit", "s", "-")
	cmd.Stdin = io.MultiReader(strings.NewReader("{\"a\": 1}\n{\"a\": 2}\n{\"big\": \""), io.LimitReader(repeatReader('x'), maxStdinLine+10))
	var out redistest.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	code := waitExit(t, cmd, 60*time.Second)
	want := fmt.Sprintf("topix: line 3 is longer than %d MiB, the most one line of emit - may hold", maxStdinLine>>20)
	if got := out.String(); code != exitUsage || !strings.Contains(got, want) {
		t.Errorf("exit %d, output:\n%s\nwant exit %d and %q", code, got, exitUsage, want)
	}
	rdb := srv.Client()
	defer rdb.Close()
	if n, _ := rdb.XLen(context.Background(), "s").Result(); n != 2 {
		t.Errorf("stream has %d entries, want the 2 lines before the long one", n)
	}
}

// While a consumer runs, its stream's key replaced by a string, or its
// password changed, is said as such, and the consumer stops: neither is an
// outage that retrying would outlast.
func TestWhatChangesMidRunIsNamed(t *testing.T) {
	t.Run("the stream became a string", func(t *testing.T) {
		srv := redistest.Must(t)
		cmd, stderr := idleConsumer(t, srv, "--block", "5s")
		rdb := srv.Client()
		defer rdb.Close()
		pipe := rdb.TxPipeline()
		pipe.Del(context.Background(), "s")
		pipe.Set(context.Background(), "s", "a string now", 0)
		if _, err := pipe.Exec(context.Background()); err != nil {
			t.Fatal(err)
		}
		code := waitExit(t, cmd, 15*time.Second)
		got := stderr.String()
		t.Logf("stderr: %s", lastLine(got))
		if code != exitUsage || !strings.Contains(got, `key "s" is a string, not a stream`) || strings.Contains(got, "Redis failed") {
			t.Errorf("exit %d; stderr:\n%s", code, got)
		}
	})
	t.Run("the password changed", func(t *testing.T) {
		srv := redistest.Must(t, "--requirepass", "old-pw")
		script := writeScript(t, "def consumer(data):\n    pass\n")
		cmd := exec.Command(os.Args[0], "consumer", "s", "g", script, "--claim-idle", "1s")
		cmd.Env = append(os.Environ(), asTopix+"=1", "TOPIX_REDIS_URL=redis://:old-pw@"+srv.Addr+"/0", "NO_COLOR=1")
		var stderr redistest.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		redistest.WaitFor(t, 10*time.Second, "the consumer to start", func() bool { return strings.Contains(stderr.String(), "consuming") })
		admin := redis.NewClient(&redis.Options{Addr: srv.Addr, Password: "old-pw", Protocol: 2})
		defer admin.Close()
		ctx := context.Background()
		if err := admin.ConfigSet(ctx, "requirepass", "new-pw").Err(); err != nil {
			t.Fatal(err)
		}
		admin.Do(ctx, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") // its connections must log in again
		code := waitExit(t, cmd, 20*time.Second)
		got := stderr.String()
		t.Logf("stderr: %s", lastLine(got))
		if code != exitRedis || !strings.Contains(got, "no longer accepts topix's credentials") || strings.Contains(got, "old-pw") {
			t.Errorf("exit %d; stderr:\n%s", code, got)
		}
	})
}
