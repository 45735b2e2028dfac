package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// inflight is the set of entries this consumer holds: read or claimed, and
// not yet acked or given up. The lease keeps their idle time fresh so that
// no other consumer claims them mid-call; the claimer skips them.
type inflight struct {
	mu sync.Mutex
	m  map[string]time.Time // id -> when this consumer last claimed it
}

func (f *inflight) addAll(msgs []*Message) {
	now := time.Now()
	f.mu.Lock()
	for _, m := range msgs {
		f.m[m.ID] = now
	}
	f.mu.Unlock()
}

func (f *inflight) remove(ids ...string) {
	f.mu.Lock()
	for _, id := range ids {
		delete(f.m, id)
	}
	f.mu.Unlock()
}

func (f *inflight) has(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.m[id]
	return ok
}

// claimedBefore returns the ids last claimed before t, in id order.
func (f *inflight) claimedBefore(t time.Time) []string {
	f.mu.Lock()
	var ids []string
	for id, at := range f.m {
		if at.Before(t) {
			ids = append(ids, id)
		}
	}
	f.mu.Unlock()
	slices.SortFunc(ids, compareIDs)
	return ids
}

func (f *inflight) touch(ids []string, t time.Time) {
	f.mu.Lock()
	for _, id := range ids {
		if _, ok := f.m[id]; ok {
			f.m[id] = t
		}
	}
	f.mu.Unlock()
}

// compareIDs orders stream ids ("ms-seq") numerically.
func compareIDs(a, b string) int {
	am, as := splitID(a)
	bm, bs := splitID(b)
	if am != bm {
		return cmpU(am, bm)
	}
	return cmpU(as, bs)
}

// splitID parses "ms-seq"; a part that does not parse is 0.
func splitID(id string) (ms, seq uint64) {
	m, s, _ := strings.Cut(id, "-")
	ms, _ = strconv.ParseUint(m, 10, 64)
	seq, _ = strconv.ParseUint(s, 10, 64)
	return ms, seq
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// period is how often the lease is renewed and idle entries are claimed.
func (c *Consumer) period() time.Duration {
	every := c.opts.ClaimIdle / 3
	if c.opts.PruneIdle > 0 {
		every = min(every, c.opts.PruneIdle/2)
	}
	return max(every, 10*time.Millisecond)
}

// leaseLoop renews the lease on held entries until done, which comes after
// the last worker finished, so calls that run on during a shutdown keep
// their entries too. It never waits behind busy workers.
func (c *Consumer) leaseLoop(done context.Context) {
	every := c.period()
	ctx := context.WithoutCancel(done)
	tick(done, every, func() {
		ctx, cancel := c.opCtx(ctx)
		defer cancel()
		sent := time.Now()
		if err := c.lease(ctx, every); err != nil {
			c.loopFailed("renewing the lease on entries in progress", "XCLAIM", c.opts.Stream, err, sent)
		}
	})
}

// aliveKey is the heartbeat key of a consumer of group on stream: it
// exists while the consumer runs. It is on the stream's Cluster slot.
func aliveKey(stream, group, consumer string) string {
	return slotPrefix(stream) + ":topix:alive:" + group + ":" + consumer
}

// claimLoop claims entries idle too long in any consumer's pending list,
// and prunes idle consumers when asked to, until stop.
func (c *Consumer) claimLoop(stop, hard context.Context) {
	ctx := context.WithoutCancel(stop)
	tick(stop, c.period(), func() {
		ctx, cancel := c.opCtx(ctx)
		defer cancel()
		if !c.opts.Records {
			c.heartbeat(ctx) // with Records, reportLoop does, more often
		}
		sent := time.Now()
		// Claim only what the workers can start soon: entries claimed into
		// a full queue would wait here instead of elsewhere.
		if len(c.entries) < cap(c.entries)/2+1 {
			if err := c.reclaim(stop, hard); err != nil {
				c.loopFailed("claiming idle entries", "XAUTOCLAIM", c.opts.Stream, err, sent)
				return
			}
		}
		if c.opts.PruneIdle > 0 {
			if err := c.prune(ctx); err != nil {
				c.loopFailed("pruning idle consumers (--prune-idle)", "EVALSHA", c.opts.Stream, err, sent)
			}
		}
	})
}

// tick calls fn every period until stop.
func tick(stop context.Context, every time.Duration, fn func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// lease claims again, to this consumer, the held entries it has not
// claimed for a while, which resets their idle time without raising their
// delivery count (XCLAIM ... JUSTID). Only entries still in this
// consumer's pending list are claimed, so one that another consumer took
// over (after a lease failed) is not taken back.
func (c *Consumer) lease(ctx context.Context, every time.Duration) error {
	now := time.Now()
	ids := c.inflight.claimedBefore(now.Add(-every))
	if len(ids) == 0 {
		return nil
	}
	pending, err := c.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: c.opts.Stream, Group: c.opts.Group, Consumer: c.opts.Consumer,
		Start: ids[0], End: ids[len(ids)-1], Count: int64(2*len(ids) + 100),
	}).Result()
	if err != nil {
		return err
	}
	mine := make(map[string]bool, len(pending))
	for _, p := range pending {
		mine[p.ID] = true
	}
	var keep []string
	for _, id := range ids {
		if mine[id] {
			keep = append(keep, id)
		} else if c.inflight.has(id) {
			c.checkOwner(ctx, id, now)
		}
	}
	if len(keep) == 0 {
		return nil
	}
	err = c.rdb.XClaimJustID(ctx, &redis.XClaimArgs{
		Stream: c.opts.Stream, Group: c.opts.Group, Consumer: c.opts.Consumer, MinIdle: 0, Messages: keep,
	}).Err()
	if err != nil {
		return err
	}
	c.inflight.touch(keep, now)
	return nil
}

