package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"testing"
)

func TestTextPrintsTheBacktraceAsIndentedLines(t *testing.T) {
	var buf bytes.Buffer
	log := New(&buf, "text", slog.LevelInfo, nil).With("stream", "s")
	log.Warn("entry failed", "id", "1-0", BacktraceKey, "Traceback (most recent call last):\n  app.star:3:5: in consumer\nError: boom")
	log.Debug("hidden")
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("got %d lines, want 4:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], "WRN entry failed stream=s id=1-0") || strings.Contains(lines[0], "Traceback") {
		t.Errorf("record line = %q", lines[0])
	}
	if lines[2] != "      app.star:3:5: in consumer" || lines[3] != "    Error: boom" {
		t.Errorf("backtrace lines = %q", lines[1:])
	}
	if strings.Contains(buf.String(), "\x1b[") {
		t.Error("colour codes in output that is not a terminal")
	}
}

func TestJSONKeepsTheBacktraceAsAnAttribute(t *testing.T) {
	var buf bytes.Buffer
	New(&buf, "json", slog.LevelDebug, nil).Debug("entry failed", BacktraceKey, "a\nb")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not one JSON object: %q", buf.String())
	}
	if rec[BacktraceKey] != "a\nb" || rec["level"] != "DEBUG" {
		t.Errorf("record = %v", rec)
	}
}

func TestColour(t *testing.T) {
	if Colour(&bytes.Buffer{}, nil) {
		t.Error("a buffer is not a terminal")
	}
	if Colour(os.Stderr, []string{"NO_COLOR=1"}) {
		t.Error("NO_COLOR=1 must turn colour off")
	}
}

func TestScriptTextCannotForgeLinesOrDriveTheTerminal(t *testing.T) {
	forged := "done\n20:00:00 ERR Redis failed; retrying\r\x1b[2J\x1b]0;pwned\x07\u009b31m\u2028x\xff"
	var buf bytes.Buffer
	log := New(&buf, "text", slog.LevelInfo, nil).With("stream", "s\nfake")
	log.Info(forged, "attr", forged, forged, "key", BacktraceKey, "Traceback:\n  app.star:1:1: in consumer\nError: "+forged)
	out := buf.String()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	// The record is one line; the backtrace follows it indented, a message
	// with a newline in it included, so nothing looks like a record of its
	// own.
	if len(lines) < 4 {
		t.Fatalf("got %d lines, want the record and its indented backtrace:\n%s", len(lines), out)
	}
	for i, l := range lines[1:] {
		if !strings.HasPrefix(l, "    ") {
			t.Errorf("backtrace line %d is not indented: %q", i+1, l)
		}
	}
	for _, bad := range []string{"\x1b", "\r", "\x07", "\u009b", "\u2028", "\xff"} {
		if strings.Contains(out, bad) {
			t.Errorf("raw %q in the text log: %q", bad, out)
		}
	}
	if !strings.Contains(lines[0], `done\n20:00:00 ERR Redis failed; retrying\r\x1b[2J`) {
		t.Errorf("the message is not shown escaped: %q", lines[0])
	}
	if Escape("plain text\twith a tab, é") != "plain text\twith a tab, é" {
		t.Error("Escape changed ordinary text")
	}
}
