package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/topix-dev/topix"
	"github.com/topix-dev/topix/config"
	"github.com/topix-dev/topix/engine"
)

func (a *app) emitCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "emit STREAM JSON|-",
		Aliases: []string{"emitter"},
		Short:   "Add an entry to a stream, from a JSON object",
		Long: `Add one entry to STREAM and print its id. The JSON object's fields become the
entry's fields, in their order: a string is stored as it is; any other value
as its compact JSON text (2 -> "2", true -> "true", null -> "null",
[1, 2] -> "[1,2]"). The object must have at least one field.

With - instead of JSON, read one JSON object per line from stdin (blank lines
are skipped), send them pipelined and print one id per line, in order. A bad
line stops topix with exit code 2: the lines before it were sent (their ids
are printed), the bad line and the ones after it were not.

emitter is another name for emit.`,
		Example: `  topix emit orders '{"sku": "A-1", "qty": 2}'
  topix emit orders - < orders.jsonl
  topix emit logs '{"msg": "hi"}' --maxlen 100000`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usagef("emit needs 2 arguments, STREAM and a JSON object (or - for stdin), got %d; see 'topix emit --help'", len(args))
			}
			return nil
		},
		RunE: a.runEmit,
	}
	cmd.Flags().Int64(config.FlagName("maxlen"), 0, "trim the stream to about this many entries (XADD MAXLEN ~); 0 does not trim [$TOPIX_MAXLEN]")
	return cmd
}

func (a *app) runEmit(cmd *cobra.Command, args []string) error {
	stream, input := args[0], args[1]
	if stream == "" {
		return usagef("the stream name is empty")
	}
	cfg, _, err := a.load(cmd)
	if err != nil {
		return err
	}
	if input == "-" {
		return a.emitLines(cmd.Context(), cfg, stream)
	}
	fields, err := topix.ParseJSON([]byte(input))
	if err != nil {
		return usageError(err)
	}
	rdb, err := connect(cmd.Context(), cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	id, err := topix.EmitFields(cmd.Context(), rdb, stream, fields, cfg.MaxLen)
	if err != nil {
		return emitError(err)
	}
	fmt.Fprintln(a.stdout, id)
	return nil
}

// emitPipeline is the most lines sent in one round trip.
const emitPipeline = 1000

// emitLines sends stdin's lines as they come: a reader parses them while
// the previous pipeline is in flight, and each pipeline takes what has
// been parsed, so a file goes at full speed and a slow producer's lines go
// out at once.
func (a *app) emitLines(ctx context.Context, cfg config.Config, stream string) error {
	rdb, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()

	type line struct {
		args *redis.XAddArgs
		err  error // the error that ends the input
	}
	lines := make(chan line, emitPipeline)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(a.stdin)
		sc.Buffer(make([]byte, 0, 64*1024), maxStdinLine)
		n := 1
		for ; sc.Scan(); n++ {
			text := sc.Bytes()
			if len(text) == 0 || isBlank(text) {
				continue
			}
			fields, err := topix.ParseJSON(text)
			var args *redis.XAddArgs
			if err == nil {
				args, err = topix.XAddArgs(stream, fields, cfg.MaxLen)
			}
			if err != nil {
				lines <- line{err: usagef("line %d: %s; the lines before it were sent, this one and the rest were not", n, err)}
				return
			}
			lines <- line{args: args}
		}
		switch err := sc.Err(); {
		case errors.Is(err, bufio.ErrTooLong):
			lines <- line{err: usagef("line %d is longer than %d MiB, the most one line of emit - may hold; the lines before it were sent, this one and the rest were not", n, maxStdinLine>>20)}
		case err != nil:
			lines <- line{err: fmt.Errorf("read stdin: %w", err)}
		}
	}()

	out := bufio.NewWriter(a.stdout)
	defer out.Flush()
	batch := make([]*redis.XAddArgs, 0, emitPipeline)
	for l := range lines {
		// A batch is this line and whatever else is parsed already.
		batch = batch[:0]
		inputErr := l.err
		if inputErr == nil {
			batch = append(batch, l.args)
		}
	more:
		for inputErr == nil && len(batch) < emitPipeline {
			select {
			case l, ok := <-lines:
				if !ok {
					break more
				}
				if inputErr = l.err; inputErr == nil {
					batch = append(batch, l.args)
				}
			default:
				break more
			}
		}
		if err := sendBatch(ctx, rdb, batch, out); err != nil {
			return err
		}
		if inputErr != nil {
			return inputErr
		}
	}
	return nil
}

// sendBatch pipelines XADDs and prints their ids in order.
// maxStdinLine bounds one line of emit -: one entry's JSON.
const maxStdinLine = 64 << 20

func sendBatch(ctx context.Context, rdb redis.UniversalClient, batch []*redis.XAddArgs, out *bufio.Writer) error {
	if len(batch) == 0 {
		return nil
	}
	pipe := rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(batch))
	for i, args := range batch {
		cmds[i] = pipe.XAdd(ctx, args)
	}
	_, _ = pipe.Exec(ctx) // errors are read per command, to print the ids that made it
	for _, c := range cmds {
		if err := c.Err(); err != nil {
			out.Flush()
			return emitError(err)
		}
		out.WriteString(c.Val())
		out.WriteByte('\n')
	}
	return out.Flush()
}

func emitError(err error) error {
	msg := err.Error()
	var re redis.Error
	if errors.As(err, &re) {
		msg = re.Error() // Redis's own reply, without what wraps it
	}
	switch {
	case strings.HasPrefix(msg, "WRONGTYPE"):
		return usagef("the stream's key holds another type of value; pick another stream name, or delete the key")
	case strings.HasPrefix(msg, "MOVED "), strings.HasPrefix(msg, "ASK "):
		return &exitError{exitRedis, fmt.Errorf("%w (%s)", engine.ErrClusterNode, msg)}
	case strings.HasPrefix(msg, "NOPERM"):
		return &exitError{exitRedis, fmt.Errorf("XADD refused for this ACL user: %s; it needs +xadd and write access to the stream's key (the README lists what each command needs)", msg)}
	case strings.HasPrefix(msg, "OOM"):
		return fmt.Errorf("out of memory: Redis (maxmemory) refuses new entries: %s; nothing more was added", msg)
	}
	return err
}

func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' {
			return false
		}
	}
	return true
}
