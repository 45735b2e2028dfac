package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/topix-dev/topix/inspect"
)

func (a *app) statsCommand() *cobra.Command {
	var asJSON bool
	var watch time.Duration
	var pending int
	cmd := &cobra.Command{
		Use:   "stats [STREAM [GROUP]]",
		Short: "Show how far behind consumer groups are, what is stuck and who consumes",
		Long: `Show the state of consumer groups, read from Redis.

With no arguments: every group topix consumers have used (they register
themselves; see docs/operations.md). With STREAM: every group of that stream.
Each group shows its state (active: a consumer is alive; stalled: none is,
with work waiting; idle: none is, nothing waits), consumers alive/registered,
lag (entries not yet delivered; ~ when estimated), lag age (how old the oldest
of them is), pending (delivered, not acked), the oldest pending entry's age,
stuck (pending entries idle longer than the claim idle), dead letters, the
rate of entries processed and of failed calls over the last minute, and the
stream's length.

With STREAM GROUP, also the group's consumers (host, pid, version, script,
workers, busy, pending, idle, last heartbeat, uptime, status: alive, or gone
and owning N pending, claimable in ...), its oldest pending entries and its
dead letters counted by reason.

--json prints one object (field names are stable; times are RFC 3339,
durations seconds). --watch redraws every INTERVAL (default 2s) on a terminal,
and prints one JSON object per interval otherwise; "--watch 5s" takes 5s as
the interval (a stream named like a duration needs "--watch=2s 5s").`,
		Example: `  topix stats
  topix stats orders billing
  topix stats orders billing --json
  topix stats --watch 5s`,
		Args: cobra.ArbitraryArgs, // checked in RunE, once --watch took its interval
		RunE: func(cmd *cobra.Command, args []string) error {
			args = watchInterval(cmd, args, &watch)
			if len(args) > 2 {
				return usagef("stats takes at most STREAM and GROUP, got %d arguments; see 'topix stats --help'", len(args))
			}
			for _, arg := range args {
				if arg == "" {
					return usagef("an empty stream or group name; see 'topix stats --help'")
				}
			}
			if cmd.Flags().Changed("watch") && watch < 100*time.Millisecond {
				return usagef("--watch %s: use an interval of at least 100ms, like 2s", watch)
			}
			if pending < 0 || pending > 1000 {
				return usagef("--pending %d: use 0 to 1000", pending)
			}
			cfg, _, err := a.load(cmd)
			if err != nil {
				return err
			}
			ctx, stop := a.signalContext(discardWarn{})
			defer stop()
			rdb, err := connect(ctx, cfg)
			if err != nil {
				return err
			}
			defer rdb.Close()
			s := statsRun{in: inspect.New(rdb), scope: inspect.Scope{Pending: pending}}
			if len(args) > 0 {
				s.scope.Stream = args[0]
			}
			if len(args) > 1 {
				s.scope.Group = args[1]
			}
			if !cmd.Flags().Changed("watch") {
				rep, err := s.read(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(a.stdout, rep)
				}
				statsText(a.stdout, rep, s.scope.Single())
				return nil
			}
			term := false
			if f, ok := a.stdout.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
				term = !asJSON
			}
			t := time.NewTicker(watch)
			defer t.Stop()
			for {
				rep, err := s.read(ctx)
				if ctx.Err() != nil {
					return nil
				}
				var ee *exitError
				if errors.As(err, &ee) && ee.code == exitUsage {
					return err
				}
				switch {
				case term:
					fmt.Fprint(a.stdout, "\x1b[H\x1b[2J")
					if err != nil {
						fmt.Fprintf(a.stdout, "%s  %s\n", time.Now().Format(time.TimeOnly), oneLine(err))
					} else {
						statsText(a.stdout, rep, s.scope.Single())
					}
				case err != nil:
					_ = writeJSON(a.stdout, map[string]any{"time": time.Now().UTC(), "error": oneLine(err)})
				default:
					_ = writeJSON(a.stdout, rep)
				}
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
				}
			}
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print JSON: one object, or one per interval with --watch")
	f.DurationVar(&watch, "watch", 2*time.Second, "read again every INTERVAL until interrupted")
	f.Lookup("watch").NoOptDefVal = "2s"
	f.IntVar(&pending, "pending", 10, "with STREAM GROUP, how many of the oldest pending entries to list")
	return cmd
}

// watchInterval takes the interval of a "--watch 5s" written with a
// space: the flag's value is optional, so the parser left 5s among the
// arguments, wherever the flag was. The first argument that reads as a
// duration is taken.
func watchInterval(cmd *cobra.Command, args []string, watch *time.Duration) []string {
	f := cmd.Flags().Lookup("watch")
	if !f.Changed || f.Value.String() != f.NoOptDefVal {
		return args
	}
	for i, a := range args {
		if d, err := time.ParseDuration(a); err == nil {
			*watch = d
			return append(args[:i:i], args[i+1:]...)
		}
	}
	return args
}

// discardWarn is the logger of a signal context that has nothing to say.
type discardWarn struct{}

func (discardWarn) Warn(string, ...any) {}

