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
	addWaitFlags(cmd, "the entries before it prints their ids")
	return cmd
}

// addWaitFlags adds --wait-replicas and --wait-timeout; what is what the
// replicas must have before topix goes on.
func addWaitFlags(cmd *cobra.Command, what string) {
	d := config.Defaults()
	f := cmd.Flags()
	f.Int(config.FlagName("wait_replicas"), d.WaitReplicas, "wait until this many replicas have "+what+" (WAIT); 0 does not wait. Costs a round trip to the replicas; see docs/cluster.md for what it does not promise [$TOPIX_WAIT_REPLICAS]")
	f.Duration(config.FlagName("wait_timeout"), d.WaitTimeout, "how long --wait-replicas waits [$TOPIX_WAIT_TIMEOUT]")
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
	xargs, err := topix.XAddArgs(stream, fields, cfg.MaxLen)
	if err != nil {
		return usageError(err)
	}
	out := bufio.NewWriter(a.stdout)
	return sendBatch(cmd.Context(), rdb, []*redis.XAddArgs{xargs}, out, cfg)
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
		if err := sendBatch(ctx, rdb, batch, out, cfg); err != nil {
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

// sendBatch pipelines XADDs and prints their ids in order. With
// wait_replicas, a WAIT follows them on the same connection, and no id is
// printed before the replicas confirmed it.
func sendBatch(ctx context.Context, rdb redis.UniversalClient, batch []*redis.XAddArgs, out *bufio.Writer, cfg config.Config) error {
	if len(batch) == 0 {
		return nil
	}
	var pipe redis.Pipeliner
	if cc, ok := rdb.(*redis.ClusterClient); ok && cfg.WaitReplicas > 0 {
		// WAIT counts the writes of one connection to one node: send the
		// batch, all for one stream, to the stream's master directly.
		node, err := cc.MasterForKey(ctx, batch[0].Stream)
		if err != nil {
			return emitError(err)
		}
		pipe = node.Pipeline()
	} else {
		pipe = rdb.Pipeline()
	}
	cmds := make([]*redis.StringCmd, len(batch))
	for i, args := range batch {
		cmds[i] = pipe.XAdd(ctx, args)
	}
	var wait *redis.IntCmd
	if cfg.WaitReplicas > 0 {
		wait = redis.NewIntCmd(ctx, "WAIT", cfg.WaitReplicas, cfg.WaitTimeout.Milliseconds())
		_ = pipe.Process(ctx, wait)
	}
	_, _ = pipe.Exec(ctx) // errors are read per command, to print the ids that made it
	for i, c := range cmds {
		if err := c.Err(); err != nil {
			if wait != nil && i > 0 {
				return fmt.Errorf("%w; the %d entries before it were added (from %s to %s), but their ids are not printed: none was confirmed by the replicas", emitError(err), i, cmds[0].Val(), cmds[i-1].Val())
			}
			out.Flush()
			return emitError(err)
		}
		if wait == nil {
			out.WriteString(c.Val())
			out.WriteByte('\n')
		}
	}
	if wait != nil {
		n, err := wait.Result()
		if err != nil || n < int64(cfg.WaitReplicas) {
			why := fmt.Sprintf("%d of %d replicas confirmed them within %s", n, cfg.WaitReplicas, cfg.WaitTimeout)
			if err != nil {
				why = "WAIT failed: " + err.Error()
			}
			ids := cmds[0].Val()
			if len(cmds) > 1 {
				ids = fmt.Sprintf("%d entries, from %s to %s", len(cmds), cmds[0].Val(), cmds[len(cmds)-1].Val())
			}
			return fmt.Errorf("added %s, but %s: a failover now could lose them; their ids are not printed", ids, why)
		}
		for _, c := range cmds {
			out.WriteString(c.Val())
			out.WriteByte('\n')
		}
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
