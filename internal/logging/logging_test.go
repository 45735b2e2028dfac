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
