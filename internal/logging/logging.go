// Package logging builds topix's slog loggers: tint's readable lines on a
// terminal, plain text elsewhere, or JSON.
package logging

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/lmittmann/tint"
	"github.com/mattn/go-isatty"
)

// BacktraceKey is the attribute that carries a script's backtrace. In text
// output it is printed as indented lines under its record, not as one long
// quoted value.
const BacktraceKey = "backtrace"

// New returns a logger writing to w. format is "text" or "json". Text is
// coloured only when w is a terminal and the NO_COLOR variable of environ
// is unset or empty.
func New(w io.Writer, format string, level slog.Level, environ []string) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
	}
	mu := &sync.Mutex{}
	h := tint.NewTextHandler(w, &tint.Options{
		Level:      level,
		TimeFormat: time.TimeOnly,
		NoColor:    !Colour(w, environ),
	})
	return slog.New(&textHandler{Handler: h, w: w, mu: mu})
}

// Colour reports whether output to w should be coloured.
func Colour(w io.Writer, environ []string) bool {
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "NO_COLOR="); ok && v != "" {
			return false
		}
	}
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// textHandler prints a record's backtrace attribute as indented lines after
// the record.
type textHandler struct {
	slog.Handler
	w  io.Writer
	mu *sync.Mutex
}

func (h *textHandler) Handle(ctx context.Context, r slog.Record) error {
	var bt string
	if r.NumAttrs() > 0 {
		kept := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == BacktraceKey {
				bt = a.Value.String()
			} else {
				kept.AddAttrs(a)
			}
			return true
		})
		r = kept
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.Handler.Handle(ctx, r); err != nil || bt == "" {
		return err
	}
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(bt, "\n"), "\n") {
		b.WriteString("    ")
		b.WriteString(line)
		b.WriteByte('\n')
	}
	_, err := io.WriteString(h.w, b.String())
	return err
}

func (h *textHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &textHandler{Handler: h.Handler.WithAttrs(attrs), w: h.w, mu: h.mu}
}

func (h *textHandler) WithGroup(name string) slog.Handler {
	return &textHandler{Handler: h.Handler.WithGroup(name), w: h.w, mu: h.mu}
}
