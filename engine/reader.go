package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// readers is how many XREADGROUP calls a consumer keeps in flight, whatever
// its number of workers. Redis serves what arrived during one pass of its
// event loop, flushes included, and answers at the end of the pass: with
// more reads outstanding, a pass serves more entries, and while one reply
// is parsed and handed on, the others are being served. (Measured on two
// cores shared with Redis: four reads in flight drain 8% faster than one at
// one worker and 10% faster than two at two workers; eight are no better.)
const readers = 4

// read feeds entries until stop is cancelled: first the entries this
// consumer already owns (delivered before, never acked: XREADGROUP from id
// 0), then new ones (id >), with readers reads in flight. A read
// in progress when stop comes is let finish, and what it returns is handed
// on, so no entry is delivered to this consumer without being seen; BLOCK
// is finite, so this is prompt. hard cuts the hand-over short when the
// shutdown times out.
func (c *Consumer) read(stop, hard context.Context) {
	// Reads are not cancelled mid-flight: an XREADGROUP that Redis answered
	// has moved its entries to our pending list, and they must be seen.
	ctx := context.WithoutCancel(stop)

	if !c.readLoop(ctx, stop, hard, "0") {
		return
	}
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() { c.readLoop(ctx, stop, hard, ">") })
	}
	wg.Wait()
}

// readLoop reads until stop. From "0" it pages through this consumer's own
// pending entries and returns true when they are done; from ">" it reads
// new entries until stop. It returns false when the hand-over ended.
func (c *Consumer) readLoop(ctx, stop, hard context.Context, from string) bool {
	cursor := from
	var buf bytes.Buffer
	// The first read takes one entry: until their size is known, a batch
	// of entries of 50 MB each is as likely as one of 100 bytes.
	count := 1
	for n := 0; stop.Err() == nil; {
		if !c.budget.wait(stop) {
			return false
		}
		sent := time.Now()
		rctx, cancel := c.opCtx(ctx)
		msgs, err := c.readGroup(rctx, cursor, count, &buf)
		cancel()
		c.advanced()
		if err != nil {
			if perm := c.permanent("XREADGROUP", c.opts.Stream, err); perm != nil {
				c.stopWith(perm)
				return false
			}
			switch classify(err) {
			case errNoGroup:
				c.noGroup.Store(true)
				c.recreateGroup(ctx)
			case errUnblocked:
				// The key was deleted or replaced while the read waited, not
				// an outage: the next read says which.
			default:
				c.redis.fail("reading the stream", err, sent)
			}
			if !c.backoff(stop, n) {
				return false
			}
			n++
			continue
		}
		n = 0
		c.redis.ok(sent)
		if c.noGroup.Load() {
			c.noGroup.Store(false)
		}
		count = c.nextCount(count, msgs)
		// From here the entries are this consumer's: lease them at once,
		// even while they wait for a worker.
		c.inflight.addAll(msgs)
		if len(msgs) == 0 {
			if cursor != ">" {
				return true // own pending entries done
			}
			continue
		}
		c.seen.see(msgs[len(msgs)-1].ID, "the newest entry this consumer read")
		if cursor != ">" {
			cursor = msgs[len(msgs)-1].ID
			c.loadRecords(ctx, msgs)
		}
		src := FromNew
		if cursor != ">" {
			src = FromOwn
		}
		if !c.deliver(ctx, hard, msgs, src) {
			return false
		}
	}
	return false
}

// deliver hands entries, already recorded as held by this consumer, to the
// workers, in chunks that spread a batch over them. An entry whose data is
// gone is acked away instead. It returns false if hard ended the
// hand-over; the entries not handed over stay pending.
func (c *Consumer) deliver(ctx, hard context.Context, msgs []*Message, src Source) bool {
	live := msgs[:0:0]
	var held int64
	for _, m := range msgs {
		if m.Fields == nil {
			c.ackDeleted(ctx, m.ID)
		} else {
			live = append(live, m)
			held += m.size
		}
	}
	c.budget.take(held)
	if len(live) > 0 {
		c.obs.Received(src, len(live))
	}
	size := max(1, (len(live)+2*c.opts.Concurrency-1)/(2*c.opts.Concurrency))
	for start := 0; start < len(live); start += size {
		select {
		case c.entries <- live[start:min(start+size, len(live))]:
		case <-hard.Done():
			c.forgetAll(live[start:])
			c.budget.release(sizeOf(live[start:]))
			return false
		}
	}
	return true
}

// readGroup runs one XREADGROUP and decodes its raw reply (see resp.go),
// which go-redis writes into buf.
func (c *Consumer) readGroup(ctx context.Context, id string, count int, buf *bytes.Buffer) ([]*Message, error) {
	args := []any{"XREADGROUP", "GROUP", c.opts.Group, c.opts.Consumer, "COUNT", count}
	if id == ">" {
		args = append(args, "BLOCK", c.opts.Block.Milliseconds())
	}
	args = append(args, "STREAMS", c.opts.Stream, id)
	buf.Reset()
	cmd := redis.NewRawWriteToCmd(ctx, buf, args...)
	if err := c.rdb.Process(ctx, cmd); err != nil {
		return nil, err
	}
	// A new entry's first attempt; entries read again get theirs from
	// their records (loadRecords).
	msgs, err := c.parseReadReply(buf.Bytes(), 1) // copies what it keeps
	if buf.Cap() > maxKeptReply {
		// A batch of unusually large entries grew it: let it go rather than
		// hold that much for the consumer's lifetime.
		*buf = bytes.Buffer{}
	}
	if c.followable(err) {
		// The slot moved (MOVED), is moving (ASK), or the server is a
		// replica now (READONLY). Redis executed nothing: read again
		// through go-redis, which follows the redirect or drops the
		// connection, and have the slot map reloaded for the reads after
		// this one.
		c.reroute(err)
		return c.readRouted(ctx, args)
	}
	return msgs, err
}

