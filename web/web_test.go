package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix/engine"
	"github.com/topix-dev/topix/inspect"
	"github.com/topix-dev/topix/internal/redistest"
	"github.com/topix-dev/topix/web"
)

var srv *redistest.Server

func TestMain(m *testing.M) { os.Exit(redistest.Main(m, &srv)) }

// Entries are user data: these must show as text.
const (
	hostileScript = `<script>alert("x")</script>`
	hostileAttr   = `"><img src=x onerror=alert(1)>`
	// A backtrace that tries to close its <pre>.
	hostileBacktrace = "Traceback (most recent call last):\n  app.star:8:10: in consumer\n  app.star:5:9: in check\nError in fail: </pre><script>alert(2)</script>"
)

// setUp makes stream s with a group g that topix consumers registered,
// three dead letters (two hostile), and returns the dead letters' ids.
func setUp(t *testing.T, rdb *redis.Client, stream string) []string {
	t.Helper()
	ctx := context.Background()
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"k", "v"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.XGroupCreate(ctx, stream, "g", "$").Err(); err != nil {
		t.Fatal(err)
	}
	rdb.ZAdd(ctx, engine.RegistryKey, redis.Z{Score: 1, Member: engine.RegistryMember(stream, "g")})
	var ids []string
	// The first with a (hostile) backtrace; the others as earlier versions
	// wrote dead letters, without one.
	for i, v := range [][2]string{{hostileScript, "boom " + hostileScript}, {hostileAttr, "bang"}, {"plain", "boom"}} {
		values := []any{"note", v[0],
			"topix.error", v[1], "topix.attempts", "5", "topix.id", "1-1", "topix.stream", stream, "topix.group", "g",
			"topix.consumer", "c1", "topix.time", "2026-01-01T00:00:00Z"}
		if i == 0 {
			values = append(values, "topix.backtrace", hostileBacktrace)
		}
		id, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream + ":dead", Values: values}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func serve(t *testing.T, opts web.Options) (*httptest.Server, *redis.Client) {
	t.Helper()
	rdb := srv.Client()
	t.Cleanup(func() { rdb.Close() })
	s, err := web.New(rdb, opts)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	return hs, rdb
}

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func TestPagesShowTheGroupsAndEscapeEntries(t *testing.T) {
	hs, rdb := serve(t, web.Options{Addr: "127.0.0.1:8080"})
	ids := setUp(t, rdb, "p1")
	c := hs.Client()
	for _, path := range []string{"/", "/group?stream=p1&group=g", "/dead?stream=p1&group=g&id=" + ids[0], "/dead?stream=p1&group=g&id=" + ids[1]} {
		code, body := get(t, c, hs.URL+path)
		if code != 200 {
			t.Errorf("GET %s: %d\n%s", path, code, body)
		}
		if strings.Contains(body, "<script>alert") || strings.Contains(body, `<img src=x`) {
			t.Errorf("GET %s renders entry content unescaped:\n%s", path, body)
		}
	}
	_, body := get(t, c, hs.URL+"/dead?stream=p1&group=g&id="+ids[0])
	if !strings.Contains(body, `<pre class="backtrace">Traceback (most recent call last):`+"\n"+`  app.star:8:10: in consumer`) ||
		!strings.Contains(body, "Error in fail: &lt;/pre&gt;&lt;script&gt;") {
		t.Errorf("the entry page does not show the backtrace, escaped:\n%s", body)
	}
	if strings.Count(body, "Traceback") != 1 {
		t.Error("the backtrace shows twice (once more among the topix.* fields)")
	}
	_, body = get(t, c, hs.URL+"/group?stream=p1&group=g")
	for _, want := range []string{"&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;", "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;", "3 matching", "p1:dead: 3"} {
		if !strings.Contains(body, want) {
			t.Errorf("the group page lacks %q", want)
		}
	}
	if strings.Contains(body, `name="op"`) {
		t.Error("a read-only page offers actions")
	}
	// The filter narrows the dead letters.
	_, body = get(t, c, hs.URL+"/group?stream=p1&group=g&q=boom")
	if !strings.Contains(body, "2 matching") || strings.Contains(body, ">bang<") {
		t.Errorf("filtered by boom: want 2 matching, not the bang one")
	}
	// An unknown group, a missing entry.
	if code, _ := get(t, c, hs.URL+"/group?stream=p1&group=nope"); code != 404 {
		t.Errorf("unknown group: %d, want 404", code)
	}
	if code, _ := get(t, c, hs.URL+"/dead?stream=p1&group=g&id=1-0"); code != 404 {
		t.Errorf("missing dead letter: %d, want 404", code)
	}
	// Headers that keep a page from running what it shows.
	resp, err := c.Get(hs.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("headers: %v", resp.Header)
	}
}

// The page's JSON is the schema of topix stats --json.
func TestTheJSONIsTheStatsSchema(t *testing.T) {
	hs, rdb := serve(t, web.Options{Addr: "127.0.0.1:8080"})
	setUp(t, rdb, "p2")
	_, body := get(t, hs.Client(), hs.URL+"/api/report?stream=p2&group=g")
	var rep inspect.Report
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Groups) != 1 || rep.Groups[0].DeadLetters != 3 || len(rep.DeadLetterReasons) != 3 || rep.Version == "" {
		t.Errorf("report = %+v", rep)
	}
	var raw map[string]any
	_ = json.Unmarshal([]byte(body), &raw)
	g := raw["groups"].([]any)[0].(map[string]any)
	for _, k := range []string{"stream", "group", "state", "consumers", "alive", "lag", "lag_exact", "lag_age", "pending", "oldest_pending", "stuck", "backlog", "dead_letter", "dead_letters", "rate", "error_rate", "length"} {
		if _, ok := g[k]; !ok {
			t.Errorf("group field %q missing", k)
		}
	}
	_, body = get(t, hs.Client(), hs.URL+"/api/history?stream=p2&group=g")
	var hist []inspect.Minute
	if err := json.Unmarshal([]byte(body), &hist); err != nil || len(hist) != 60 {
		t.Errorf("history: %d minutes, %v", len(hist), err)
	}
}

