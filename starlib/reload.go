package starlib

import (
	"context"
	"errors"
	"fmt"
	"os"
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

// PollInterval is how often the watcher also compares the script's files
// with what it last saw, whatever the file system notified: a safety net
// for the changes that notifications miss (a watch lost with its directory,
// a network file system, a link re-pointed far away).
const PollInterval = 2 * time.Second

// Watch reloads the script whenever one of its files changes, until ctx is
// done. It watches the directories of the script and of the modules it
// loads, not the files, because editors save by renaming a new file over
// the old one; for a file reached through a symbolic link, both the link's
// directory and the target's; and the parent of each of those, so that a
// directory deleted and created again, or renamed away and back, is
// watched again. This covers a Kubernetes ConfigMap update (a "..data"
// link swapped to a new directory). Besides, every PollInterval it reads
// the files again and reloads if they differ from what it last saw.
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
	var dirs map[string]bool    // the directories that hold the files
	warned := map[string]bool{} // directories that could not be watched, logged once
	watch := func(s *Script) {
		dirs = map[string]bool{}
		parents := map[string]bool{}
		for _, d := range watchDirs(s) {
			dirs[d] = true
			parents[filepath.Dir(d)] = true
		}
		for d := range parents {
			_ = w.Add(d) // best effort: it brings dirs back when they reappear
		}
		for d := range dirs {
			if err := w.Add(d); err != nil {
				if !warned[d] {
					warned[d] = true
					log.Warn("cannot watch a script directory; changes in it are noticed within "+PollInterval.String()+" instead",
						"dir", d, "err", err)
				}
				continue
			}
			delete(warned, d)
		}
	}
	watch(r.script.Load())
	// What the files held when the poll last asked for a reload; the
	// running version's files are compared by their hash.
	var asked string

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	poll := time.NewTicker(PollInterval)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			switch {
			case dirs[ev.Name]:
				// A watched directory itself was created, removed or
				// renamed (seen from its parent): watch it again.
				timer.Reset(ReloadDelay)
			case dirs[filepath.Dir(ev.Name)] && r.concerns(ev.Name):
				timer.Reset(ReloadDelay)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			log.Warn("watching the script; changes are still noticed within "+PollInterval.String(), "err", err)
		case <-poll.C:
			if fp := fingerprint(r.script.Load()); fp != r.script.Load().Hash && fp != asked {
				asked = fp // a version that does not compile is tried once
				timer.Reset(0)
			}
		case <-timer.C:
			r.reload()
			watch(r.script.Load())
		}
	}
}

// watchDirs returns the directories that hold the script's files: where
// each file is as named, and where it is once symbolic links are resolved.
func watchDirs(s *Script) []string {
	var dirs []string
	paths := append([]string{s.Path}, s.Files...)
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			continue
		}
		dirs = append(dirs, filepath.Dir(abs))
		if real, err := filepath.EvalSymlinks(abs); err == nil {
			dirs = append(dirs, filepath.Dir(real))
		}
	}
	slices.Sort(dirs)
	return slices.Compact(dirs)
}

// fingerprint hashes what the script's files hold now, as the version's
// Hash does: equal to it while nothing changed. A file that cannot be read
// makes it differ.
func fingerprint(s *Script) string {
	l := loader{files: s.Files}
	for _, f := range s.Files {
		src, err := readStar("script", f)
		if err != nil {
			src = []byte("\x00unreadable: " + err.Error())
		}
		l.sources = append(l.sources, src)
	}
	return l.hash()
}

// concerns reports whether a change to path may change the script: it is
// one of its files, another .star file that a new version could load, or
// a directory or link a file may be reached through (or was: it is gone).
func (r *Runtime) concerns(path string) bool {
	if strings.HasSuffix(path, ".star") {
		return true
	}
	if abs, err := filepath.Abs(path); err == nil && slices.Contains(r.script.Load().Files, abs) {
		return true
	}
	st, err := os.Lstat(path)
	return err != nil || st.IsDir() || st.Mode()&os.ModeSymlink != 0
}

// reload compiles the script again and swaps it in if it compiles and its
// files changed.
func (r *Runtime) reload() {
	log := r.env.logger()
	cur := r.script.Load()
	s, err := Compile(cur.Path, cur.Func, r.env)
	if err != nil {
		r.reloadsFailed.Add(1)
		msgs := []string{err.Error()}
		var ce *CompileError
		if errors.As(err, &ce) {
			msgs = ce.Errors
		}
		for _, m := range msgs {
			log.Error("reload failed; still running the previous version", "err", m, "generation", cur.Generation)
		}
		return
	}
	if s.Hash == cur.Hash {
		return // saved without a change, or changed back
	}
	s.Generation = cur.Generation + 1
	r.script.Store(s)
	r.reloadsOK.Add(1)
	log.Info("script reloaded", "script", s.Path, "generation", s.Generation)
}
