package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix"
)

// ErrDeadLetter, wrapped in a Result's Err, sends the entry to the
// dead-letter stream at once, without further attempts.
var ErrDeadLetter = errors.New("sent to the dead-letter stream")

// DeadLetterFields are the fields a dead-letter entry carries after the
// original entry's fields, in this order.
var DeadLetterFields = []string{
	"topix.error",     // the last error
	"topix.attempts",  // calls started on the entry
	"topix.id",        // its id in its stream
	"topix.stream",    // its stream
	"topix.group",     // the consumer group
	"topix.consumer",  // the consumer that gave up on it
	"topix.time",      // when, RFC 3339 in UTC
	"topix.backtrace", // the script's backtrace of the error; empty when it has none
}

// oldDeadLetterFields is the layout before topix.backtrace: dead letters
// written by earlier versions end with it, and are read and replayed too.
var oldDeadLetterFields = DeadLetterFields[:7]

// MaxBacktrace bounds the backtrace a dead letter keeps: a script can
// raise an error of any size, and its message is in topix.error already.
const MaxBacktrace = 16 << 10

// deadLetter builds the dead-letter entry of msg, failed with err.
func (c *Consumer) deadLetter(msg *Message, err error) Emit {
	fields := make([]topix.Field, 0, len(msg.Fields)+len(DeadLetterFields))
	fields = append(fields, msg.Fields...)
	bt := backtrace(err)
	if len(bt) > MaxBacktrace {
		bt = strings.ToValidUTF8(bt[:MaxBacktrace], "") + "\n... (cut at 16 KiB)"
	}
	for i, v := range []string{
		err.Error(), fmt.Sprint(msg.Attempt), msg.ID, msg.Stream, msg.Group, msg.Consumer,
		time.Now().UTC().Format(time.RFC3339Nano), bt,
	} {
		fields = append(fields, topix.Field{Name: DeadLetterFields[i], Value: v})
	}
	return Emit{Stream: c.opts.DeadLetter, Fields: fields}
}

// DeadLetter is an entry of a dead-letter stream, split into the original
// entry and what topix added.
type DeadLetter struct {
	ID     string        // its id in the dead-letter stream
	Fields []topix.Field // the original entry's fields
	Meta   map[string]string
}

// SplitDeadLetter separates a dead-letter entry's original fields from the
// metadata topix appended (DeadLetterFields, in order, at the end, or the
// same without topix.backtrace, as earlier versions wrote them). It
// reports false for an entry that ends with neither.
func SplitDeadLetter(fields []topix.Field) (original []topix.Field, meta map[string]string, ok bool) {
	for _, layout := range [][]string{DeadLetterFields, oldDeadLetterFields} {
		if original, meta, ok = splitBy(fields, layout); ok {
			return original, meta, true
		}
	}
	return nil, nil, false
}

func splitBy(fields []topix.Field, layout []string) (original []topix.Field, meta map[string]string, ok bool) {
	n := len(fields) - len(layout)
	if n < 0 {
		return nil, nil, false
	}
	for i, name := range layout {
		if fields[n+i].Name != name {
			return nil, nil, false
		}
	}
	meta = make(map[string]string, len(layout))
	for i, name := range layout {
		meta[name] = fields[n+i].Value
	}
	return fields[:n], meta, true
}

// ErrReplayToItself means a replay was asked to add entries to the
// dead-letter stream it reads: they would come back without their
// metadata, and be replayed again.
var ErrReplayToItself = errors.New("the stream to replay to is the dead-letter stream itself")

// ErrNoStream means the stream to read does not exist.
var ErrNoStream = errors.New("no such stream")

// ReplayOptions say what Replay does.
type ReplayOptions struct {
	DeadLetter string // the dead-letter stream to replay
	To         string // the stream to add entries to; empty: each entry's own (topix.stream)
	Count      int    // replay at most this many entries; 0: all
	DryRun     bool   // only report what would be replayed

	// IDs, when set, replays only these entries of the dead-letter stream;
	// those not in it are reported with ErrNotDeadLetter.
	IDs []string
}

// ErrNotDeadLetter is the Err of a Replayed for an id that is not in the
// dead-letter stream (replayed or deleted already).
var ErrNotDeadLetter = errors.New("no such entry in the dead-letter stream (replayed or deleted already?)")

