package starlib

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// ReloadDelay is how long the watcher waits after the last change to a
// script's files before it reloads, so that a burst of writes (an editor
// saving, a git checkout) makes one reload.
const ReloadDelay = 100 * time.Millisecond

// Watch reloads the script whenever one of its files changes, until ctx is
// done. It watches the directories of the script and of the modules it
// loads, not the files, because editors save by renaming a new file over
// the old one.
//
// A change is compiled and checked like the first version. If that fails,
// every error is logged with its position and the running version stays.
// If it succeeds and the files' content differs, the new version is swapped
// in: each worker takes it at its next entry, and a call in flight
// finishes on the version it started with. Each reload is logged with its
// generation number.
func (r *Runtime) Watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch the script: %w", err)
	}
	defer w.Close()
	log := r.env.logger()
	watched := map[string]bool{}
	watch := func(s *Script) {
		for _, f := range s.Files {
			dir := filepath.Dir(f)
			if watched[dir] {
				continue
			}
			if err := w.Add(dir); err != nil {
				log.Warn("cannot watch a script directory; edits in it will not be reloaded", "dir", dir, "err", err)
				continue
			}
			watched[dir] = true
		}
	}
	watch(r.script.Load())

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if r.concerns(ev.Name) {
				timer.Reset(ReloadDelay)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			log.Warn("watching the script", "err", err)
		case <-timer.C:
			if s := r.reload(); s != nil {
				watch(s)
			}
		}
	}
}

// concerns reports whether a change to path may change the script: it is
// one of its files, or another .star file that a new version could load.
func (r *Runtime) concerns(path string) bool {
	if strings.HasSuffix(path, ".star") {
		return true
	}
	abs, err := filepath.Abs(path)
	return err == nil && slices.Contains(r.script.Load().Files, abs)
}

// reload compiles the script again and swaps it in if it compiles and its
// files changed. It returns the new version, or nil.
func (r *Runtime) reload() *Script {
	log := r.env.logger()
	cur := r.script.Load()
	s, err := Compile(cur.Path, cur.Func, r.env)
	if err != nil {
		msgs := []string{err.Error()}
		var ce *CompileError
		if errors.As(err, &ce) {
			msgs = ce.Errors
		}
		for _, m := range msgs {
			log.Error("reload failed; still running the previous version", "err", m, "generation", cur.Generation)
		}
		return nil
	}
	if s.Hash == cur.Hash {
		return nil // saved without a change, or changed back
	}
	s.Generation = cur.Generation + 1
	r.script.Store(s)
	log.Info("script reloaded", "script", s.Path, "generation", s.Generation)
	return s
}
