package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix/inspect"
	"github.com/topix-dev/topix/internal/redistest"
)

// failing is a script that fails every entry with a "fail" field, and
// processes the others.
const failing = `
def consumer(data):
    if "fail" in data:
        fail("refused: " + data["fail"])
`

// drained is a consumer started with --http over n entries of which f
// fail for good, after Redis says every one was acked (dead-lettered or
// processed).
type drained struct {
	srv    *redistest.Server
	cmd    *exec.Cmd
	addr   string // of --http
	stderr *redistest.Buffer
	n, f   int
}

func drain(t *testing.T, n, f int) *drained {
	t.Helper()
	srv := redistest.Must(t)
	rdb := srv.Client()
	defer rdb.Close()
	ctx := context.Background()
	for i := range n {
		values := []any{"i", i}
		if i%(n/f) == 0 && i/(n/f) < f {
			values = append(values, "fail", strconv.Itoa(i))
		}
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "s", Values: values}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	d := &drained{srv: srv, addr: fmt.Sprintf("127.0.0.1:%d", port), n: n, f: f, stderr: &redistest.Buffer{}}
	d.cmd = topixCmd(t, srv, "consumer", "s", "g", writeScript(t, failing), "--http", d.addr,
		"--max-attempts", "2", "--retry-backoff", "20ms", "--concurrency", "2", "--name", "c1")
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.cmd.Process.Kill(); _ = d.cmd.Wait() })
	redistest.WaitFor(t, 60*time.Second, "every entry acked and the failing ones dead-lettered", func() bool {
		g, err := rdb.XInfoGroups(ctx, "s").Result()
		dead, _ := rdb.XLen(ctx, "s:dead").Result()
		return err == nil && len(g) == 1 && g[0].EntriesRead == int64(n) && g[0].Pending == 0 && dead == int64(f)
	})
	return d
}

// scrape reads the consumer's /metrics and parses it.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// metricValue returns the value of the sample of name whose labels include
// want (a counter's, a gauge's, or a histogram's count), and whether there
// is one.
func metricValue(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	fam := fams[name]
	if fam == nil {
		return 0, false
	}
next:
	for _, m := range fam.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func get(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("GET %s: not JSON: %q", url, raw)
	}
	return resp.StatusCode, body
}

