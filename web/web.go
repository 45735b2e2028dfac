// Package web serves topix's page: the groups topix consumers use, each
// group's consumers, pending entries and dead letters, and actions on the
// dead letters. It reads through package inspect, as `topix stats` does,
// and acts through engine.Replay, as `topix replay` does. Everything it
// needs is embedded: html/template pages, a little CSS and plain
// JavaScript that refreshes the figures from the page's JSON.
//
// Safe by default: it is read-only unless Options.Actions, wants a token
// when it listens beyond loopback or takes actions, takes actions as POSTs
// carrying a CSRF token, and renders entries (user data) escaped.
package web

import (
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix/inspect"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Options configure a Server.
type Options struct {
	// Addr is where the page is served: a token is required unless it is a
	// loopback address.
	Addr string
	// Token, when set, must be shown once (?token=, or an Authorization:
	// Bearer header) before anything is served; the page then keeps it in
	// a cookie.
	Token string
	// Actions allows replaying and deleting dead letters.
	Actions bool
	// Group, when set, limits the page to one group (a consumer's own).
	Group *inspect.Ref
	Log   *slog.Logger
}

// ErrTokenNeeded is returned by New for options that would expose the page
// or its actions without a token.
var ErrTokenNeeded = errors.New("a token is needed")

// Server is the page's HTTP handler.
type Server struct {
	rdb  redis.UniversalClient
	in   *inspect.Inspector
	opts Options
	csrf string
	tmpl *template.Template
	log  *slog.Logger
}

// New checks opts and returns a Server reading through rdb.
func New(rdb redis.UniversalClient, opts Options) (*Server, error) {
	if err := opts.Check(); err != nil {
		return nil, err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	t, err := template.New("").Funcs(funcs).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	return &Server{rdb: rdb, in: inspect.New(rdb), opts: opts, csrf: hex.EncodeToString(b[:]), tmpl: t, log: log}, nil
}

// Check refuses options that would expose the page or its actions
// without a token.
func (o Options) Check() error {
	if o.Token == "" {
		switch {
		case o.Actions:
			return fmt.Errorf("%w with --actions: set TOPIX_WEB_TOKEN (or --token)", ErrTokenNeeded)
		case o.Addr != "" && !Loopback(o.Addr):
			return fmt.Errorf("%w to serve beyond loopback (%s): set TOPIX_WEB_TOKEN (or --token), or bind to 127.0.0.1", ErrTokenNeeded, o.Addr)
		}
	}
	return nil
}

// Loopback reports whether addr (host:port) listens on loopback only.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Handler returns the page's routes, behind the token check.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", s.index)
	mux.HandleFunc("GET /group", s.group)
	mux.HandleFunc("GET /dead", s.entry)
	mux.HandleFunc("GET /api/report", s.apiReport)
	mux.HandleFunc("GET /api/history", s.apiHistory)
	mux.HandleFunc("POST /actions", s.action)
	return s.secure(mux)
}

const tokenCookie = "topix_token"

// secure sets the headers every answer carries and checks the token.
func (s *Server) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin") // "no-referrer" makes browsers send "Origin: null" on the page's own forms
		h.Set("Cache-Control", "no-store")
		if s.opts.Token == "" {
			next.ServeHTTP(w, r)
			return
		}
		if q := r.URL.Query().Get("token"); q != "" && r.Method == http.MethodGet {
			if !s.tokenOK(q) {
				s.refuse(w, r, "wrong token")
				return
			}
			http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: q, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
			u := *r.URL
			v := u.Query()
			v.Del("token")
			u.RawQuery = v.Encode()
			http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther) // the token leaves the address bar
			return
		}
		given := ""
		if c, err := r.Cookie(tokenCookie); err == nil {
			given = c.Value
		}
		if a := r.Header.Get("Authorization"); strings.HasPrefix(a, "Bearer ") {
			given = strings.TrimPrefix(a, "Bearer ")
		}
		if !s.tokenOK(given) {
			s.refuse(w, r, "this page needs its token: open it once with ?token=TOKEN (TOPIX_WEB_TOKEN of topix web)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) tokenOK(t string) bool {
	return t != "" && subtle.ConstantTimeCompare([]byte(t), []byte(s.opts.Token)) == 1
}

func (s *Server) refuse(w http.ResponseWriter, r *http.Request, why string) {
	s.log.Warn("web: refused a request", "from", r.RemoteAddr, "path", r.URL.Path, "why", why)
	http.Error(w, why, http.StatusUnauthorized)
}

// page is what every template gets.
type page struct {
	Title   string
	CSRF    string
	Actions bool
	Single  bool // the page of one group only (a consumer's own)
	Message string
	Error   string
	Data    any
	Now     time.Time
}

func (s *Server) render(w http.ResponseWriter, name string, code int, p page) {
	p.CSRF, p.Actions, p.Single, p.Now = s.csrf, s.opts.Actions, s.opts.Group != nil, time.Now().UTC()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if err := s.tmpl.ExecuteTemplate(w, name, p); err != nil {
		s.log.Error("web: rendering a page", "page", name, "err", err)
	}
}

func (s *Server) fail(w http.ResponseWriter, code int, err error) {
	s.render(w, "error.html", code, page{Title: http.StatusText(code), Error: err.Error()})
}
