package inspect

import (
	"context"
	"encoding/json"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix/engine"
)

// beat is what a consumer's heartbeat key says.
type beat struct {
	hb    *engine.Heartbeat // nil for a key without a record (a consumer with --no-stats)
	age   time.Duration     // since it was written, from its PTTL; 0 without a record
	alive bool
}

// beatCmds are the reads of a group's heartbeat keys, queued in a pipeline.
type beatCmds struct {
	get []*redis.StringCmd
	ttl []*redis.DurationCmd
}

func queueBeats(ctx context.Context, pipe redis.Pipeliner, stream, group string, names []string) beatCmds {
	var b beatCmds
	for _, n := range names {
		key := engine.HeartbeatKey(stream, group, n)
		b.get = append(b.get, pipe.Get(ctx, key))
		b.ttl = append(b.ttl, pipe.PTTL(ctx, key))
	}
	return b
}

// missedBeats is how many heartbeats in a row a consumer may miss before
// it counts as gone: its key outlives it, for the pruners, longer than
// that.
const missedBeats = 2

// beats returns what each key says. A consumer is alive while its key
// exists and, if it holds a record, was written less than missedBeats
// heartbeats ago (and a second).
func (b beatCmds) beats() []beat {
	out := make([]beat, len(b.get))
	for i, g := range b.get {
		v, err := g.Result()
		if err != nil {
			continue // redis.Nil: no key
		}
		var hb engine.Heartbeat
		if json.Unmarshal([]byte(v), &hb) != nil || hb.Beat.IsZero() {
			out[i] = beat{alive: true}
			continue
		}
		out[i].hb = &hb
		if left, err := b.ttl[i].Result(); err == nil && left > 0 && hb.TTL > 0 {
			out[i].age = max(0, time.Duration(hb.TTL*float64(time.Second))-left)
		}
		every := time.Duration(hb.Every * float64(time.Second))
		if every <= 0 {
			every = engine.ReportEvery
		}
		out[i].alive = out[i].age <= missedBeats*every+time.Second
	}
	return out
}