// TestMetricsSayWhatTheRunDid drains n entries of which f fail for good:
// the counters on /metrics say so, call by call, and the group's figures
// (read from Redis) say nothing is left.
func TestMetricsSayWhatTheRunDid(t *testing.T) {
	const n, f = 300, 6
	d := drain(t, n, f)
	g := map[string]string{"stream": "s", "group": "g"}
	with := func(k, v string) map[string]string {
		m := map[string]string{"stream": "s", "group": "g"}
		m[k] = v
		return m
	}
	var fams map[string]*dto.MetricFamily
	// The group's figures are read at most every few seconds: wait for a
	// read made after the drain.
	redistest.WaitFor(t, 20*time.Second, "the group's figures to show the drain", func() bool {
		fams = scrape(t, d.addr)
		v, ok := metricValue(fams, "topix_dead_letter_length", g)
		b, _ := metricValue(fams, "topix_group_backlog", g)
		return ok && v == f && b == 0
	})
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"topix_calls_total", with("result", "ok"), n - f},
		{"topix_calls_total", with("result", "error"), 2 * f}, // two attempts each
		{"topix_calls_total", with("result", "timeout"), 0},
		{"topix_call_duration_seconds", g, n + f},
		{"topix_entry_age_seconds", g, n + f},
		{"topix_entries_received_total", with("source", "new"), n},
		{"topix_entries_received_total", with("source", "retry"), f},
		{"topix_entries_received_total", with("source", "claimed"), 0},
		{"topix_retries_total", g, f},
		{"topix_dead_letters_total", with("reason", "attempts"), f},
		{"topix_dead_letters_total", with("reason", "rejected"), 0},
		{"topix_acks_total", g, n},
		{"topix_emits_total", g, 0},
		{"topix_group_backlog", g, 0},
		{"topix_group_lag", g, 0},
		{"topix_group_lag_exact", g, 1},
		{"topix_group_pending", g, 0},
		{"topix_group_stuck", g, 0},
		{"topix_group_consumers", g, 1},
		{"topix_group_consumers_alive", g, 1},
		{"topix_stream_length", g, n},
		{"topix_dead_letter_length", g, f},
		{"topix_workers", g, 2},
		{"topix_calls_in_flight", g, 0},
		{"topix_redis_up", g, 1},
		{"topix_consumer_ready", g, 1},
		{"topix_script_reloads_total", with("result", "ok"), 0},
	} {
		got, ok := metricValue(fams, c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (present: %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if _, ok := metricValue(fams, "topix_build_info", nil); !ok {
		t.Error("no topix_build_info")
	}
	if v, ok := metricValue(fams, "topix_script_info", g); !ok || v != 1 {
		t.Error("no topix_script_info")
	}
	// OpenMetrics when asked for.
	req, _ := http.NewRequest("GET", "http://"+d.addr+"/metrics", nil)
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/openmetrics-text") || !bytes.HasSuffix(body, []byte("# EOF\n")) {
		t.Errorf("OpenMetrics asked for, got %q ending %q", ct, body[max(0, len(body)-20):])
	}
}

// TestReadyzFollowsRedis: /readyz goes 503 (redis_down) when Redis stops
// and 200 when it is back, while /healthz stays 200 all along: an outage
// must not get the consumer restarted.
func TestReadyzFollowsRedis(t *testing.T) {
	d := drain(t, 20, 1)
	base := "http://" + d.addr
	if code, body := get(t, base+"/readyz"); code != 200 || body["ready"] != true {
		t.Fatalf("/readyz = %d %v, want 200 ready", code, body)
	}
	d.srv.Stop()
	redistest.WaitFor(t, 20*time.Second, "/readyz to say redis_down", func() bool {
		code, body := get(t, base+"/readyz")
		return code == 503 && body["reason"] == "redis_down"
	})
	if code, body := get(t, base+"/healthz"); code != 200 || body["alive"] != true {
		t.Errorf("/healthz during the outage = %d %v, want 200", code, body)
	}
	if v, _ := metricValue(scrape(t, d.addr), "topix_redis_up", map[string]string{"stream": "s"}); v != 0 {
		t.Errorf("topix_redis_up during the outage = %v, want 0", v)
	}
	if err := d.srv.Restart(); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 20*time.Second, "/readyz to be 200 again", func() bool {
		code, _ := get(t, base+"/readyz")
		return code == 200
	})
	fams := scrape(t, d.addr)
	if v, _ := metricValue(fams, "topix_redis_outages_total", map[string]string{"stream": "s"}); v != 1 {
		t.Errorf("topix_redis_outages_total = %v, want 1", v)
	}
	if v, _ := metricValue(fams, "topix_redis_outage_seconds_total", map[string]string{"stream": "s"}); v <= 0 {
		t.Errorf("topix_redis_outage_seconds_total = %v, want > 0", v)
	}
	// Draining: a stop makes it unready before it exits.
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, d.cmd, 15*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM:\n%s", code, d.stderr)
	}
}

// TestHTTPAddressMistakes: a bad or taken --http address is one line and
// exit 2, before Redis is touched.
func TestHTTPAddressMistakes(t *testing.T) {
	srv := redistest.Must(t)
	script := writeScript(t, "def consumer(data):\n    pass\n")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, c := range []struct{ addr, want string }{
		{"9090", "give an address with a port"},
		{"localhost", "give an address with a port"},
		{busy.Addr().String(), "the address is in use"},
	} {
		cmd := topixCmd(t, srv, "consumer", "s", "g", script, "--http", c.addr)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if code := waitExit(t, cmd, 10*time.Second); code != 2 || strings.Count(stderr.String(), "\n") != 1 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("--http %s: exit %d, stderr %q; want 2 and one line with %q", c.addr, code, stderr.String(), c.want)
		}
	}
}

// TestPrometheusScrapesTheConsumer: a real Prometheus server scrapes a
// consumer that drained n entries with f failing, and its query API
// answers the same figures.
func TestPrometheusScrapesTheConsumer(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("prometheus is not installed; .ci/run installs it (apt-get install -y prometheus)")
		}
		t.Skip("prometheus is not installed (apt-get install -y prometheus)")
	}
	const n, f = 100, 4
	d := drain(t, n, f)
	dir := t.TempDir()
	conf := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: topix
    static_configs:
      - targets: ["%s"]
