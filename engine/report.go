package engine

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The records a consumer keeps in Redis for `topix stats` and the web page
// when Options.Records is set. None is on the correctness path: they are
// written every ReportEvery in a pipeline of their own, a failure to write
// them changes nothing for the entries, and every one of them expires.
// All but the registry hash to the stream's Cluster slot.
//
//	key                                   type    holds                                         expires
//	{S}:topix:alive:G:C                   string  consumer C's Heartbeat, JSON                  3 claim periods, at least 15s
//	{S}:topix:group:G                     hash    the group's settings: dead_letter, claim_idle; 7 days after the last write
//	                                              suppressed (duplicates, --exactly-once, total)
//	{S}:topix:minute:G:M                  hash    counts of minute M (Unix minutes): processed,  2 hours
//	                                              failed, dead_lettered, acked; script (hash);
//	                                              lag (the group's, as Redis said it last)
//	topix:groups                          zset    ["S","G"] of every group, by last report      members after 7 days; 10,000 newest kept
//
// {S} is the stream's slot prefix (the stream itself when it has a hash
// tag, {S} otherwise). Without Options.Records only the alive key is
// written, holding "1": --prune-idle relies on it.
const (
	ReportEvery = 5 * time.Second
	RegistryKey = "topix:groups"

	minuteTTL      = 2 * time.Hour
	groupTTL       = 7 * 24 * time.Hour
	registryMax    = 10000
	registryMaxAge = 7 * 24 * time.Hour
)

// HeartbeatKey is the key of consumer's heartbeat in group on stream.
func HeartbeatKey(stream, group, consumer string) string { return aliveKey(stream, group, consumer) }

// GroupKey is the hash of a group's settings, as its consumers last
// reported them.
func GroupKey(stream, group string) string { return slotPrefix(stream) + ":topix:group:" + group }

// MinuteKey is the hash of a group's counts in minute (Unix time / 60).
func MinuteKey(stream, group string, minute int64) string {
	return slotPrefix(stream) + ":topix:minute:" + group + ":" + strconv.FormatInt(minute, 10)
}

// RegistryMember is the member of RegistryKey naming stream's group.
func RegistryMember(stream, group string) string {
	b, _ := json.Marshal([2]string{stream, group})
	return string(b)
}

// Fields of the group and minute hashes.
const (
	FieldDeadLetter   = "dead_letter"
	FieldClaimIdle    = "claim_idle_ms"
	FieldProcessed    = "processed"
	FieldFailed       = "failed"
	FieldDeadLettered = "dead_lettered"
	FieldAcked        = "acked"
	FieldScript       = "script"
	FieldLag          = "lag"
	FieldSuppressed   = "suppressed"
)

// Heartbeat is what a consumer says of itself every ReportEvery.
type Heartbeat struct {
	Host       string    `json:"host"`
	PID        int       `json:"pid"`
	Version    string    `json:"version,omitempty"`
	Script     string    `json:"script,omitempty"`
	ScriptHash string    `json:"script_hash,omitempty"`
	Workers    int       `json:"workers"`
	Busy       int       `json:"busy"`
	ClaimIdle  float64   `json:"claim_idle"` // seconds
	Started    time.Time `json:"started"`
	Beat       time.Time `json:"beat"`
	// TTL is the key's expiry when written, in seconds: a reader tells how
	// long ago it was written from what is left of it (PTTL), without
	// trusting the clocks of two machines.
	TTL   float64 `json:"ttl"`
	Every float64 `json:"every"` // seconds between two heartbeats
}

// Presence is what a runtime adds to a consumer's heartbeat: which build
// runs which script. It is asked for at every report, so a reloaded
// script shows.
type Presence struct {
	Version    string
	Script     string
	ScriptHash string
}

// reporter remembers what the last report sent.
type reporter struct {
	started time.Time
	host    string
	sent    [5]int64 // processed, failed, dead, acked, suppressed, as of the last report that went through
}

// heartbeatTTL is how long a heartbeat outlives its consumer.
func (c *Consumer) heartbeatTTL() time.Duration {
	ttl := max(3*c.period(), 3*time.Second)
	if c.opts.Records {
		ttl = max(ttl, 3*ReportEvery)
	}
	return ttl
}

// heartbeat sets this consumer's heartbeat key, to expire heartbeatTTL
// from now: pruners leave a consumer alone while it exists. With Records,
// it holds the consumer's Heartbeat, and the rest of the report goes in
// the same pipeline. Without the permission to set it the consumer runs
// on; only a pruner relying on idle time alone could then remove it while
// it owns nothing, which loses nothing.
func (c *Consumer) heartbeat(ctx context.Context) {
	key := aliveKey(c.opts.Stream, c.opts.Group, c.opts.Consumer)
	var err, recErr error
	if c.opts.Records {
		err, recErr = c.report(ctx, key)
	} else {
		err = c.rdb.Set(ctx, key, "1", c.heartbeatTTL()).Err()
	}
	if err != nil && classify(err) == errPermission {
		c.noHeartbeat.Do(func() {
			c.log.Warn("cannot set the heartbeat key; consumers with --prune-idle may remove this one while it waits for entries (it loses nothing: it owns none then), and topix stats shows it as gone",
				"key", key, "err", err)
		})
	}
	if recErr != nil && classify(recErr) == errPermission {
		c.noRecords.Do(func() {
			c.log.Warn("cannot write the records topix stats reads (the ACL user may not); the consumer runs on, and topix stats misses some of its figures (--no-stats stops trying)",
				"err", recErr)
		})
	}
}

