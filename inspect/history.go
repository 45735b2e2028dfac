package inspect

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix"
	"github.com/topix-dev/topix/engine"
)

// Minute is one minute of a group's history, from its consumers'
// per-minute counts.
type Minute struct {
	Time         time.Time `json:"time"`
	Processed    int64     `json:"processed"`
	Failed       int64     `json:"failed"`
	DeadLettered int64     `json:"dead_lettered"`
	Script       string    `json:"script,omitempty"` // the hash a consumer ran then, if any reported it
	// Lag is the group's lag as its consumers last reported it in that
	// minute; null when none did, or Redis could not tell.
	Lag *int64 `json:"lag"`
}

// History reads the last n minutes of a group's counts, oldest first, the
// current minute last; minutes nobody reported are zero.
func (in *Inspector) History(ctx context.Context, stream, group string, n int) ([]Minute, error) {
	now := time.Now().Unix() / 60
	pipe := in.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, n)
	for i := range n {
		cmds[i] = pipe.HGetAll(ctx, engine.MinuteKey(stream, group, now-int64(n-1-i)))
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, err
	}
	out := make([]Minute, n)
	for i, c := range cmds {
		m := c.Val()
		num := func(f string) int64 { v, _ := strconv.ParseInt(m[f], 10, 64); return v }
		out[i] = Minute{
			Time:      time.Unix((now-int64(n-1-i))*60, 0).UTC(),
			Processed: num(engine.FieldProcessed), Failed: num(engine.FieldFailed), DeadLettered: num(engine.FieldDeadLettered),
			Script: m[engine.FieldScript],
		}
		if v, err := strconv.ParseInt(m[engine.FieldLag], 10, 64); err == nil && v >= 0 {
			out[i].Lag = &v
		}
	}
	return out, nil
}

// DeadEntry is one entry of a dead-letter stream: the original entry's
// fields, and what topix recorded of its failure.
type DeadEntry struct {
	ID     string        `json:"id"`
	Fields []topix.Field `json:"fields"`
	Error  string        `json:"error"`
	// Backtrace is the script's backtrace of Error, when the error came
	// from a script (empty for a timeout, a limit, or an earlier version's
	// dead letter).
	Backtrace string `json:"backtrace,omitempty"`
	Attempts  string `json:"attempts"`
	Stream    string `json:"stream"`
	Group     string `json:"group"`
	Consumer  string `json:"consumer"`
	EntryID   string `json:"entry_id"` // its id in its stream
	Time      string `json:"time"`
	// Meta holds the topix.* fields; Foreign is set for an entry that is
	// not a topix dead letter (its fields are all in Fields).
	Meta    map[string]string `json:"meta,omitempty"`
	Foreign bool              `json:"foreign,omitempty"`
}

// Matches reports whether q occurs in the entry's error, id, consumer, or
// any field name or value; an empty q matches every entry.
func (d DeadEntry) Matches(q string) bool {
	if q == "" {
		return true
	}
	if strings.Contains(d.Error, q) || strings.Contains(d.ID, q) || strings.Contains(d.Consumer, q) || strings.Contains(d.EntryID, q) {
		return true
	}
	for _, f := range d.Fields {
		if strings.Contains(f.Name, q) || strings.Contains(f.Value, q) {
			return true
		}
	}
	return false
}

// DeadList reads the newest dead letters of group (all groups' when group
// is empty) that match q, newest first: at most n, among the newest scan
// entries of the stream.
func (in *Inspector) DeadList(ctx context.Context, deadLetter, group, q string, n, scan int) ([]DeadEntry, error) {
	reply, err := in.rdb.Do(ctx, "XREVRANGE", deadLetter, "+", "-", "COUNT", scan).Slice()
	if err != nil {
		return nil, err
	}
	out := []DeadEntry{}
	for _, e := range reply {
		d := toDeadEntry(e)
		if group != "" && !d.Foreign && d.Group != group {
			continue
		}
		if d.Matches(q) {
			out = append(out, d)
			if len(out) == n {
				break
			}
		}
	}
	return out, nil
}

// DeadEntryByID reads one dead letter; found is false when there is none.
func (in *Inspector) DeadEntryByID(ctx context.Context, deadLetter, id string) (d DeadEntry, found bool, err error) {
	reply, err := in.rdb.Do(ctx, "XRANGE", deadLetter, id, id).Slice()
	if err != nil || len(reply) == 0 {
		return d, false, err
	}
	return toDeadEntry(reply[0]), true, nil
}

func toDeadEntry(e any) DeadEntry {
	id, fields := engine.ParseEntry(e)
	d := DeadEntry{ID: id}
	orig, meta, ok := engine.SplitDeadLetter(fields)
	if !ok {
		d.Fields, d.Foreign = fields, true
		return d
	}
	d.Fields, d.Meta = orig, meta
	d.Error, d.Attempts, d.Stream, d.Group = meta["topix.error"], meta["topix.attempts"], meta["topix.stream"], meta["topix.group"]
	d.Consumer, d.EntryID, d.Time = meta["topix.consumer"], meta["topix.id"], meta["topix.time"]
	d.Backtrace = meta["topix.backtrace"]
	return d
}