`, d.addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	web := fmt.Sprintf("127.0.0.1:%d", port)
	prom := exec.Command(bin, "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web, "--log.level=warn")
	var promLog redistest.Buffer
	prom.Stdout, prom.Stderr = &promLog, &promLog
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = prom.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = prom.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = prom.Process.Kill()
			<-done
		}
	})
	query := func(q string) (float64, bool) {
		resp, err := http.Get("http://" + web + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return 0, false
		}
		defer resp.Body.Close()
		var r struct {
			Status string
			Data   struct {
				Result []struct {
					Value [2]any
				}
			}
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil || r.Status != "success" || len(r.Data.Result) != 1 {
			return 0, false
		}
		s, _ := r.Data.Result[0].Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		return v, err == nil
	}
	for _, c := range []struct {
		q    string
		want float64
	}{
		{`topix_group_backlog{stream="s",group="g"}`, 0},
		{`topix_dead_letter_length{stream="s",group="g"}`, f},
		{`topix_dead_letters_total{stream="s",group="g",reason="attempts"}`, f},
		{`topix_calls_total{stream="s",group="g",result="ok"}`, n - f},
		{`topix_acks_total{stream="s",group="g"}`, n},
		{`up{job="topix"}`, 1},
	} {
		var got float64
		var ok bool
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if got, ok = query(c.q); ok && got == c.want {
				break
			}
			time.Sleep(200 * time.Millisecond) // polling an HTTP API, not synchronising
		}
		if !ok || got != c.want {
			t.Errorf("Prometheus: %s = %v (answered: %v), want %v; prometheus log:\n%s", c.q, got, ok, c.want, promLog.String())
		}
	}
}

// TestStatsAfterAKill: a consumer killed (SIGKILL) while it owns entries
// shows as gone, owning them; once they have been idle longer than the
// claim idle they are stuck, and the group is stalled.
func TestStatsAfterAKill(t *testing.T) {
	srv := redistest.Must(t)
	rdb := srv.Client()
	defer rdb.Close()
	ctx := context.Background()
	for i := range 10 {
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "s", Values: []any{"i", i}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Each call runs until the kill.
	script := writeScript(t, "def consumer(data):\n    for i in range(2000000000):\n        pass\n")
	victim := topixCmd(t, srv, "consumer", "s", "g", script, "--name", "victim", "--concurrency", "1",
		"--claim-idle", "3s", "--max-steps", "100000000000", "--call-timeout", "10m")
	var stderr redistest.Buffer
	victim.Stderr = &stderr
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = victim.Process.Kill(); _ = victim.Wait() })
	stats := func() inspect.Report {
		t.Helper()
		out, err := topixCmd(t, srv, "stats", "s", "g", "--json").Output()
		var rep inspect.Report
		if err == nil {
			if err := json.Unmarshal(out, &rep); err != nil {
				t.Fatalf("topix stats --json: %v\n%s", err, out)
			}
		}
		return rep // empty before the group exists
	}
	redistest.WaitFor(t, 20*time.Second, "the victim to own entries and be busy", func() bool {
		rep := stats()
		return len(rep.Consumers) == 1 && rep.Consumers[0].Status == "alive" && rep.Consumers[0].Busy == 1 && rep.Groups[0].Pending > 0
	})
	if err := victim.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = victim.Wait()
	owned, err := rdb.XPending(ctx, "s", "g").Result()
	if err != nil {
		t.Fatal(err)
	}
	n := owned.Count
	var rep inspect.Report
	redistest.WaitFor(t, 30*time.Second, "the victim to show as gone and its entries as stuck", func() bool {
		rep = stats()
		return rep.Consumers[0].Status != "alive" && rep.Groups[0].Stuck > 0
	})
	g, c := rep.Groups[0], rep.Consumers[0]
	if want := fmt.Sprintf("gone, owns %d pending", n); c.Status != want || c.Pending != n {
		t.Errorf("victim: status %q, pending %d; want %q", c.Status, c.Pending, want)
	}
	if g.State != "stalled" || g.Alive != 0 || g.Consumers != 1 || g.Pending != n || g.Stuck != n || g.Lag != 10-n || g.Backlog != 10 {
		t.Errorf("group = %+v; want stalled, 0 alive of 1, %d pending and stuck, lag %d, backlog 10", g, n, 10-n)
	}
	if c.Host == "" || c.PID != victim.Process.Pid || c.ScriptHash == "" || c.LastHeartbeat == nil {
		t.Errorf("victim's last heartbeat is not shown: %+v", c)
	}
	// And as a table.
	out, err := topixCmd(t, srv, "stats", "s", "g").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"s       g      stalled  0/1", fmt.Sprintf("gone, owns %d pending, claimable now", n)} {
		if !strings.Contains(string(out), want) {
			t.Errorf("topix stats s g does not say %q:\n%s", want, out)
		}
	}
}

// TestStatsWatchPrintsOneObjectPerInterval: not on a terminal, --watch
// prints one JSON object per interval, until interrupted (exit 0).
func TestStatsWatchPrintsOneObjectPerInterval(t *testing.T) {
	d := drain(t, 10, 1)
	watch := topixCmd(t, d.srv, "stats", "s", "g", "--watch", "100ms")
	out, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = watch.Process.Kill() })
	lines := make(chan string)
	go func() {
		dec := json.NewDecoder(out)
		for {
			var rep inspect.Report
			if dec.Decode(&rep) != nil {
				close(lines)
				return
			}
			lines <- fmt.Sprintf("%s %d %s", rep.Groups[0].State, rep.Groups[0].DeadLetters, rep.Consumers[0].Status)
		}
	}()
	for i := range 3 {
		select {
		case l, ok := <-lines:
			if !ok || l != "active 1 alive" {
				t.Fatalf("object %d: %q (open: %v), want the group active, 1 dead letter, c1 alive", i, l, ok)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("object %d did not come within 10s", i)
		}
	}
	if err := watch.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, watch, 10*time.Second); code != 0 {
		t.Errorf("exit %d after SIGINT, want 0", code)
	}
}

// TestProfilesOnlyWithHTTPDebug: /debug/pprof/ is served with
// --http-debug only.
func TestProfilesOnlyWithHTTPDebug(t *testing.T) {
	d := drain(t, 10, 1)
	resp, err := http.Get("http://" + d.addr + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without --http-debug: %s, want 404", resp.Status)
	}
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	dbg := topixCmd(t, d.srv, "consumer", "s", "g2", writeScript(t, failing), "--http", addr, "--http-debug")
	if err := dbg.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dbg.Process.Kill(); _ = dbg.Wait() })
	redistest.WaitFor(t, 10*time.Second, "the profiles served with --http-debug", func() bool {
		resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 200 && bytes.Contains(body, []byte("goroutine profile"))
	})
}

// TestWebShowsTwoGroupsAndReplaysIntoARunningConsumer: topix web over a
// Redis with two groups shows both, with their lag and dead letters, shows
// a hostile entry as text, and a dead letter replayed from the page is
// processed by the running consumer.
func TestWebShowsTwoGroupsAndReplaysIntoARunningConsumer(t *testing.T) {
	d := drain(t, 20, 2) // group g of s: a consumer, 2 dead letters
	rdb := d.srv.Client()
	defer rdb.Close()
	ctx := context.Background()
	// A second group, behind: registered by a consumer that ran earlier.
	if err := rdb.XGroupCreate(ctx, "s", "late", "0").Err(); err != nil {
		t.Fatal(err)
	}
	rdb.ZAdd(ctx, "topix:groups", redis.Z{Score: 1, Member: `["s","late"]`})
	hostile, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "s:dead", Values: []any{"note", `<script>alert(1)</script>`,
		"topix.error", "by hand", "topix.attempts", "1", "topix.id", "1-1", "topix.stream", "s", "topix.group", "g",
		"topix.consumer", "c1", "topix.time", "2026-01-01T00:00:00Z"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	w := topixCmd(t, d.srv, "web", "--addr", base[len("http://"):], "--actions")
	w.Env = append(w.Env, "TOPIX_WEB_TOKEN=tok")
	var werr redistest.Buffer
	w.Stderr = &werr
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Process.Kill(); _ = w.Wait() })
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	var body string
	redistest.WaitFor(t, 10*time.Second, "the page", func() bool {
		resp, err := c.Get(base + "/?token=tok")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		return resp.StatusCode == 200
	})
	for _, want := range []string{`<tr data-group="s g">`, `<tr data-group="s late">`, `data-f="lag">20<`, `data-f="dead_letters">3<`} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q:\n%s", want, body)
		}
	}
	resp, err := c.Get(base + "/group?stream=s&group=g")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(b), "<script>alert") || !strings.Contains(string(b), "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("the hostile entry is not shown as text")
	}
	csrf := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindSubmatch(b)
	if csrf == nil {
		t.Fatal("no CSRF token on the page")
	}
	acked := func() int64 { return rdb.XInfoGroups(ctx, "s").Val()[0].EntriesRead }
	before := acked()
	form := url.Values{"csrf": {string(csrf[1])}, "stream": {"s"}, "group": {"g"}, "op": {"replay"}, "confirm": {"yes"}, "ids": {hostile}}
	resp, err = c.PostForm(base+"/actions", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 { // the redirect, followed, to the group's page
		t.Errorf("replay: %s", resp.Status)
	}
	redistest.WaitFor(t, 10*time.Second, "the replayed entry processed by the consumer", func() bool {
		g := rdb.XInfoGroups(ctx, "s").Val()
		return len(g) > 0 && g[0].EntriesRead == before+1 && g[0].Pending == 0
	})
	if !strings.Contains(werr.String(), "web: replayed dead letters") || !strings.Contains(werr.String(), "replayed=1") {
		t.Errorf("the replay is not logged:\n%s", werr.String())
	}
}
