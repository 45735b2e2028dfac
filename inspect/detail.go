package inspect

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix"
)

// Consumer is one consumer of a group: what Redis knows of it, and what
// its heartbeat says. Durations are seconds.
type Consumer struct {
	Name    string  `json:"name"`
	Pending int64   `json:"pending"`
	Idle    float64 `json:"idle"` // since its last read or claim, as Redis counts it

	// From its heartbeat; empty when it has none (it is gone, or writes no
	// records).
	Host          string     `json:"host,omitempty"`
	PID           int        `json:"pid,omitempty"`
	Version       string     `json:"version,omitempty"`
	Script        string     `json:"script,omitempty"`
	ScriptHash    string     `json:"script_hash,omitempty"`
	Workers       int        `json:"workers,omitempty"`
	Busy          int        `json:"busy"`
	LastHeartbeat *time.Time `json:"last_heartbeat"`
	Uptime        float64    `json:"uptime,omitempty"` // until now, or until its last heartbeat if gone

	// Status is "alive", "gone" or "gone, owns N pending"; ClaimableIn is
	// how long until the pending entries of a gone consumer can be claimed
	// by the others (0: now).
	Status      string  `json:"status"`
	ClaimableIn float64 `json:"claimable_in,omitempty"`
}

// Consumers reads the consumers of a group, alive ones first, then by name.
func (in *Inspector) Consumers(ctx context.Context, stream, group string, claimIdle time.Duration) ([]Consumer, error) {
	if claimIdle <= 0 {
		claimIdle = DefaultClaimIdle
	}
	cs, err := in.rdb.XInfoConsumers(ctx, stream, group).Result()
	if err != nil {
		return nil, err
	}
	out := make([]Consumer, len(cs))
	if len(cs) == 0 {
		return out, nil
	}
	pipe := in.rdb.Pipeline()
	bc := queueBeats(ctx, pipe, stream, group, consumerNames(cs))
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, err
	}
	beats := bc.beats()
	now := time.Now()
	for i, c := range cs {
		o := Consumer{Name: c.Name, Pending: c.Pending, Idle: c.Idle.Seconds(), Status: "gone"}
		if hb := beats[i].hb; hb != nil {
			o.Host, o.PID, o.Version, o.Script, o.ScriptHash = hb.Host, hb.PID, hb.Version, hb.Script, hb.ScriptHash
			o.Workers, o.Busy = hb.Workers, hb.Busy
			at := now.Add(-beats[i].age).UTC()
			o.LastHeartbeat = &at
			o.Uptime = hb.Beat.Sub(hb.Started).Seconds() // until its last heartbeat
			if beats[i].alive {
				o.Uptime += beats[i].age.Seconds()
			}
		}
		if beats[i].alive {
			o.Status = "alive"
		} else if c.Pending > 0 {
			// The oldest idle of its entries says when they can be claimed.
			o.Status = fmt.Sprintf("gone, owns %d pending", c.Pending)
			if p, err := in.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: group, Consumer: c.Name, Start: "-", End: "+", Count: 100}).Result(); err == nil {
				most := time.Duration(0)
				for _, e := range p {
					most = max(most, e.Idle)
				}
				o.ClaimableIn = max(0, (claimIdle - most).Seconds())
			}
		}
		out[i] = o
	}
	sort.SliceStable(out, func(i, j int) bool {
		if (out[i].Status == "alive") != (out[j].Status == "alive") {
			return out[i].Status == "alive"
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// PendingEntry is one entry of a group's pending list.
type PendingEntry struct {
	ID         string        `json:"id"`
	Age        float64       `json:"age"`  // since it was added
	Idle       float64       `json:"idle"` // since it was last delivered or leased
	Owner      string        `json:"owner"`
	Deliveries int64         `json:"deliveries"`
	Fields     []topix.Field `json:"fields"` // its first fields (nil if its data is gone)
}

// previewFields is how many fields of an entry a listing shows.
const previewFields = 4

// Pending reads the n oldest entries of a group's pending list, with
// their first fields.
func (in *Inspector) Pending(ctx context.Context, stream, group string, n int) ([]PendingEntry, error) {
	ps, err := in.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: group, Start: "-", End: "+", Count: int64(n)}).Result()
	if err != nil || len(ps) == 0 {
		return []PendingEntry{}, err
	}
	pipe := in.rdb.Pipeline()
	data := make([]*redis.XMessageSliceCmd, len(ps))
	for i, p := range ps {
		data[i] = pipe.XRangeN(ctx, stream, p.ID, p.ID, 1)
	}
	_, _ = pipe.Exec(ctx)
	now := time.Now()
	out := make([]PendingEntry, len(ps))
	for i, p := range ps {
		out[i] = PendingEntry{ID: p.ID, Age: ageOf(p.ID, now), Idle: p.Idle.Seconds(), Owner: p.Consumer, Deliveries: p.RetryCount}
		if msgs := data[i].Val(); len(msgs) > 0 {
			out[i].Fields = preview(msgs[0].Values)
		}
	}
	return out, nil
}

// preview returns the first fields of an entry as go-redis parsed it. The
// order of a map is lost; they come sorted by name.
func preview(values map[string]any) []topix.Field {
	names := make([]string, 0, len(values))
	for k := range values {
		names = append(names, k)
	}
	sort.Strings(names)
	out := make([]topix.Field, 0, min(len(names), previewFields))
	for _, k := range names[:min(len(names), previewFields)] {
		out = append(out, topix.Field{Name: k, Value: fmt.Sprint(values[k])})
	}
	return out
}

// Reason is a count of dead letters that failed the same way.
type Reason struct {
	Reason string `json:"reason"`
	Count  int64  `json:"count"`
}

// DeadLetters counts the newest ReasonSample dead letters of group in the
// dead-letter stream by reason (their topix.error), most frequent first.
func (in *Inspector) DeadLetters(ctx context.Context, deadLetter, group string) ([]Reason, error) {
	msgs, err := in.rdb.XRevRangeN(ctx, deadLetter, "+", "-", ReasonSample).Result()
	if err != nil {
		return nil, err
	}
	counts := map[string]int64{}
	for _, m := range msgs {
		if g, _ := m.Values["topix.group"].(string); group != "" && g != group {
			continue
		}
		e, ok := m.Values["topix.error"].(string)
		if !ok {
			continue
		}
		counts[reasonOf(e)]++
	}
	out := make([]Reason, 0, len(counts))
	for r, n := range counts {
		out = append(out, Reason{r, n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Reason < out[j].Reason
	})
	return out, nil
}

// reasonOf bounds the length of an error, as a reason to count by.
func reasonOf(e string) string {
	if len(e) > 200 {
		e = e[:200] + "…"
	}
	return e
}
