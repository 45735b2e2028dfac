package main

import (
	"bufio"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/topix-dev/topix/engine"
)

func (a *app) replayCommand() *cobra.Command {
	var opts engine.ReplayOptions
	cmd := &cobra.Command{
		Use:   "replay DEAD_STREAM",
		Short: "Put dead-lettered entries back on their stream",
		Long: `Add the entries of a dead-letter stream back to the stream they came from
(or to --to), oldest first, with their original fields only: the topix.*
fields the consumer added are dropped. An entry is deleted from the
dead-letter stream only after it was added again.

Prints one line per entry: "DEAD_ID -> STREAM NEW_ID", or with --dry-run
"DEAD_ID -> STREAM FIELDS". Entries that cannot be replayed (not a topix dead
letter, or the add failed) are reported, left in place, and make the exit
code 1.`,
		Example: `  topix replay orders:dead --dry-run
  topix replay orders:dead --count 10
  topix replay orders:dead --to orders:retry`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("replay needs the dead-letter stream, e.g. orders:dead, got %d arguments; see 'topix replay --help'", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.DeadLetter = args[0]
			if opts.DeadLetter == "" {
				return usagef("the dead-letter stream name is empty")
			}
			if opts.Count < 0 {
				return usagef("--count %d: use 0 (all) or more", opts.Count)
			}
			cfg, log, err := a.load(cmd)
			if err != nil {
				return err
			}
			rdb, err := connect(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer rdb.Close()
			out := bufio.NewWriter(a.stdout)
			defer out.Flush()
			replayed, failed, err := engine.Replay(cmd.Context(), rdb, opts, func(r engine.Replayed) {
				switch {
				case r.Err != nil:
					log.Error("not replayed", "id", r.ID, "err", r.Err)
				case opts.DryRun:
					fmt.Fprintf(out, "%s -> %s %s\n", r.ID, r.Stream, fieldsJSON(r.Fields))
				default:
					fmt.Fprintf(out, "%s -> %s %s\n", r.ID, r.Stream, r.NewID)
				}
			})
			out.Flush()
			if err != nil {
				if errors.Is(err, engine.ErrWrongType) || errors.Is(err, engine.ErrNoStream) || errors.Is(err, engine.ErrReplayToItself) {
					return usageError(err)
				}
				return err
			}
			verb := "replayed"
			if opts.DryRun {
				verb = "would replay (dry run, nothing changed)"
			}
			log.Info(verb, "entries", replayed, "left_in_place", failed, "dead_letter", opts.DeadLetter)
			if failed > 0 {
				return fmt.Errorf("%d %s could not be replayed and stayed in %s", failed, plural(failed, "entry", "entries"), opts.DeadLetter)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.To, "to", "", "add the entries to this stream instead of the one each came from")
	f.IntVar(&opts.Count, "count", 0, "replay at most this many entries (oldest first); 0 replays all")
	f.BoolVar(&opts.DryRun, "dry-run", false, "only print what would be replayed")
	return cmd
}
