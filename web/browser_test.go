//go:build browser

// The page in a real browser: `make browser` runs these in headless
// Chromium against a real redis-server and a running consumer, and saves a
// screenshot of each page under bin/screenshots (or $TOPIX_SCREENSHOTS).

package web_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix"
	"github.com/topix-dev/topix/engine"
	"github.com/topix-dev/topix/internal/redistest"
	"github.com/topix-dev/topix/web"
)

// browser starts headless Chromium, as this machine allows it (no sandbox,
// no network), with a fresh profile, and returns its context.
func browser(t *testing.T) context.Context {
	t.Helper()
	bin := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		t.Fatal("no chromium on PATH: apt-get install -y chromium (.ci/run does)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", bin, err)
	}
	return ctx
}

func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("TOPIX_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join("..", "bin", "screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
}

func TestThePageInABrowser(t *testing.T) {
	rdb := srv.Client()
	t.Cleanup(func() { rdb.Close() }) // after the consumer's stop, registered later
	bg := context.Background()
	stream := "orders"
	ids := setUp(t, rdb, stream) // group g, three dead letters, two of them hostile
	for i := range 5 {
		rdb.XAdd(bg, &redis.XAddArgs{Stream: stream, Values: []any{"sku", fmt.Sprintf("A-%d", i)}})
	}

	// A running consumer of the group, keeping the records the page reads.
	var processed atomic.Int64
	var replayedSeen atomic.Bool
	h := engine.HandlerFunc(func(_ context.Context, m *engine.Message) engine.Result {
		processed.Add(1)
		for _, f := range m.Fields {
			if f.Name == "note" && f.Value == "plain" {
				replayedSeen.Store(true)
			}
		}
		return engine.Result{Emits: []engine.Emit{{Stream: stream + ":out", Fields: []topix.Field{{Name: "from", Value: m.ID}}}}}
	})
	c, err := engine.New(rdb, h, engine.Options{Stream: stream, Group: "g", Consumer: "browser-1", Block: 100 * time.Millisecond, Records: true,
		Describe: func() engine.Presence {
			return engine.Presence{Version: "test", Script: "app.star", ScriptHash: "0123456789abcdef"}
		}})
	if err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(bg)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	t.Cleanup(func() { stop(); <-done })
	redistest.WaitFor(t, 10*time.Second, "the consumer to drain the stream", func() bool { return processed.Load() >= 5 })
	redistest.WaitFor(t, 15*time.Second, "a report with the group's lag", func() bool {
		now := time.Now().Unix() / 60
		return rdb.HExists(bg, engine.MinuteKey(stream, "g", now), engine.FieldLag).Val() ||
			rdb.HExists(bg, engine.MinuteKey(stream, "g", now-1), engine.FieldLag).Val()
	})

	s, err := web.New(rdb, web.Options{Addr: "127.0.0.1:0", Token: "tok", Actions: true})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()

	ctx := browser(t)
	// An entry's script that ran would open a dialog: note it, close it.
	var dialog atomic.Value
	go func() {
		for ev, err := range chromedp.Events(ctx, page.JavascriptDialogOpening) {
			if err != nil {
				return
			}
			dialog.Store(ev.Message)
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	// Each step gets 20s: a page that never shows what a step waits for
	// fails the test instead of hanging it.
	step := func() context.Context {
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		t.Cleanup(cancel)
		return sctx
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(step(), chromedp.Text(chromedp.CSS(sel), chromedp.NodeVisible))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return v
	}
	do := func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(step(), steps...); err != nil {
			t.Fatal(err)
		}
	}
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }

	// The overview and the groups table.
	do(chromedp.Navigate(hs.URL+"/?token=tok"), chromedp.WaitVisible(css(`table.groups`)))
	dead, row := text(`[data-o="dead_letters"]`), text(`tr[data-group="orders g"]`)
	if dead != "3" || !strings.Contains(row, "active") || !strings.Contains(row, "1/1") {
		t.Errorf("overview dead letters %q, row %q; want 3, and the group active with 1/1 consumers", dead, row)
	}
	shot(t, ctx, "index.png")

	// The group: its consumer, its dead letters, shown as text.
	do(chromedp.Click(css(`tr[data-group="orders g"] a`), chromedp.NodeVisible), chromedp.WaitVisible(css(`table.consumers`)))
	consumers, deadTable := text(`table.consumers`), text(`table.dead`)
	if !strings.Contains(consumers, "browser-1") || !strings.Contains(consumers, "alive") {
		t.Errorf("consumers: %q", consumers)
	}
	if !strings.Contains(deadTable, hostileScript) || !strings.Contains(deadTable, hostileAttr) {
		t.Errorf("the hostile entries do not show as text: %q", deadTable)
	}
	if caption := text(`figure.chart figcaption`); !strings.Contains(caption, "lag on its own scale") {
		t.Errorf("the chart has no lag line: %q", caption)
	}
	do(chromedp.WaitReady(css(`figure.chart svg path.lag`)))
	shot(t, ctx, "group.png")

	// The filter.
	do(chromedp.SetValue(css(`input[name="q"]`), "boom"), chromedp.Submit(css(`form.filter`)), chromedp.WaitVisible(css(`input[value="boom"]`)))
	if matched := text(`.matched`); !strings.HasPrefix(matched, "2 matching") {
		t.Errorf("filtered by boom: %q, want 2 matching", matched)
	}

	// One dead letter in full.
	do(chromedp.Navigate(hs.URL+"/dead?stream=orders&group=g&id="+ids[0]), chromedp.WaitVisible(css(`pre.err`)))
	if e := text(`pre.err`); e != "boom "+hostileScript {
		t.Errorf("the entry's error: %q", e)
	}
	shot(t, ctx, "entry.png")

	// Replay one: confirmed with its count, then processed by the consumer.
	do(chromedp.Navigate(hs.URL+"/group?stream=orders&group=g"),
		chromedp.Click(css(`input[name="id"][value="`+ids[2]+`"]`), chromedp.NodeVisible),
		chromedp.Click(css(`button[value="replay"]`), chromedp.NodeVisible),
		chromedp.WaitVisible(css(`p.confirm`)))
	if h1 := text(`h1`); h1 != "Replay 1 dead letter?" {
		t.Errorf("confirmation: %q", h1)
	}
	shot(t, ctx, "confirm.png")
	do(chromedp.Click(css(`form button`), chromedp.NodeVisible), chromedp.WaitVisible(css(`p.message`)))
	if msg := text(`p.message`); msg != "replayed 1 of 1" {
		t.Errorf("after the replay: %q", msg)
	}
	redistest.WaitFor(t, 10*time.Second, "the replayed entry processed by the consumer", replayedSeen.Load)

	// The page refreshes itself from its JSON.
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(wctx, chromedp.WaitVisible(css(`body[data-refreshed]`))); err != nil {
		t.Errorf("the page did not refresh itself: %v", err)
	}
	if d := text(`tr[data-group="orders g"] [data-f="dead_letters"]`); d != "2" {
		t.Errorf("dead letters after the replay and a refresh: %q, want 2", d)
	}
	shot(t, ctx, "group-after-replay.png")
	if m := dialog.Load(); m != nil {
		t.Errorf("a script from an entry ran in the page: %v", m)
	}
}