// Replayed reports one dead letter Replay handled: added to Stream as
// NewID (empty on a dry run), or skipped because of Err.
type Replayed struct {
	DeadLetter
	Stream string
	NewID  string
	Err    error
}

// Replay puts dead-lettered entries back on a stream, oldest first, with
// their original fields only. An entry is deleted from the dead-letter
// stream only after it was added again, so a failure in between leaves a
// duplicate, never a loss. report is called for every entry, in order.
// Entries that are not topix dead letters, and entries whose XADD fails,
// are reported with an Err and left where they are.
func Replay(ctx context.Context, rdb redis.UniversalClient, opts ReplayOptions, report func(Replayed)) (replayed, failed int, err error) {
	if opts.DeadLetter == "" {
		return 0, 0, errors.New("the dead-letter stream name is empty")
	}
	if opts.To == opts.DeadLetter {
		return 0, 0, fmt.Errorf("--to %s: %w; name the stream the entries go back to, or leave out --to for each entry's own", opts.To, ErrReplayToItself)
	}
	kind, err := rdb.Type(ctx, opts.DeadLetter).Result()
	if err != nil {
		return 0, 0, err
	}
	switch kind {
	case "stream":
	case "none":
		return 0, 0, fmt.Errorf("stream %q: %w; nothing to replay (check the name: the default is STREAM:dead)", opts.DeadLetter, ErrNoStream)
	default:
		return 0, 0, fmt.Errorf("key %q is a %s, %w", opts.DeadLetter, kind, ErrWrongType)
	}

	if opts.IDs != nil {
		return replayIDs(ctx, rdb, opts, report)
	}
	const batch = 500
	cursor := "-"
	for opts.Count == 0 || replayed+failed < opts.Count {
		n := batch
		if opts.Count > 0 {
			n = min(batch, opts.Count-replayed-failed)
		}
		reply, err := rdb.Do(ctx, "XRANGE", opts.DeadLetter, cursor, "+", "COUNT", n).Slice()
		if err != nil {
			return replayed, failed, err
		}
		if len(reply) == 0 {
			break
		}
		letters := make([]Replayed, 0, len(reply))
		for _, e := range reply {
			letters = append(letters, toReplay(e, opts))
		}
		cursor = "(" + letters[len(letters)-1].ID
		r, f, err := replayBatch(ctx, rdb, opts, letters, report)
		replayed, failed = replayed+r, failed+f
		if err != nil {
			return replayed, failed, err
		}
	}
	return replayed, failed, nil
}

// replayIDs replays the entries opts.IDs names, in batches, in the order
// given.
func replayIDs(ctx context.Context, rdb redis.UniversalClient, opts ReplayOptions, report func(Replayed)) (replayed, failed int, err error) {
	const batch = 500
	for start := 0; start < len(opts.IDs); start += batch {
		ids := opts.IDs[start:min(start+batch, len(opts.IDs))]
		pipe := rdb.Pipeline()
		reads := make([]*redis.Cmd, len(ids))
		for i, id := range ids {
			reads[i] = pipe.Do(ctx, "XRANGE", opts.DeadLetter, id, id)
		}
		if _, err := pipe.Exec(ctx); err != nil && !isServerError(err) {
			return replayed, failed, err
		}
		letters := make([]Replayed, len(ids))
		for i, read := range reads {
			reply, err := read.Slice()
			switch {
			case err != nil:
				letters[i] = Replayed{DeadLetter: DeadLetter{ID: ids[i]}, Err: err}
			case len(reply) == 0:
				letters[i] = Replayed{DeadLetter: DeadLetter{ID: ids[i]}, Err: ErrNotDeadLetter}
			default:
				letters[i] = toReplay(reply[0], opts)
			}
		}
		r, f, err := replayBatch(ctx, rdb, opts, letters, report)
		replayed, failed = replayed+r, failed+f
		if err != nil {
			return replayed, failed, err
		}
	}
	return replayed, failed, nil
}

