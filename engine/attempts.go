package engine

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Attempts are counted by topix, not by Redis's delivery count: Redis
// counts a delivery each time an entry is read again from a pending list
// or claimed, also when nobody ever started to process it. After a
// consumer died mid-call, every entry of its last reads would be charged
// an attempt, and after a few crashes the healthy neighbours of the entry
// that caused them would be dead-lettered unseen.
//
// So the engine keeps, for the entries whose attempts matter after a
// stop, a record in one Redis hash per group (AttemptsKey): field = entry
// id, value = "STARTED:FAILED", the calls started on the entry and those
// of them that ended in a failure. STARTED minus FAILED is how many times
// a consumer stopped (died, was killed, or cut a call at a forced
// shutdown) while processing the entry. A record is written
//
//   - for a call that runs longer than markAfter: by the marker, in one
//     pipeline per tick for all such calls. A fast call, the normal case,
//     writes nothing at all;
//   - for a failed call: by the marker too, so the failure is still
//     counted if the consumer stops before the retry;
//   - before each call of an entry delivered again after a stop (read from
//     this consumer's own pending list at start, or claimed from another
//     consumer's): synchronously, since such an entry may be the one that
//     ended the last consumer, and the next crash must be counted.
//
// and deleted with the entry's ack. An entry delivered again after a stop
// gets attempt STARTED+1 (1 without a record: it was never known to
// start); once STARTED reaches MaxAttempts it is dead-lettered without
// another call. The hash expires attemptsTTL after its last write, so the
// records of entries acked by a consumer that died in between do not pile
// up.
const (
	markAfter   = 10 * time.Millisecond
	attemptsTTL = 7 * 24 * time.Hour
)

// AttemptsKey is the hash that holds the attempt records of group on
// stream. It hashes to the stream's Redis Cluster slot: the key's hash tag
// is the stream's own tag when it has one, or the whole stream name.
func AttemptsKey(stream, group string) string {
	return slotPrefix(stream) + ":topix:attempts:" + group
}

// slotPrefix returns a key prefix that starts with stream and hashes to
// the same cluster slot.
func slotPrefix(stream string) string {
	if open := strings.IndexByte(stream, '{'); open >= 0 {
		if end := strings.IndexByte(stream[open+1:], '}'); end > 0 {
			return stream // its first tag is the slot of every key that starts with it
		}
	}
	if strings.ContainsAny(stream, "{}") {
		// No usable tag, and wrapping it in braces would make another one.
		// Such a name shares no slot with its sidecar keys; only Cluster
		// cares, and only for keys one command touches together.
		return stream
	}
	return "{" + stream + "}"
}

// record is one entry's attempt record.
type record struct{ started, failed int64 }

func (r record) value() string {
	return strconv.FormatInt(r.started, 10) + ":" + strconv.FormatInt(r.failed, 10)
}

func parseRecord(v string) (record, bool) {
	a, f, ok := strings.Cut(v, ":")
	if !ok {
		return record{}, false
	}
	started, err1 := strconv.ParseInt(a, 10, 64)
	failed, err2 := strconv.ParseInt(f, 10, 64)
	if err1 != nil || err2 != nil || started < 0 || failed < 0 || failed > started {
		return record{}, false
	}
	return record{started, failed}, true
}

// attempts tracks the records of one consumer: which of its entries have
// one (so their ack deletes it), and those waiting to be written.
type attempts struct {
	key string

	mu       sync.Mutex
	recorded map[string]bool   // ids with a record in Redis (or on its way)
	queue    map[string]record // records to write at the next tick
	count    atomic.Int64      // len(recorded): lets the ack path skip the lock

	// running[w].m is the entry worker w is calling, or nil. Each on a
	// cache line of its own: every worker writes its slot twice per entry.
	running []runningSlot
}

type runningSlot struct {
	m    atomic.Pointer[Message]
	done atomic.Int64 // Unix ns when the worker's last call ended (see State)
	_    [48]byte
}

func newAttempts(key string, workers int) *attempts {
	return &attempts{key: key, recorded: map[string]bool{}, queue: map[string]record{}, running: make([]runningSlot, workers)}
}

// enqueue asks for r to be written at the next tick.
func (a *attempts) enqueue(id string, r record) {
	a.mu.Lock()
	a.queue[id] = r
	if !a.recorded[id] {
		a.recorded[id] = true
		a.count.Add(1)
	}
	a.mu.Unlock()
}

// forget says which of ids have a record, and forgets them: their ack
// deletes the records.
func (a *attempts) forget(ids []string) (had []string) {
	if a.count.Load() == 0 {
		return nil
	}
	a.mu.Lock()
	for _, id := range ids {
		if a.recorded[id] {
			had = append(had, id)
			delete(a.recorded, id)
			delete(a.queue, id)
		}
	}
	a.count.Store(int64(len(a.recorded)))
	a.mu.Unlock()
	return had
}