// statsRun reads what topix stats shows.
type statsRun struct {
	in    *inspect.Inspector
	scope inspect.Scope
}

func (s statsRun) read(ctx context.Context) (inspect.Report, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rep, err := s.in.Report(ctx, s.scope)
	if err != nil {
		return rep, statsError(err, s.scope)
	}
	return rep, nil
}

// statsError maps a failed read to its exit code: a stream that does not
// exist is a bad argument; Redis failing is exit 3.
func statsError(err error, scope inspect.Scope) error {
	switch {
	case errors.Is(err, inspect.ErrNoStream):
		return usagef("%s; 'topix stats' lists the groups topix consumers have used", err)
	case errors.Is(err, inspect.ErrNoGroup):
		return usagef("stream %q has no group %q (or no such stream); 'topix stats %s' lists its groups", scope.Stream, scope.Group, quoteArg(scope.Stream))
	}
	var re redis.Error
	if errors.As(err, &re) {
		return &exitError{exitRedis, fmt.Errorf("redis refused a read: %w", err)}
	}
	return &exitError{exitRedis, fmt.Errorf("cannot read from Redis: %w", err)}
}

func quoteArg(s string) string {
	if strings.ContainsAny(s, " \t'\"$\\") {
		return strconv.Quote(s)
	}
	return s
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// statsText prints a report as tables; single: the report of one group.
func statsText(w io.Writer, r inspect.Report, single bool) {
	if len(r.Groups) == 0 {
		fmt.Fprintln(w, "no groups: no topix consumer has reported here yet (or all ran with --no-stats); 'topix stats STREAM' lists a stream's groups")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tGROUP\tSTATE\tCONSUMERS\tLAG\tLAG AGE\tPENDING\tOLDEST PENDING\tSTUCK\tDEAD LETTERS\tRATE/S\tERRORS/S\tLENGTH")
	for _, g := range r.Groups {
		if g.State == "missing" {
			fmt.Fprintf(tw, "%s\t%s\tmissing\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\n", g.Stream, g.Group)
			continue
		}
		lag := strconv.FormatInt(g.Lag, 10)
		if !g.LagExact {
			lag = "~" + lag
		}
		stuck := strconv.FormatInt(g.Stuck, 10)
		if g.StuckCapped {
			stuck += "+"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%d\n", g.Stream, g.Group, g.State, g.Alive, g.Consumers,
			lag, age(g.LagAge), g.Pending, age(g.OldestPending), stuck, g.DeadLetters, rate(g.Rate), rate(g.ErrorRate), g.Length)
	}
	tw.Flush()
	if !single {
		return
	}
	g := r.Groups[0]
	fmt.Fprintf(w, "\nconsumers of %s %s:\n", g.Stream, g.Group)
	if len(r.Consumers) == 0 {
		fmt.Fprintln(w, "  none")
	} else {
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  NAME\tHOST\tPID\tVERSION\tSCRIPT\tHASH\tWORKERS\tBUSY\tPENDING\tIDLE\tHEARTBEAT\tUPTIME\tSTATUS")
		for _, c := range r.Consumers {
			beat, hash := "-", "-"
			if c.LastHeartbeat != nil {
				beat = age(time.Since(*c.LastHeartbeat).Seconds()) + " ago"
			}
			if c.ScriptHash != "" {
				hash = c.ScriptHash[:min(12, len(c.ScriptHash))]
			}
			status := c.Status
			if c.Pending > 0 && c.Status != "alive" {
				if c.ClaimableIn > 0 {
					status += ", claimable in " + age(c.ClaimableIn)
				} else {
					status += ", claimable now"
				}
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n", c.Name, dash(c.Host), dashInt(c.PID), dash(c.Version),
				dash(c.Script), hash, dashInt(c.Workers), c.Busy, c.Pending, age(c.Idle), beat, age(c.Uptime), status)
		}
		tw.Flush()
	}
	if len(r.Pending) > 0 {
		fmt.Fprintln(w, "\noldest pending entries:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  ID\tAGE\tIDLE\tOWNER\tDELIVERIES\tFIELDS")
		for _, p := range r.Pending {
			fields := "(deleted)"
			if p.Fields != nil {
				fields = fieldsJSON(p.Fields)
				if len(fields) > 60 {
					fields = fields[:57] + "..."
				}
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%s\n", p.ID, age(p.Age), age(p.Idle), p.Owner, p.Deliveries, fields)
		}
		tw.Flush()
	}
	if g.Suppressed > 0 {
		fmt.Fprintf(w, "\nduplicates suppressed (--exactly-once): %d entries processed twice, emitted once\n", g.Suppressed)
	}
	fmt.Fprintf(w, "\ndead letters in %s: %d\n", g.DeadLetter, g.DeadLetters)
	for _, d := range r.DeadLetterReasons {
		fmt.Fprintf(w, "  %6d  %s\n", d.Count, d.Reason)
	}
}

// age and rate are the report's own formats, shared with the web page.
var (
	age  = inspect.FormatAge
	rate = inspect.FormatRate
)

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func dashInt(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}
