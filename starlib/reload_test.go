package starlib_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/topix-dev/topix/engine"
	"github.com/topix-dev/topix/internal/redistest"
	"github.com/topix-dev/topix/starlib"
)

// versioned is a script whose consumer fails with its version, so a test
// can tell which version runs.
func versioned(v string) string {
	return "def consumer(data):\n    fail(\"version " + v + "\")\n"
}

// watching compiles path and watches it until the test ends.
func watching(t *testing.T, path string) (*starlib.Runtime, *redistest.Buffer) {
	t.Helper()
	logs := &redistest.Buffer{}
	env := &starlib.Env{Logger: slog.New(slog.NewTextHandler(logs, nil))}
	s, err := starlib.Compile(path, "consumer", env)
	if err != nil {
		t.Fatal(err)
	}
	rt := starlib.NewRuntime(s, env)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := rt.Watch(ctx); err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return rt, logs
}

// runsVersion waits until rt runs version v.
func runsVersion(t *testing.T, rt *starlib.Runtime, v string) {
	t.Helper()
	h, err := rt.NewHandler(0)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// Within the poll interval at worst; a notification should be faster.
	redistest.WaitFor(t, starlib.PollInterval+5*time.Second, "version "+v, func() bool {
		res := h.Handle(context.Background(), &engine.Message{ID: "1-1"})
		return res.Err != nil && strings.HasSuffix(res.Err.Error(), "version "+v)
	})
	t.Logf("version %s running %s after the change", v, time.Since(start).Round(time.Millisecond))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestReloadAfterAConfigMapUpdate(t *testing.T) {
	// A ConfigMap volume: app.star -> ..data/app.star, ..data -> a
	// timestamped directory; an update writes a new directory and swaps
	// ..data to it with a rename.
	dir := t.TempDir()
	must(t, os.Mkdir(filepath.Join(dir, "..2026_12_01_1"), 0o755))
	writeFile(t, filepath.Join(dir, "..2026_12_01_1", "app.star"), versioned("1"))
	must(t, os.Symlink("..2026_12_01_1", filepath.Join(dir, "..data")))
	must(t, os.Symlink(filepath.Join("..data", "app.star"), filepath.Join(dir, "app.star")))
	rt, _ := watching(t, filepath.Join(dir, "app.star"))

	update := func(n, v string) {
		ts := "..2026_12_01_" + n
		must(t, os.Mkdir(filepath.Join(dir, ts), 0o755))
		writeFile(t, filepath.Join(dir, ts, "app.star"), versioned(v))
		must(t, os.Symlink(ts, filepath.Join(dir, "..data_tmp")))
		must(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	}
	update("2", "2")
	must(t, os.RemoveAll(filepath.Join(dir, "..2026_12_01_1")))
	runsVersion(t, rt, "2")
	update("3", "3")
	runsVersion(t, rt, "3")
}

func TestReloadAfterTheDirectoryIsRecreated(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "app")
	must(t, os.Mkdir(dir, 0o755))
	path := filepath.Join(dir, "app.star")
	writeFile(t, path, versioned("1"))
	rt, _ := watching(t, path)

	must(t, os.RemoveAll(dir))
	must(t, os.Mkdir(dir, 0o755))
	writeFile(t, path, versioned("2"))
	runsVersion(t, rt, "2")
	writeFile(t, path, versioned("3"))
	runsVersion(t, rt, "3")
}

func TestReloadAfterTheDirectoryIsRenamedAwayAndBack(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "app")
	must(t, os.Mkdir(dir, 0o755))
	path := filepath.Join(dir, "app.star")
	writeFile(t, path, versioned("1"))
	rt, _ := watching(t, path)

	must(t, os.Rename(dir, filepath.Join(parent, "away")))
	writeFile(t, filepath.Join(parent, "away", "app.star"), versioned("away"))
	must(t, os.Rename(filepath.Join(parent, "away"), dir))
	writeFile(t, path, versioned("2"))
	runsVersion(t, rt, "2")
}

func TestReloadThroughALinkToAnotherDirectory(t *testing.T) {
	target := filepath.Join(t.TempDir(), "real.star")
	writeFile(t, target, versioned("1"))
	link := filepath.Join(t.TempDir(), "app.star")
	must(t, os.Symlink(target, link))
	rt, _ := watching(t, link)

	writeFile(t, target, versioned("2")) // only the target's directory sees this
	runsVersion(t, rt, "2")

	// A link re-pointed to another file is a new version too.
	other := filepath.Join(t.TempDir(), "other.star")
	writeFile(t, other, versioned("3"))
	must(t, os.Remove(link))
	must(t, os.Symlink(other, link))
	runsVersion(t, rt, "3")
}

func TestReloadOfAModuleLinkedFromElsewhereInTheTree(t *testing.T) {
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "shared", "deep"), 0o755))
	writeFile(t, filepath.Join(dir, "shared", "deep", "v.star"), "V = \"1\"\n")
	must(t, os.Symlink(filepath.Join(dir, "shared", "deep", "v.star"), filepath.Join(dir, "v.star")))
	path := filepath.Join(dir, "app.star")
	writeFile(t, path, "load(\"v.star\", \"V\")\ndef consumer(data):\n    fail(\"version \" + V)\n")
	rt, _ := watching(t, path)
	writeFile(t, filepath.Join(dir, "shared", "deep", "v.star"), "V = \"2\"\n")
	runsVersion(t, rt, "2")
}
