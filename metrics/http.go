package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/topix-dev/topix/engine"
)

// Server serves a consumer's metrics and health on --http:
//
//	GET /metrics        Prometheus text format, OpenMetrics when asked for
//	GET /healthz        liveness: 200 while the consumer's loops make progress, whatever Redis does
//	GET /readyz         readiness: 200 while Redis answers, the group exists and the script runs;
//	                    503 and {"ready":false,"reason":...} otherwise
//	GET /debug/pprof/   Go's profiles, with Debug only
//	GET /               the web page of the consumer's group (package web), read-only
//
// It answers from before the consumer starts (ready says "starting").
type Server struct {
	// Stall is how long the consumer's loops may go without progress before
	// /healthz fails: longer than any call may take (the call timeout),
	// plus a read's block.
	Stall time.Duration
	Debug bool
	Log   *slog.Logger

	m    *Metrics
	c    atomic.Pointer[engine.Consumer]
	page atomic.Pointer[http.Handler]
}

// NewServer returns a Server for m.
func NewServer(m *Metrics, stall time.Duration, debug bool, log *slog.Logger) *Server {
	return &Server{Stall: stall, Debug: debug, Log: log, m: m}
}

// Attach sets the consumer whose health the server reports, and the page
// served on the other paths (nil: none).
func (s *Server) Attach(c *engine.Consumer, page http.Handler) {
	if page != nil {
		s.page.Store(&page)
	}
	s.c.Store(c)
}

// Serve serves on l until ctx is done.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	defer stop()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Handler returns the server's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{EnableOpenMetrics: true, ErrorLog: slogPrinter{s.Log}}))
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	if s.Debug {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if page := s.page.Load(); page != nil {
			(*page).ServeHTTP(w, r)
			return
		}
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("topix consumer: /metrics, /healthz, /readyz\n"))
	})
	return mux
}

// healthz answers 200 while the consumer is alive: its loops made progress
// within Stall. A Redis outage does not fail it: the loops go on retrying,
// and restarting the process would not bring Redis back.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	c := s.c.Load()
	if c == nil {
		reply(w, http.StatusOK, map[string]any{"alive": true, "phase": "starting"})
		return
	}
	st := c.State()
	idle := time.Since(st.Progress)
	switch {
	case st.Phase == engine.PhaseStopped:
		reply(w, http.StatusServiceUnavailable, map[string]any{"alive": false, "reason": "stopped"})
	case st.Phase != engine.PhaseStarting && idle > s.Stall:
		reply(w, http.StatusServiceUnavailable, map[string]any{"alive": false, "reason": "stalled",
			"no_progress_for": idle.Round(time.Millisecond).Seconds()})
	default:
		reply(w, http.StatusOK, map[string]any{"alive": true, "phase": st.Phase.String()})
	}
}

// readyz answers 200 while the consumer can do its work.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	c := s.c.Load()
	why := "starting"
	if c != nil {
		why = Ready(c.State())
	}
	if why != "" {
		reply(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": why})
		return
	}
	reply(w, http.StatusOK, map[string]any{"ready": true})
}

// Ready returns why a consumer in state st is not ready, or "": starting,
// draining, stopped, redis_down or no_group.
func Ready(st engine.State) string {
	switch {
	case st.Phase == engine.PhaseStarting:
		return "starting"
	case st.Phase == engine.PhaseDraining:
		return "draining"
	case st.Phase == engine.PhaseStopped:
		return "stopped"
	case !st.RedisDown.IsZero():
		return "redis_down"
	case st.NoGroup:
		return "no_group"
	}
	return ""
}

func reply(w http.ResponseWriter, code int, body map[string]any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

// slogPrinter takes promhttp's error lines into the log.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) {
	if p.log != nil {
		p.log.Warn("serving /metrics", "err", v)
	}
}