// markLoop writes the records of the calls running longer than markAfter,
// and of the failed ones, every markAfter until done.
func (c *Consumer) markLoop(done context.Context) {
	ctx := context.WithoutCancel(done)
	seen := make([]*Message, len(c.attempts.running))   // at the last tick
	marked := make([]*Message, len(c.attempts.running)) // whose record was queued
	tick(done, markAfter, func() {
		ctx, cancel := c.opCtx(ctx)
		defer cancel()
		for w := range c.attempts.running {
			m := c.attempts.running[w].m.Load()
			// Running since the last tick at least; an entry delivered
			// again had its record written before the call.
			if m != nil && m == seen[w] && m != marked[w] && !m.redelivered {
				marked[w] = m
				c.attempts.enqueue(m.ID, record{m.Attempt, m.failed})
			}
			seen[w] = m
		}
		c.writeRecords(ctx)
	})
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	c.writeRecords(ctx)
}

// writeRecords sends the queued records in one pipeline.
func (c *Consumer) writeRecords(ctx context.Context) {
	a := c.attempts
	a.mu.Lock()
	if len(a.queue) == 0 {
		a.mu.Unlock()
		return
	}
	queue := a.queue
	a.queue = make(map[string]record, len(queue))
	a.mu.Unlock()

	args := make([]any, 0, 2+2*len(queue))
	args = append(args, "HSET", a.key)
	for id, r := range queue {
		args = append(args, id, r.value())
	}
	sent := time.Now()
	pipe := c.rdb.Pipeline()
	pipe.Do(ctx, args...)
	pipe.Expire(ctx, a.key, attemptsTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		c.loopFailed("recording the attempts of entries in progress", "HSET", a.key, err, sent)
		// Keep what was not written for the next tick, unless a newer
		// record or the ack came in the meantime.
		a.mu.Lock()
		for id, r := range queue {
			if _, newer := a.queue[id]; !newer && a.recorded[id] {
				a.queue[id] = r
			}
		}
		a.mu.Unlock()
	}
}

// recordStart writes, before its call, the record of an entry delivered
// again after a stop. It reports false when Redis did not take it: then
// the call must not run, or a crash in it would go uncounted.
func (c *Consumer) recordStart(ctx context.Context, m *Message) bool {
	sent := time.Now()
	pipe := c.rdb.Pipeline()
	pipe.HSet(ctx, c.attempts.key, m.ID, record{m.Attempt, m.failed}.value())
	pipe.Expire(ctx, c.attempts.key, attemptsTTL)
	if _, err := pipe.Exec(ctx); err != nil {
		c.loopFailed("recording the attempt of an entry delivered again", "HSET", c.attempts.key, err, sent)
		return false
	}
	a := c.attempts
	a.mu.Lock()
	if !a.recorded[m.ID] {
		a.recorded[m.ID] = true
		a.count.Add(1)
	}
	a.mu.Unlock()
	return true
}

// loadRecords sets the attempt of entries delivered again after a stop
// from their records: STARTED+1, or 1 for an entry never known to start.
// If Redis cannot say, the entries count as started once more than
// recorded, so a failing Redis cannot make an entry run for ever.
func (c *Consumer) loadRecords(ctx context.Context, msgs []*Message) {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
		m.redelivered = true
	}
	vals, err := c.rdb.HMGet(ctx, c.attempts.key, ids...).Result()
	if classify(err) == errPermission {
		c.stopWith(permission("HMGET", c.attempts.key, err))
	}
	for i, m := range msgs {
		var r record
		if err == nil {
			if s, ok := vals[i].(string); ok {
				r, _ = parseRecord(s)
			}
		} else {
			r = record{started: 1}
		}
		m.Attempt, m.failed = r.started+1, r.failed
	}
	if err != nil {
		c.log.Warn("could not read the attempt records of entries delivered again; counting one attempt more for each",
			"entries", len(msgs), "err", err)
	}
	// Entries with a record must have it deleted with their ack.
	a := c.attempts
	a.mu.Lock()
	for _, m := range msgs {
		if m.Attempt > 1 && !a.recorded[m.ID] {
			a.recorded[m.ID] = true
			a.count.Add(1)
		}
	}
	a.mu.Unlock()
}

// deleteRecords removes the records of ids, when they have one, in pipe.
func (c *Consumer) deleteRecords(ctx context.Context, pipe redis.Pipeliner, ids []string) {
	if had := c.attempts.forget(ids); len(had) > 0 {
		pipe.HDel(ctx, c.attempts.key, had...)
	}
}
