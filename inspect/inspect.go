// Package inspect reads the state of consumer groups from Redis: lag,
// pending and stuck entries, consumers and their heartbeats, dead letters
// by reason. `topix stats`, the metrics' group gauges and the web page all
// read through it, so they always agree.
//
// It only reads. The records it reads besides Redis's own (heartbeats,
// per-minute counts, the registry of groups) are the ones a consumer with
// engine.Options.Records writes; see engine/report.go.
package inspect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix/engine"
)

// Bounds of what one look reads: a group with more stuck entries shows
// StuckCap and "or more"; dead-letter reasons come from the newest
// ReasonSample dead letters.
const (
	StuckCap     = 1000
	ReasonSample = 1000
	lagCountCap  = 10000
)

// DefaultClaimIdle is the claim idle assumed for a group none of whose
// consumers reported its own.
const DefaultClaimIdle = time.Minute

// Inspector reads groups through one client.
type Inspector struct {
	rdb redis.UniversalClient

	realOnce sync.Once
	real     bool // the server is Redis itself, whose lag can be trusted
}

// New returns an Inspector reading through rdb.
func New(rdb redis.UniversalClient) *Inspector { return &Inspector{rdb: rdb} }

// Ref names a group.
type Ref struct {
	Stream string `json:"stream"`
	Group  string `json:"group"`
}

// Group is a consumer group's state at one moment. Durations are seconds.
type Group struct {
	Stream string `json:"stream"`
	Group  string `json:"group"`
	// State is "active" (a consumer is alive), "stalled" (none is, with
	// entries waiting), "idle" (none is, nothing waits) or "missing" (the
	// stream or the group does not exist).
	State     string `json:"state"`
	Consumers int    `json:"consumers"` // registered in the group
	Alive     int    `json:"alive"`     // with a live heartbeat

	// Lag is the entries not yet delivered to the group. LagExact is false
	// when Redis could not give it (entries were deleted, or the server is
	// not Redis itself) and it was estimated.
	Lag      int64   `json:"lag"`
	LagExact bool    `json:"lag_exact"`
	LagAge   float64 `json:"lag_age"` // age of the oldest undelivered entry; 0 without lag

	Pending       int64   `json:"pending"`
	OldestPending float64 `json:"oldest_pending"` // age of the oldest pending entry
	// Stuck are the pending entries idle longer than ClaimIdle (their
	// consumer is dead or stalled); StuckCapped says there may be more.
	Stuck       int64   `json:"stuck"`
	StuckCapped bool    `json:"stuck_capped"`
	Backlog     int64   `json:"backlog"` // Lag + Pending: what is left to do
	ClaimIdle   float64 `json:"claim_idle"`

	Length      int64  `json:"length"` // of the stream
	DeadLetter  string `json:"dead_letter"`
	DeadLetters int64  `json:"dead_letters"` // length of the dead-letter stream

	// Rate and ErrorRate are entries processed and failed calls per second
	// over the last minute, from the consumers' per-minute counts.
	Rate      float64 `json:"rate"`
	ErrorRate float64 `json:"error_rate"`

	// Suppressed counts the entries consumers with --exactly-once found
	// acked already when they flushed them (processed twice; their second
	// emits not added), since the group's record began (it expires 7 days
	// after the last report).
	Suppressed int64 `json:"duplicates_suppressed"`

	LastDelivered string    `json:"last_delivered_id"`
	Time          time.Time `json:"time"` // when it was read
}

// Options tell a look what it cannot read from Redis when no consumer
// reported it; zero values take what the consumers reported, or defaults.
type Options struct {
	DeadLetter string
	ClaimIdle  time.Duration
}

// ErrNoStream is returned for a stream that does not exist.
var ErrNoStream = errors.New("no such stream")

// Groups lists the groups topix consumers reported (the registry), newest
// report first.
func (in *Inspector) Groups(ctx context.Context) ([]Ref, error) {
	members, err := in.rdb.ZRevRange(ctx, engine.RegistryKey, 0, -1).Result()
	if err != nil {
		return nil, err
	}
	refs := make([]Ref, 0, len(members))
	for _, m := range members {
		var pair [2]string
		if json.Unmarshal([]byte(m), &pair) == nil {
			refs = append(refs, Ref{pair[0], pair[1]})
		}
	}
	sort.Slice(refs, func(i, j int) bool {
		if refs[i].Stream != refs[j].Stream {
			return refs[i].Stream < refs[j].Stream
		}
		return refs[i].Group < refs[j].Group
	})
	return refs, nil
}

// StreamGroups lists the groups of stream, from Redis itself (not only
// those topix consumers reported).
func (in *Inspector) StreamGroups(ctx context.Context, stream string) ([]Ref, error) {
	gs, err := in.rdb.XInfoGroups(ctx, stream).Result()
	if err != nil {
		if isNoKey(err) {
			return nil, fmt.Errorf("%w: %q", ErrNoStream, stream)
		}
		return nil, err
	}
	refs := make([]Ref, len(gs))
	for i, g := range gs {
		refs[i] = Ref{stream, g.Name}
	}
	return refs, nil
}

func isNoKey(err error) bool {
	return err != nil && strings.Contains(err.Error(), "no such key")
}