// checkOwner handles an entry in progress that is not in this consumer's
// pending list any more. If another consumer owns it now (it claimed it
// after a lease failed), that is said: the entry may be processed twice.
// If nobody does, it was most likely acked a moment ago, its ack still on
// its way back; it is not put back in the list (XCLAIM ... FORCE would
// bring an acked entry back, to be processed again). A consumer holding
// entries owns them in its pending list, so pruning never removes it.
func (c *Consumer) checkOwner(ctx context.Context, id string, now time.Time) {
	c.inflight.touch([]string{id}, now) // once per lease period, not in a loop
	owner, err := c.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: c.opts.Stream, Group: c.opts.Group, Start: id, End: id, Count: 1,
	}).Result()
	if err != nil || len(owner) == 0 {
		return
	}
	if owner[0].Consumer != c.opts.Consumer {
		c.obs.LeaseLost(1)
		c.log.Warn("an entry in progress was claimed by another consumer; it may be processed twice", "id", id, "owner", owner[0].Consumer)
	}
}

// reclaim takes over entries that have been idle at least ClaimIdle in any
// consumer's pending list of the group (XAUTOCLAIM), as when their
// consumer died, and hands them to the workers. Entries whose data was
// deleted or trimmed are removed from the pending list and logged.
func (c *Consumer) reclaim(stop, hard context.Context) error {
	ctx, cancel := c.opCtx(context.WithoutCancel(stop))
	defer cancel()
	cursor := "0-0"
	for stop.Err() == nil {
		reply, err := c.rdb.Do(ctx, "XAUTOCLAIM", c.opts.Stream, c.opts.Group, c.opts.Consumer,
			c.opts.ClaimIdle.Milliseconds(), cursor, "COUNT", c.opts.Batch).Slice()
		if err != nil {
			if classify(err) == errNoGroup {
				return nil // the reader creates it again
			}
			return err
		}
		if len(reply) < 2 {
			return errors.New("unexpected XAUTOCLAIM reply")
		}
		next, _ := reply[0].(string)
		entries, _ := reply[1].([]any)
		if len(reply) > 2 { // Redis 7: the ids it dropped because their data is gone
			if gone, _ := reply[2].([]any); len(gone) > 0 {
				for _, id := range gone {
					c.inflight.remove(fmt.Sprint(id))
					c.attempts.forget([]string{fmt.Sprint(id)})
				}
				c.acked.Add(int64(len(gone)))
				c.obs.Acked(len(gone))
				c.obs.Gone(len(gone))
				c.log.Warn("removed pending entries whose data was deleted or trimmed before they were processed", "ids", gone)
			}
		}
		msgs, err := c.parseEntries(entries, 0)
		if err != nil {
			return err
		}
		msgs = slices.DeleteFunc(msgs, func(m *Message) bool { return c.inflight.has(m.ID) })
		if len(msgs) > 0 {
			c.seen.see(msgs[len(msgs)-1].ID, "the newest entry this consumer claimed")
			c.inflight.addAll(msgs)
			c.loadRecords(ctx, msgs)
			c.claimed.Add(int64(len(msgs)))
			c.log.Info("claimed idle entries from the group's pending lists", "entries", len(msgs), "idle_at_least", c.opts.ClaimIdle.String())
			if !c.deliver(ctx, hard, msgs, FromClaimed) {
				return nil
			}
		}
		if next == "0-0" || next == "" {
			return nil
		}
		cursor = next
	}
	return nil
}

