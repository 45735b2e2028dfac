// Package logging builds topix's slog loggers: tint's readable lines on a
// terminal, plain text elsewhere, or JSON.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

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

// Handle writes r. Text that scripts control (messages of print() and
// log.*, attribute values, errors) cannot start a line of its own or drive
// the terminal: the message and each backtrace line are escaped here
// (Escape), attributes are quoted by tint.
func (h *textHandler) Handle(ctx context.Context, r slog.Record) error {
	var bt string
	if r.NumAttrs() > 0 || needsEscape(r.Message) {
		kept := slog.NewRecord(r.Time, r.Level, Escape(r.Message), r.PC)
		// Attribute keys and values are tint's to quote.
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
		b.WriteString(Escape(line)) // each line of it stays indented under its record
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

// needsEscape reports whether s holds a character that Escape changes.
func needsEscape(s string) bool {
	for i, r := range s {
		if r < 0x20 && r != '\t' || r == 0x7f || r >= 0x80 && r <= 0x9f || r == 0x2028 || r == 0x2029 || r == utf8.RuneError && isBadByte(s, i) {
			return true
		}
	}
	return false
}

func isBadByte(s string, i int) bool {
	r, size := utf8.DecodeRuneInString(s[i:])
	return r == utf8.RuneError && size == 1
}

// Escape writes the characters that could start a new log line or reach
// the terminal as a command as Go-style escapes: newline as \n, carriage
// return as \r, escape as \x1b, C1 controls and line separators as \u0085
// or \u2028, bytes that are not UTF-8 as \xff. Tabs and other text are
// kept. A string without such characters is returned as it is.
func Escape(s string) string {
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == utf8.RuneError && size == 1, r < 0x20 && r != '\t', r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r >= 0x80 && r <= 0x9f, r == 0x2028, r == 0x2029:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}
