package engine

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestOutageIsOneLineWhateverTheOrderOfOverlappingCommands(t *testing.T) {
	var out bytes.Buffer
	o := &outage{log: slog.New(slog.NewTextHandler(&out, nil))}
	down := errors.New("EOF")
	lines := func() int { return strings.Count(out.String(), "\n") }

	before := time.Now()                // a command sent while Redis was up...
	o.fail("reading", down, time.Now()) // ...but another one fails first: the outage starts
	if lines() != 1 {
		t.Fatalf("the first failure logged %d lines:\n%s", lines(), out.String())
	}
	o.ok(before) // the earlier command's success says nothing about now
	o.fail("reading", errors.New("connection refused"), time.Now())
	if lines() != 1 {
		t.Fatalf("one outage logged %d lines:\n%s", lines(), out.String())
	}

	during := time.Now() // sent while Redis was down...
	o.ok(time.Now())     // ...a later command gets through: it is over
	if !strings.Contains(out.String(), "Redis works again") {
		t.Fatalf("no recovery logged:\n%s", out.String())
	}
	o.fail("acking", down, during) // the earlier command's failure belongs to the outage that ended
	if lines() != 2 {
		t.Fatalf("a failure sent before the recovery started a new outage:\n%s", out.String())
	}

	o.fail("acking", down, time.Now()) // a failure sent after the recovery is a new outage
	if lines() != 3 || strings.Count(out.String(), "Redis failed") != 2 {
		t.Fatalf("a new outage was not logged:\n%s", out.String())
	}
}
