package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/topix-dev/topix/inspect"
)

// Bounds of one page: how many dead letters are listed, among how many
// of the newest scanned, and the most one action touches.
const (
	deadShown   = 100
	deadScan    = 10000
	pendingRows = 20
	maxAction   = 10000
	historyMins = 60
)

func (s *Server) ctx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), 10*time.Second)
}

// scopeOf returns the group a request names, and whether it may see it.
func (s *Server) scopeOf(r *http.Request) (inspect.Scope, bool) {
	q := r.URL.Query()
	if r.Method == http.MethodPost {
		q = r.PostForm
	}
	sc := inspect.Scope{Stream: q.Get("stream"), Group: q.Get("group"), Pending: pendingRows}
	if g := s.opts.Group; g != nil {
		if sc.Stream == "" && sc.Group == "" {
			sc.Stream, sc.Group = g.Stream, g.Group
		}
		return sc, sc.Stream == g.Stream && sc.Group == g.Group
	}
	return sc, true
}

func groupURL(stream, group string) string {
	return "/group?" + url.Values{"stream": {stream}, "group": {group}}.Encode()
}

// index is the overview of every group topix consumers have used.
func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	if g := s.opts.Group; g != nil {
		http.Redirect(w, r, groupURL(g.Stream, g.Group), http.StatusSeeOther)
		return
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	rep, err := s.in.Report(ctx, inspect.Scope{})
	if err != nil {
		s.fail(w, http.StatusBadGateway, fmt.Errorf("cannot read from Redis: %w", err))
		return
	}
	s.render(w, "index.html", http.StatusOK, page{Title: "topix", Data: overviewOf(rep)})
}

// overview adds up the groups of a report, for the page's top row.
type overview struct {
	Report                        inspect.Report
	Rate, ErrorRate               float64
	InFlight, Lag, Pending, Stuck int64
	DeadLetters, Alive, Consumers int64
	LagAge                        float64
}

func overviewOf(rep inspect.Report) overview {
	o := overview{Report: rep}
	for _, g := range rep.Groups {
		o.Rate += g.Rate
		o.ErrorRate += g.ErrorRate
		o.Lag += g.Lag
		o.Pending += g.Pending
		o.Stuck += g.Stuck
		o.DeadLetters += g.DeadLetters
		o.Alive += int64(g.Alive)
		o.Consumers += int64(g.Consumers)
		o.LagAge = max(o.LagAge, g.LagAge)
	}
	for _, c := range rep.Consumers {
		o.InFlight += int64(c.Busy)
	}
	return o
}

// groupPage is what the page of one group shows.
type groupPage struct {
	Overview overview
	Group    inspect.Group
	Chart    chart
	Dead     []inspect.DeadEntry
	Query    string
	Matched  int // dead letters matching Query among the newest deadScan
}

func (s *Server) group(w http.ResponseWriter, r *http.Request) {
	sc, ok := s.scopeOf(r)
	if !ok || !sc.Single() {
		s.fail(w, http.StatusNotFound, errors.New("no such group here"))
		return
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	rep, err := s.in.Report(ctx, sc)
	if errors.Is(err, inspect.ErrNoGroup) {
		s.fail(w, http.StatusNotFound, err)
		return
	}
	if err != nil {
		s.fail(w, http.StatusBadGateway, fmt.Errorf("cannot read from Redis: %w", err))
		return
	}
	g := rep.Groups[0]
	hist, err := s.in.History(ctx, g.Stream, g.Group, historyMins)
	if err != nil {
		s.fail(w, http.StatusBadGateway, fmt.Errorf("cannot read from Redis: %w", err))
		return
	}
	q := r.URL.Query().Get("q")
	matching, err := s.in.DeadList(ctx, g.DeadLetter, g.Group, q, deadScan, deadScan)
	if err != nil {
		s.fail(w, http.StatusBadGateway, fmt.Errorf("cannot read the dead letters: %w", err))
		return
	}
	p := groupPage{Overview: overviewOf(rep), Group: g, Chart: chartOf(hist), Query: q, Matched: len(matching),
		Dead: matching[:min(len(matching), deadShown)]}
	s.render(w, "group.html", http.StatusOK, page{Title: g.Stream + " " + g.Group, Data: p, Message: r.URL.Query().Get("msg")})
}

// entryPage is one dead letter.
type entryPage struct {
	Group inspect.Group
	Entry inspect.DeadEntry
}

func (s *Server) entry(w http.ResponseWriter, r *http.Request) {
	sc, ok := s.scopeOf(r)
	id := r.URL.Query().Get("id")
	if !ok || !sc.Single() || id == "" {
		s.fail(w, http.StatusNotFound, errors.New("no such entry here"))
		return
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	g, err := s.in.Group(ctx, sc.Stream, sc.Group, inspect.Options{})
	if err != nil {
		s.fail(w, http.StatusBadGateway, fmt.Errorf("cannot read from Redis: %w", err))
		return
	}
	d, found, err := s.in.DeadEntryByID(ctx, g.DeadLetter, id)
	switch {
	case err != nil:
		s.fail(w, http.StatusBadGateway, fmt.Errorf("cannot read the dead letter: %w", err))
	case !found:
		s.fail(w, http.StatusNotFound, fmt.Errorf("no dead letter %q in %s (replayed or deleted?)", id, g.DeadLetter))
	default:
		s.render(w, "entry.html", http.StatusOK, page{Title: "dead letter " + id, Data: entryPage{Group: g, Entry: d}})
	}
}

// apiReport serves the page's figures as JSON: the schema of
// `topix stats --json`, for the group asked for or every group.
func (s *Server) apiReport(w http.ResponseWriter, r *http.Request) {
	sc, ok := s.scopeOf(r)
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such group here"})
		return
	}
	if s.opts.Group != nil && sc.Stream == "" {
		sc = inspect.Scope{Stream: s.opts.Group.Stream, Group: s.opts.Group.Group, Pending: pendingRows}
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	rep, err := s.in.Report(ctx, sc)
	switch {
	case errors.Is(err, inspect.ErrNoGroup), errors.Is(err, inspect.ErrNoStream):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
	case err != nil:
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": "cannot read from Redis: " + err.Error()})
	default:
		writeJSON(w, http.StatusOK, rep)
	}
}

func (s *Server) apiHistory(w http.ResponseWriter, r *http.Request) {
	sc, ok := s.scopeOf(r)
	if !ok || !sc.Single() {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such group here"})
		return
	}
	ctx, cancel := s.ctx(r)
	defer cancel()
	hist, err := s.in.History(ctx, sc.Stream, sc.Group, historyMins)
	if err != nil {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": "cannot read from Redis: " + err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, hist)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v) // html/template's escaping is not needed: the page reads it with fetch().json()
}
