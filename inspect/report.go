package inspect

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/topix-dev/topix/internal/version"
)

// Report is what `topix stats --json` prints and the web page's JSON
// serves: one schema, whose field names are stable. Consumers, Pending and
// DeadLetterReasons are set for a report on one group only.
type Report struct {
	Time              time.Time      `json:"time"`
	Version           string         `json:"version"`
	Groups            []Group        `json:"groups"`
	Consumers         []Consumer     `json:"consumers,omitempty"`
	Pending           []PendingEntry `json:"pending,omitempty"`
	DeadLetterReasons []Reason       `json:"dead_letter_reasons,omitempty"`
}

// ErrNoGroup is returned for a report on a group that does not exist.
var ErrNoGroup = errors.New("no such group")

// Scope says what a report covers: every registered group (both empty),
// every group of Stream, or one group, with its Pending oldest entries.
type Scope struct {
	Stream, Group string
	Pending       int
}

// Single reports whether the scope is one group.
func (s Scope) Single() bool { return s.Group != "" }

// Report reads the groups of scope.
func (in *Inspector) Report(ctx context.Context, scope Scope) (Report, error) {
	rep := Report{Time: time.Now().UTC(), Version: version.Get().Short(), Groups: []Group{}}
	var refs []Ref
	var err error
	switch {
	case scope.Single():
		refs = []Ref{{Stream: scope.Stream, Group: scope.Group}}
	case scope.Stream != "":
		refs, err = in.StreamGroups(ctx, scope.Stream)
	default:
		refs, err = in.Groups(ctx)
	}
	if err != nil {
		return rep, err
	}
	for _, r := range refs {
		g, err := in.Group(ctx, r.Stream, r.Group, Options{})
		if err != nil {
			return rep, err
		}
		rep.Groups = append(rep.Groups, g)
	}
	if !scope.Single() {
		return rep, nil
	}
	g := rep.Groups[0]
	if g.State == "missing" {
		return rep, fmt.Errorf("stream %q has no group %q (or no such stream): %w", g.Stream, g.Group, ErrNoGroup)
	}
	claimIdle := time.Duration(g.ClaimIdle * float64(time.Second))
	if rep.Consumers, err = in.Consumers(ctx, g.Stream, g.Group, claimIdle); err != nil {
		return rep, err
	}
	if scope.Pending > 0 {
		if rep.Pending, err = in.Pending(ctx, g.Stream, g.Group, scope.Pending); err != nil {
			return rep, err
		}
	}
	if rep.DeadLetterReasons, err = in.DeadLetters(ctx, g.DeadLetter, g.Group); err != nil {
		return rep, err
	}
	return rep, nil
}