// toReplay reads one dead letter and says where it goes back to, or why
// it cannot.
func toReplay(e any, opts ReplayOptions) Replayed {
	id, fields := ParseEntry(e)
	r := Replayed{DeadLetter: DeadLetter{ID: id}}
	orig, meta, ok := SplitDeadLetter(fields)
	r.Fields, r.Meta = orig, meta
	switch {
	case !ok:
		r.Fields, r.Err = fields, errors.New("not a topix dead letter (it does not end with the fields topix.error ... topix.time, topix.backtrace); left in place")
	case len(orig) == 0:
		r.Err = errors.New("the original entry has no fields; left in place")
	default:
		r.Stream = opts.To
		if r.Stream == "" {
			r.Stream = meta["topix.stream"]
		}
		if r.Stream == opts.DeadLetter {
			r.Err = fmt.Errorf("its stream (topix.stream) is %s, the dead-letter stream itself; left in place (use --to)", opts.DeadLetter)
		}
	}
	return r
}

// replayBatch re-adds letters (unless a dry run) and reports each.
func replayBatch(ctx context.Context, rdb redis.UniversalClient, opts ReplayOptions, letters []Replayed, report func(Replayed)) (replayed, failed int, err error) {
	if !opts.DryRun {
		if err := readd(ctx, rdb, opts.DeadLetter, letters); err != nil {
			return 0, 0, err
		}
	}
	for _, r := range letters {
		if r.Err != nil {
			failed++
		} else {
			replayed++
		}
		report(r)
	}
	return replayed, failed, nil
}

// DeleteDeadLetters deletes the entries ids of the dead-letter stream
// dead, and returns how many it held.
func DeleteDeadLetters(ctx context.Context, rdb redis.UniversalClient, dead string, ids []string) (int64, error) {
	var n int64
	const batch = 1000
	for start := 0; start < len(ids); start += batch {
		d, err := rdb.XDel(ctx, dead, ids[start:min(start+batch, len(ids))]...).Result()
		n += d
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// readd adds the letters without an Err to their stream, then deletes the
// ones that were added from the dead-letter stream.
func readd(ctx context.Context, rdb redis.UniversalClient, dead string, letters []Replayed) error {
	pipe := rdb.Pipeline()
	adds := make([]*redis.StringCmd, len(letters))
	for i, r := range letters {
		if r.Err != nil {
			continue
		}
		args, err := topix.XAddArgs(r.Stream, r.Fields, 0)
		if err != nil {
			letters[i].Err = err
			continue
		}
		adds[i] = pipe.XAdd(ctx, args)
	}
	if pipe.Len() == 0 {
		return nil
	}
	cmds, _ := pipe.Exec(ctx)
	for _, c := range cmds {
		if err := c.Err(); err != nil && !isServerError(err) {
			return fmt.Errorf("re-add entries: %w", err) // the connection failed; nothing was deleted
		}
	}
	var done []string
	for i, add := range adds {
		if add == nil {
			continue
		}
		if err := add.Err(); err != nil {
			letters[i].Err = fmt.Errorf("add to %q: %w; left in place", letters[i].Stream, err)
			continue
		}
		letters[i].NewID = add.Val()
		done = append(done, letters[i].ID)
	}
	if len(done) > 0 {
		if err := rdb.XDel(ctx, dead, done...).Err(); err != nil {
			return fmt.Errorf("entries were re-added but not deleted from %s (replaying again would add them twice): %w", dead, err)
		}
	}
	return nil
}

// parseEntry decodes one [id, [field, value, ...]] entry of a raw reply.
// The fields of an entry that was deleted while pending are nil.
// ParseEntry reads one entry of an XRANGE, XREVRANGE or XCLAIM reply, as
// go-redis's Do returns it: its id and fields; nil fields for an entry
// whose data is gone.
func ParseEntry(e any) (string, []topix.Field) {
	pair, _ := e.([]any)
	if len(pair) < 2 {
		return "", nil
	}
	id, _ := pair[0].(string)
	kv, _ := pair[1].([]any)
	if kv == nil {
		return id, nil
	}
	fields := make([]topix.Field, len(kv)/2)
	for j := range fields {
		fields[j].Name, _ = kv[2*j].(string)
		fields[j].Value, _ = kv[2*j+1].(string)
	}
	return id, fields
}