func TestTokenIsNeededBeyondLoopbackAndForActions(t *testing.T) {
	rdb := srv.Client()
	defer rdb.Close()
	for _, o := range []web.Options{{Addr: "0.0.0.0:8080"}, {Addr: "192.0.2.1:8080"}, {Addr: "127.0.0.1:8080", Actions: true}} {
		if _, err := web.New(rdb, o); !errors.Is(err, web.ErrTokenNeeded) {
			t.Errorf("%+v: err %v, want ErrTokenNeeded", o, err)
		}
	}
	for _, o := range []web.Options{{Addr: "127.0.0.1:8080"}, {Addr: "[::1]:8080"}, {Addr: "localhost:8080"}, {Addr: "0.0.0.0:8080", Token: "t"}} {
		if _, err := web.New(rdb, o); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}

	hs, _ := serve(t, web.Options{Addr: "0.0.0.0:8080", Token: "s3cret"})
	plain := &http.Client{CheckRedirect: noRedirects}
	if code, _ := get(t, plain, hs.URL+"/"); code != 401 {
		t.Errorf("no token: %d, want 401", code)
	}
	if code, _ := get(t, plain, hs.URL+"/?token=wrong"); code != 401 {
		t.Errorf("a wrong token: %d, want 401", code)
	}
	resp, err := plain.Get(hs.URL + "/?token=s3cret")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 303 || strings.Contains(resp.Header.Get("Location"), "s3cret") || len(resp.Cookies()) != 1 {
		t.Errorf("the right token: %d to %q, cookies %v; want a redirect without it, and a cookie", resp.StatusCode, resp.Header.Get("Location"), resp.Cookies())
	}
	jar, _ := cookiejar.New(nil)
	withCookie := &http.Client{Jar: jar}
	if code, _ := get(t, withCookie, hs.URL+"/?token=s3cret"); code != 200 {
		t.Errorf("with the cookie: %d", code)
	}
	if code, _ := get(t, withCookie, hs.URL+"/api/report"); code != 200 {
		t.Errorf("the JSON with the cookie: %d", code)
	}
	req, _ := http.NewRequest("GET", hs.URL+"/api/report", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("a bearer token: %v %v", resp.Status, err)
	}
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

func post(t *testing.T, c *http.Client, u string, form url.Values, origin string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("Location")
}

func TestActionsNeedCSRFAndAreConfirmed(t *testing.T) {
	ctx := context.Background()
	// Read-only: refused.
	ro, rdb := serve(t, web.Options{Addr: "127.0.0.1:8080"})
	ids := setUp(t, rdb, "p3")
	if code, _, _ := post(t, ro.Client(), ro.URL+"/actions", url.Values{"stream": {"p3"}, "group": {"g"}, "op": {"replay"}, "id": {ids[2]}}, ""); code != 403 {
		t.Errorf("an action on a read-only page: %d, want 403", code)
	}

	hs, _ := serve(t, web.Options{Addr: "127.0.0.1:8080", Token: "t", Actions: true})
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: noRedirects}
	get(t, c, hs.URL+"/?token=t")
	_, page := get(t, c, hs.URL+"/group?stream=p3&group=g")
	m := csrfRe.FindStringSubmatch(page)
	if m == nil || !strings.Contains(page, `name="op" value="replay"`) {
		t.Fatalf("the page with actions has no action form:\n%s", page)
	}
	csrf := m[1]
	base := url.Values{"stream": {"p3"}, "group": {"g"}, "op": {"replay"}, "id": {ids[2]}}
	if code, _, _ := post(t, c, hs.URL+"/actions", base, ""); code != 403 {
		t.Errorf("without the CSRF token: %d, want 403", code)
	}
	with := func(v url.Values, kv ...string) url.Values {
		out := url.Values{"csrf": {csrf}}
		for k, vs := range v {
			out[k] = vs
		}
		for i := 0; i+1 < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	if code, _, _ := post(t, c, hs.URL+"/actions", with(base), "https://evil.example"); code != 403 {
		t.Errorf("from another origin: %d, want 403", code)
	}
	// The first POST asks, stating the count; nothing happens yet.
	code, body, _ := post(t, c, hs.URL+"/actions", with(base), hs.URL)
	if code != 200 || !strings.Contains(body, "Replay 1 dead letter?") || rdb.XLen(ctx, "p3:dead").Val() != 3 {
		t.Fatalf("confirmation: %d\n%s", code, body)
	}
	// Confirmed: the entry is back on its stream, out of the dead letters.
	code, _, loc := post(t, c, hs.URL+"/actions", with(url.Values{"stream": {"p3"}, "group": {"g"}, "op": {"replay"}}, "confirm", "yes", "ids", ids[2]), hs.URL)
	if code != 303 || !strings.Contains(loc, "replayed+1+of+1") {
		t.Errorf("replay: %d to %s", code, loc)
	}
	back, _ := rdb.XRange(ctx, "p3", "-", "+").Result()
	if len(back) != 2 || back[1].Values["note"] != "plain" || rdb.XLen(ctx, "p3:dead").Val() != 2 {
		t.Errorf("after the replay: stream %+v, %d dead letters", back, rdb.XLen(ctx, "p3:dead").Val())
	}
	// Delete all matching a filter: the count, then the deletion.
	code, body, _ = post(t, c, hs.URL+"/actions", with(url.Values{"stream": {"p3"}, "group": {"g"}, "op": {"delete"}}, "all", "1", "q", "boom"), hs.URL)
	if code != 200 || !strings.Contains(body, "Delete 1 dead letter?") {
		t.Fatalf("delete confirmation: %d\n%s", code, body)
	}
	idsField := regexp.MustCompile(`name="ids" value="([^"]*)"`).FindStringSubmatch(body)
	code, _, loc = post(t, c, hs.URL+"/actions", with(url.Values{"stream": {"p3"}, "group": {"g"}, "op": {"delete"}}, "confirm", "yes", "ids", idsField[1]), hs.URL)
	if code != 303 || !strings.Contains(loc, "deleted+1+of+1") || rdb.XLen(ctx, "p3:dead").Val() != 1 {
		t.Errorf("delete: %d to %s, %d left", code, loc, rdb.XLen(ctx, "p3:dead").Val())
	}
}

// On a consumer's --http the page shows its own group only.
func TestTheConsumersPageIsItsGroupOnly(t *testing.T) {
	hs, rdb := serve(t, web.Options{Group: &inspect.Ref{Stream: "p4", Group: "g"}})
	setUp(t, rdb, "p4")
	setUp(t, rdb, "p5")
	c := &http.Client{CheckRedirect: noRedirects}
	resp, err := c.Get(hs.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 303 || resp.Header.Get("Location") != "/group?group=g&stream=p4" {
		t.Errorf("/ = %d to %q, want its group's page", resp.StatusCode, resp.Header.Get("Location"))
	}
	if code, _ := get(t, c, hs.URL+"/group?stream=p5&group=g"); code != 404 {
		t.Errorf("another group: %d, want 404", code)
	}
	if code, _ := get(t, c, hs.URL+"/api/report"); code != 200 {
		t.Errorf("its JSON: %d", code)
	}
}