// report writes the heartbeat, the minute's counts, the group's settings
// and its registry entry in one pipeline. It returns the heartbeat's error
// and the first of the others'.
func (c *Consumer) report(ctx context.Context, key string) (beatErr, recErr error) {
	now := time.Now()
	hb := Heartbeat{
		Host: c.rep.host, PID: os.Getpid(), Workers: c.opts.Concurrency, Busy: c.State().InFlight,
		ClaimIdle: c.opts.ClaimIdle.Seconds(), Started: c.rep.started.UTC(), Beat: now.UTC(),
		TTL: c.heartbeatTTL().Seconds(), Every: c.reportEvery().Seconds(),
	}
	if c.opts.Describe != nil {
		p := c.opts.Describe()
		hb.Version, hb.Script, hb.ScriptHash = p.Version, p.Script, p.ScriptHash
	}
	val, _ := json.Marshal(hb)
	counts := [5]int64{c.processed.Load(), c.failed.Load(), c.dead.Load(), c.acked.Load(), c.suppressed.Load()}
	minute := MinuteKey(c.opts.Stream, c.opts.Group, now.Unix()/60)
	group := GroupKey(c.opts.Stream, c.opts.Group)

	lag, lagErr := c.groupLag(ctx)

	pipe := c.rdb.Pipeline()
	beat := pipe.Set(ctx, key, val, c.heartbeatTTL())
	var incrs []*redis.IntCmd
	for i, f := range [4]string{FieldProcessed, FieldFailed, FieldDeadLettered, FieldAcked} {
		if d := counts[i] - c.rep.sent[i]; d != 0 {
			incrs = append(incrs, pipe.HIncrBy(ctx, minute, f, d))
		}
	}
	if d := counts[4] - c.rep.sent[4]; d != 0 {
		incrs = append(incrs, pipe.HIncrBy(ctx, group, FieldSuppressed, d))
	}
	if hb.ScriptHash != "" {
		pipe.HSet(ctx, minute, FieldScript, hb.ScriptHash)
	}
	if lag >= 0 {
		pipe.HSet(ctx, minute, FieldLag, lag)
	}
	pipe.Expire(ctx, minute, minuteTTL)
	pipe.HSet(ctx, group, FieldDeadLetter, c.opts.DeadLetter, FieldClaimIdle, c.opts.ClaimIdle.Milliseconds())
	pipe.Expire(ctx, group, groupTTL)
	pipe.ZAdd(ctx, RegistryKey, redis.Z{Score: float64(now.Unix()), Member: RegistryMember(c.opts.Stream, c.opts.Group)})
	pipe.ZRemRangeByScore(ctx, RegistryKey, "-inf", strconv.FormatInt(now.Add(-registryMaxAge).Unix(), 10))
	pipe.ZRemRangeByRank(ctx, RegistryKey, 0, -registryMax-1)
	cmds, _ := pipe.Exec(ctx)
	counted := true // the counts went in: the next report adds what came after
	for _, cmd := range incrs {
		counted = counted && cmd.Err() == nil
	}
	if counted {
		c.rep.sent = counts
	}
	for _, cmd := range cmds {
		if cmd != beat && cmd.Err() != nil {
			return beat.Err(), cmd.Err()
		}
	}
	return beat.Err(), lagErr
}

// groupLag returns the group's lag as Redis counts it (XINFO GROUPS), or
// -1 when Redis cannot tell (after entries were deleted from the middle
// of the stream, or a server that does not count entries read). One more
// round trip per report, never on an entry's path.
func (c *Consumer) groupLag(ctx context.Context) (int64, error) {
	groups, err := c.rdb.XInfoGroups(ctx, c.opts.Stream).Result()
	if err != nil {
		return -1, err
	}
	for _, g := range groups {
		// entries-read is 0 when Redis does not count it (before 7.0, and
		// look-alikes such as topix dev's server, which says the length).
		if g.Name == c.opts.Group && g.EntriesRead > 0 {
			return g.Lag, nil
		}
	}
	return -1, nil
}

// reportLoop reports every ReportEvery until done, and once more at the
// end, for the counts of the last seconds.
func (c *Consumer) reportLoop(done context.Context) {
	ctx := context.WithoutCancel(done)
	tick(done, c.reportEvery(), func() {
		ctx, cancel := c.opCtx(ctx)
		defer cancel()
		c.heartbeat(ctx)
	})
}

func (c *Consumer) reportEvery() time.Duration { return min(ReportEvery, c.period()) }

// finalReport sends the counts not yet reported and removes the heartbeat:
// the consumer is gone.
func (c *Consumer) finalReport(ctx context.Context) {
	key := aliveKey(c.opts.Stream, c.opts.Group, c.opts.Consumer)
	if c.opts.Records {
		if beatErr, _ := c.report(ctx, key); beatErr != nil {
			return
		}
	}
	c.rdb.Del(ctx, key)
}