// pruneScript removes, in one atomic step, the consumers of a group other
// than ARGV[2] that are idle at least ARGV[3] ms, own no pending entries
// and have no heartbeat key (ARGV[4] .. name), and returns [name, idle,
// ...] of those it removed. Checking and deleting in one step matters: a
// consumer that read entries between a separate check and its XGROUP
// DELCONSUMER would have them dropped from the pending list.
//
// "idle" alone cannot tell a live consumer from a dead one: Redis 7.0
// renews it only when a read returns entries, so a consumer waiting for
// new ones looks idle however often it reads. Hence the heartbeat.
var pruneScript = redis.NewScript(`
local removed = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['name'] ~= ARGV[2] and tonumber(f['pending']) == 0 and tonumber(f['idle']) >= tonumber(ARGV[3])
      and redis.call('EXISTS', ARGV[4] .. f['name']) == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    removed[#removed + 1] = f['name']
    removed[#removed + 1] = f['idle']
  end
end
return removed
`)

// MinPruneIdle is the shortest PruneIdle that tells a consumer blocked in a
// read of block from a dead one by its idle time, where Redis renews it at
// every read attempt (7.2 and later): a live consumer waiting for entries
// is then idle for a little more than block at most. On 7.0 only the
// heartbeat tells them apart. (Were a live consumer pruned anyway, it
// would lose nothing: it is removed only while it owns no pending entry,
// and its next read adds it back.)
func MinPruneIdle(block time.Duration) time.Duration {
	return max(time.Second, 3*block)
}

// prune removes the group's other consumers that have been idle at least
// PruneIdle and own no pending entries. Consumers that own entries are
// never removed: that would drop their entries from the pending list.
func (c *Consumer) prune(ctx context.Context) error {
	removed, err := pruneScript.Run(ctx, c.rdb, []string{c.opts.Stream},
		c.opts.Group, c.opts.Consumer, c.opts.PruneIdle.Milliseconds(), aliveKey(c.opts.Stream, c.opts.Group, "")).Slice()
	if err != nil {
		if classify(err) == errNoGroup {
			return nil
		}
		return err
	}
	for i := 0; i+1 < len(removed); i += 2 {
		idle, _ := removed[i+1].(int64)
		c.log.Info("pruned an idle consumer that owned no pending entries", "pruned", removed[i],
			"idle", (time.Duration(idle) * time.Millisecond).Round(time.Second).String())
	}
	return nil
}
