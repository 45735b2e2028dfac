package web

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/topix-dev/topix/engine"
	"github.com/topix-dev/topix/inspect"
)

// confirmPage asks before an action, saying how many entries it touches.
type confirmPage struct {
	Group inspect.Group
	Op    string // replay or delete
	IDs   string // comma-separated
	Count int
	Query string
}

// action replays or deletes dead letters: the ones ticked (ids), or all
// those matching a filter (all=1, q). A first POST answers with a
// confirmation stating the count; the confirmed POST (confirm=yes, with
// the ids the confirmation listed) acts. Replays go through engine.Replay,
// which deletes an entry from the dead-letter stream only after it was
// added again.
func (s *Server) action(w http.ResponseWriter, r *http.Request) {
	if !s.opts.Actions {
		s.fail(w, http.StatusForbidden, errors.New("this page is read-only: start topix web with --actions (and a token) to replay or delete dead letters"))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 2<<20)
	if err := r.ParseForm(); err != nil {
		s.fail(w, http.StatusBadRequest, fmt.Errorf("a bad form: %w", err))
		return
	}
	if subtle.ConstantTimeCompare([]byte(r.PostForm.Get("csrf")), []byte(s.csrf)) != 1 || !sameOrigin(r) {
		s.log.Warn("web: refused an action without the page's CSRF token", "from", r.RemoteAddr, "origin", r.Header.Get("Origin"))
		s.fail(w, http.StatusForbidden, errors.New("the form is not from this page (its CSRF token is missing or old): reload the page and try again"))
		return
	}
	sc, ok := s.scopeOf(r)
	if !ok || !sc.Single() {
		s.fail(w, http.StatusNotFound, errors.New("no such group here"))
		return
	}
	op := r.PostForm.Get("op")
	if op != "replay" && op != "delete" {
		s.fail(w, http.StatusBadRequest, fmt.Errorf("unknown action %q: replay or delete", op))
		return
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	g, err := s.in.Group(ctx, sc.Stream, sc.Group, inspect.Options{})
	if err != nil || g.State == "missing" {
		s.fail(w, http.StatusBadGateway, fmt.Errorf("cannot read the group: %v", err))
		return
	}
	q := r.PostForm.Get("q")
	var ids []string
	switch {
	case r.PostForm.Get("confirm") == "yes":
		ids = splitIDs(r.PostForm.Get("ids"))
	case r.PostForm.Get("all") == "1":
		matching, err := s.in.DeadList(ctx, g.DeadLetter, g.Group, q, maxAction, deadScan)
		if err != nil {
			s.fail(w, http.StatusBadGateway, fmt.Errorf("cannot read the dead letters: %w", err))
			return
		}
		for _, d := range matching {
			ids = append(ids, d.ID)
		}
	default:
		ids = r.PostForm["id"]
	}
	if len(ids) > maxAction {
		ids = ids[:maxAction]
	}
	if len(ids) == 0 {
		s.fail(w, http.StatusBadRequest, errors.New("no dead letters chosen: tick some, or use the filter's \"all matching\""))
		return
	}
	if r.PostForm.Get("confirm") != "yes" {
		s.render(w, "confirm.html", http.StatusOK, page{Title: "confirm", Data: confirmPage{Group: g, Op: op, IDs: strings.Join(ids, ","), Count: len(ids), Query: q}})
		return
	}

	var msg string
	switch op {
	case "replay":
		replayed, failed, err := engine.Replay(ctx, s.rdb, engine.ReplayOptions{DeadLetter: g.DeadLetter, IDs: ids}, func(rp engine.Replayed) {
			if rp.Err != nil {
				s.log.Warn("web: not replayed", "id", rp.ID, "err", rp.Err)
			}
		})
		s.log.Info("web: replayed dead letters", "from", r.RemoteAddr, "dead_letter", g.DeadLetter, "asked", len(ids), "replayed", replayed, "failed", failed)
		if err != nil {
			s.fail(w, http.StatusBadGateway, fmt.Errorf("replayed %d, then Redis failed: %w", replayed, err))
			return
		}
		msg = fmt.Sprintf("replayed %d of %d", replayed, len(ids))
		if failed > 0 {
			msg += fmt.Sprintf("; %d could not be (see the log)", failed)
		}
	case "delete":
		n, err := engine.DeleteDeadLetters(ctx, s.rdb, g.DeadLetter, ids)
		s.log.Info("web: deleted dead letters", "from", r.RemoteAddr, "dead_letter", g.DeadLetter, "asked", len(ids), "deleted", n)
		if err != nil {
			s.fail(w, http.StatusBadGateway, fmt.Errorf("deleted %d, then Redis failed: %w", n, err))
			return
		}
		msg = fmt.Sprintf("deleted %d of %d", n, len(ids))
	}
	http.Redirect(w, r, groupURL(g.Stream, g.Group)+"&"+url.Values{"msg": {msg}}.Encode(), http.StatusSeeOther)
}

func splitIDs(s string) []string {
	var ids []string
	for _, id := range strings.Split(s, ",") {
		if id = strings.TrimSpace(id); id != "" {
			ids = append(ids, id)
		}
	}
	return ids
}

// sameOrigin refuses a POST whose Origin header names another site.
// Browsers send it on cross-site POSTs; its absence (curl) is let through,
// the CSRF token being the check.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}