// readRouted runs an XREADGROUP through go-redis's generic command, which
// a cluster client routes and redirects itself, and after which any
// client closes a connection that answered READONLY. It is slower than the
// raw read, and used only after a redirect or a READONLY: then it tries
// again while the answer is READONLY, each time on another pooled
// connection to the old primary, at most maxStale times, until one is
// dialed to the new one.
func (c *Consumer) readRouted(ctx context.Context, args []any) ([]*Message, error) {
	v, err := c.rdb.Do(ctx, args...).Result()
	for n := 0; isReadOnly(err) && n < maxStale; n++ {
		v, err = c.rdb.Do(ctx, args...).Result()
	}
	if errors.Is(err, redis.Nil) {
		return nil, nil // BLOCK timed out
	}
	if err != nil {
		return nil, err
	}
	var entries any
	switch r := v.(type) {
	case []any: // RESP2: [[stream, entries]]
		if len(r) == 0 {
			return nil, nil
		}
		pair, _ := r[0].([]any)
		if len(pair) != 2 {
			return nil, errBadReply
		}
		entries = pair[1]
	case map[any]any: // RESP3: {stream: entries}
		for _, e := range r {
			entries = e
		}
	default:
		return nil, errBadReply
	}
	list, ok := entries.([]any)
	if !ok {
		return nil, errBadReply
	}
	return c.parseEntries(list, 1)
}

// maxStale bounds the READONLY connections one read drops (readRouted):
// about a consumer's pool.
const maxStale = 32

// maxKeptReply is the largest read buffer a reader keeps between reads; a
// batch of 100 entries of 1 KB needs about a tenth of it.
const maxKeptReply = 1 << 20

// parseEntries decodes a list of [id, [field, value, ...]] entries.
func (c *Consumer) parseEntries(entries []any, attempt int64) ([]*Message, error) {
	msgs := make([]Message, len(entries))
	out := make([]*Message, len(entries))
	for i, e := range entries {
		m := &msgs[i]
		m.ID, m.Fields = ParseEntry(e)
		if m.ID == "" {
			return nil, fmt.Errorf("unexpected stream entry %v", e)
		}
		m.Stream, m.Group, m.Consumer, m.Attempt = c.opts.Stream, c.opts.Group, c.opts.Consumer, attempt
		m.size = int64(len(m.ID))
		for _, f := range m.Fields {
			m.size += int64(len(f.Name) + len(f.Value))
		}
		out[i] = m
	}
	return out, nil
}

// ackDeleted acks away a pending entry whose data is gone (XDEL or
// trimming): there is nothing left to process, and left alone it would stay
// pending for ever.
func (c *Consumer) ackDeleted(ctx context.Context, id string) {
	c.inflight.remove(id)
	c.attempts.forget([]string{id})
	if err := c.rdb.XAck(ctx, c.opts.Stream, c.opts.Group, id).Err(); err != nil {
		c.log.Warn("could not ack away a deleted entry", "id", id, "err", err)
		return
	}
	c.acked.Add(1)
	c.obs.Acked(1)
	c.obs.Gone(1)
	c.log.Warn("acked away a pending entry whose data was deleted or trimmed before it was processed", "id", id)
}

// forgetAll drops entries from those this consumer holds: they stay in its
// pending list in Redis, for its next start or another consumer.
func (c *Consumer) forgetAll(msgs []*Message) {
	for _, m := range msgs {
		c.inflight.remove(m.ID)
	}
}

// nextCount sizes the next read from the last one, which took count
// entries: twice as many, up to Batch, and no more than the byte budget
// holds at the size the entries had. An entry bigger than the budget is
// still read, alone.
func (c *Consumer) nextCount(count int, msgs []*Message) int {
	if len(msgs) == 0 {
		return count
	}
	size := sizeOf(msgs)
	avg := max(1, size/int64(len(msgs)))
	fits := max(1, c.opts.BatchBytes/avg)
	return int(min(int64(c.opts.Batch), int64(2*count), fits))
}

func sizeOf(msgs []*Message) int64 {
	var n int64
	for _, m := range msgs {
		n += m.size
	}
	return n
}

// byteBudget bounds the bytes of the entries a consumer holds in memory:
// read and handed on, not yet processed. A reader starts a read only while
// they are below the budget, so a backlog of big
// entries is drained with bounded memory. Workers give bytes back per
// chunk, not per entry.
type byteBudget struct {
	limit int64
	held  atomic.Int64
	wake  chan struct{}
}

func newByteBudget(limit int64) *byteBudget {
	return &byteBudget{limit: limit, wake: make(chan struct{}, 1)}
}

func (b *byteBudget) take(n int64) { b.held.Add(n) }

func (b *byteBudget) release(n int64) {
	if n != 0 && b.held.Add(-n) < b.limit {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
}

// wait returns when a read may start, or false when stop came first.
func (b *byteBudget) wait(stop context.Context) bool {
	for {
		if b.held.Load() < b.limit {
			return true
		}
		// A wake-up can be taken by another reader: look again now and
		// then in any case.
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-b.wake:
		case <-t.C:
		case <-stop.Done():
			t.Stop()
			return false
		}
		t.Stop()
	}
}