// Group reads one group's state, in two round trips.
func (in *Inspector) Group(ctx context.Context, stream, group string, opts Options) (Group, error) {
	now := time.Now()
	g := Group{Stream: stream, Group: group, Time: now.UTC(), LagExact: true}
	minute := now.Unix() / 60

	// First round: what needs no other answer.
	pipe := in.rdb.Pipeline()
	settings := pipe.HGetAll(ctx, engine.GroupKey(stream, group))
	groups := pipe.XInfoGroups(ctx, stream)
	length := pipe.XLen(ctx, stream)
	summary := pipe.XPending(ctx, stream, group)
	consumers := pipe.XInfoConsumers(ctx, stream, group)
	cur := pipe.HGetAll(ctx, engine.MinuteKey(stream, group, minute))
	prev := pipe.HGetAll(ctx, engine.MinuteKey(stream, group, minute-1))
	_, _ = pipe.Exec(ctx)

	if err := groups.Err(); err != nil {
		if isNoKey(err) {
			g.State = "missing"
			return g, nil
		}
		return g, err
	}
	var info *redis.XInfoGroup
	for i := range groups.Val() {
		if groups.Val()[i].Name == group {
			info = &groups.Val()[i]
		}
	}
	if info == nil {
		g.State = "missing"
		return g, nil
	}
	for _, cmd := range []redis.Cmder{settings, length, summary, consumers, cur, prev} {
		if err := cmd.Err(); err != nil && err != redis.Nil {
			return g, err
		}
	}
	g.Length = length.Val()
	g.Consumers = len(consumers.Val())
	g.LastDelivered = info.LastDeliveredID
	g.DeadLetter = opts.DeadLetter
	if g.DeadLetter == "" {
		g.DeadLetter = settings.Val()[engine.FieldDeadLetter]
	}
	if g.DeadLetter == "" {
		g.DeadLetter = stream + ":dead"
	}
	claimIdle := opts.ClaimIdle
	if claimIdle <= 0 {
		if ms, err := strconv.ParseInt(settings.Val()[engine.FieldClaimIdle], 10, 64); err == nil && ms > 0 {
			claimIdle = time.Duration(ms) * time.Millisecond
		} else {
			claimIdle = DefaultClaimIdle
		}
	}
	g.ClaimIdle = claimIdle.Seconds()
	g.Suppressed, _ = strconv.ParseInt(settings.Val()[engine.FieldSuppressed], 10, 64)
	g.Pending = summary.Val().Count
	if g.Pending > 0 {
		g.OldestPending = ageOf(summary.Val().Lower, now)
	}
	g.Rate, g.ErrorRate = rates(cur.Val(), prev.Val(), now)

	// Second round: what depends on the first.
	pipe = in.rdb.Pipeline()
	dead := pipe.XLen(ctx, g.DeadLetter)
	var stuck *redis.XPendingExtCmd
	if g.Pending > 0 {
		stuck = pipe.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: group, Idle: claimIdle, Start: "-", End: "+", Count: StuckCap})
	}
	next := pipe.XRangeN(ctx, stream, "("+info.LastDeliveredID, "+", 1)
	beats := queueBeats(ctx, pipe, stream, group, consumerNames(consumers.Val()))
	_, _ = pipe.Exec(ctx)
	if err := dead.Err(); err != nil && err != redis.Nil {
		return g, err
	}
	g.DeadLetters = dead.Val()
	if stuck != nil && stuck.Err() == nil {
		g.Stuck = int64(len(stuck.Val()))
		g.StuckCapped = g.Stuck >= StuckCap
	}
	for _, b := range beats.beats() {
		if b.alive {
			g.Alive++
		}
	}
	if next.Err() == nil && len(next.Val()) > 0 {
		g.LagAge = ageOf(next.Val()[0].ID, now)
	}

	g.Lag = info.Lag
	if info.Lag < 0 || !in.isRedis(ctx) {
		g.Lag, g.LagExact = in.countAfter(ctx, stream, info.LastDeliveredID), false
	}
	if g.Lag == 0 {
		g.LagAge = 0
	}
	g.Backlog = g.Lag + g.Pending
	switch {
	case g.Alive > 0:
		g.State = "active"
	case g.Backlog > 0:
		g.State = "stalled"
	default:
		g.State = "idle"
	}
	return g, nil
}

func consumerNames(cs []redis.XInfoConsumer) []string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.Name
	}
	return names
}

// countAfter counts the entries after id, up to lagCountCap: the lag, when
// Redis cannot say it.
func (in *Inspector) countAfter(ctx context.Context, stream, id string) int64 {
	var n int64
	from := "(" + id
	for n < lagCountCap {
		page, err := in.rdb.XRangeN(ctx, stream, from, "+", 1000).Result()
		if err != nil || len(page) == 0 {
			break
		}
		n += int64(len(page))
		from = "(" + page[len(page)-1].ID
	}
	return n
}

// isRedis reports whether the server is Redis itself (INFO names a
// redis_version), and not a look-alike such as topix dev's embedded
// server, whose lag is wrong.
func (in *Inspector) isRedis(ctx context.Context) bool {
	in.realOnce.Do(func() {
		s, err := in.rdb.Info(ctx, "server").Result()
		in.real = err == nil && strings.Contains(s, "redis_version:")
	})
	return in.real
}

// rates returns entries processed and calls failed per second over the
// last minute, from the counts of the current minute and the one before,
// the earlier one weighed by how much of it lies in the last 60 seconds.
func rates(cur, prev map[string]string, now time.Time) (rate, errRate float64) {
	into := float64(now.Unix()%60) / 60
	get := func(m map[string]string, f string) float64 {
		v, _ := strconv.ParseFloat(m[f], 64)
		return v
	}
	rate = (get(cur, engine.FieldProcessed) + get(prev, engine.FieldProcessed)*(1-into)) / 60
	errRate = (get(cur, engine.FieldFailed) + get(prev, engine.FieldFailed)*(1-into)) / 60
	return rate, errRate
}

// ageOf returns the age in seconds of the entry id at now, from the
// milliseconds it starts with; 0 for an id in the future or not an id.
func ageOf(id string, now time.Time) float64 {
	ms, _, _ := strings.Cut(id, "-")
	t, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return 0
	}
	return max(0, now.Sub(time.UnixMilli(t)).Seconds())
}
