package engine

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// retryDelay is the wait after a failed attempt: RetryBackoff, doubling
// with each attempt, capped at MaxRetryBackoff (or RetryBackoff if more).
func (c *Consumer) retryDelay(attempt int64) time.Duration {
	limit := max(MaxRetryBackoff, c.opts.RetryBackoff)
	d := c.opts.RetryBackoff
	for i := int64(1); i < attempt && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// retryQueue holds failed entries until their next attempt is due. The
// entries stay in this consumer's pending list meanwhile.
type retryQueue struct {
	mu    sync.Mutex
	items retryHeap
	wake  chan struct{}
}

type retry struct {
	id      string
	attempt int64 // the attempt that failed
	failed  int64 // the attempts known to have failed, that one included
	due     time.Time

	// deadReason, when set, is why the entry is dead-lettered: its dead
	// letter was refused, and only that is tried again, without a call.
	deadReason string
	deadWhy    DeadReason
}

func (q *retryQueue) add(r retry) {
	q.mu.Lock()
	heap.Push(&q.items, r)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// due pops the retries due at now, and tells when the next one is.
func (q *retryQueue) due(now time.Time) (ready []retry, next time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) > 0 && !q.items[0].due.After(now) {
		ready = append(ready, heap.Pop(&q.items).(retry))
	}
	next = time.Hour
	if len(q.items) > 0 {
		next = q.items[0].due.Sub(now)
	}
	return ready, next
}

func (q *retryQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

type retryHeap []retry

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h retryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *retryHeap) Push(x any)        { *h = append(*h, x.(retry)) }
func (h *retryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// retryLoop delivers failed entries again when their backoff is over: it
// claims each again to this consumer (XCLAIM), which raises its delivery
// count, and hands it to the workers. At stop, the entries still waiting
// stay pending.
func (c *Consumer) retryLoop(stop, hard context.Context) {
	ctx := context.WithoutCancel(stop)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		ready, next := c.retries.due(time.Now())
		if len(ready) > 0 {
			if !c.redeliverBounded(ctx, hard, ready) {
				return
			}
			continue
		}
		t.Reset(next)
		select {
		case <-stop.Done():
			if n := c.retries.len(); n > 0 {
				c.log.Info("stopping with entries waiting for a retry; they stay pending", "entries", n)
			}
			return
		case <-c.retries.wake:
		case <-t.C:
		}
	}
}

func (c *Consumer) redeliverBounded(ctx, hard context.Context, ready []retry) bool {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	return c.redeliver(ctx, hard, ready)
}

// redeliver claims due retries and hands them to the workers. It returns
// false if hard ended the hand-over.
//
// The claim is XCLAIM ... FORCE: an entry that left the pending list while
// it waited (its consumer was removed from the group, or the group was
// created again) is put back in it, so an entry whose data exists is never
// dropped. Only an entry whose data is gone is not returned.
func (c *Consumer) redeliver(ctx, hard context.Context, ready []retry) bool {
	args := []any{"XCLAIM", c.opts.Stream, c.opts.Group, c.opts.Consumer, 0}
	attempts := make(map[string]retry, len(ready))
	for _, r := range ready {
		args = append(args, r.id)
		attempts[r.id] = r
	}
	args = append(args, "FORCE")
	sent := time.Now()
	reply, err := c.rdb.Do(ctx, args...).Slice()
	var msgs []*Message
	if err == nil {
		if msgs, err = c.parseEntries(reply, 0); err != nil {
			c.log.Error("unexpected XCLAIM reply", "err", err)
		}
	}
	if err != nil {
		switch classify(err) {
		case errPermission:
			c.stopWith(permission("XCLAIM", c.opts.Stream, err))
			return false
		case errNoGroup:
			c.recreateGroup(ctx)
		default:
			c.redis.fail("claiming entries for a retry", err, sent)
		}
		for _, r := range ready {
			r.due = time.Now().Add(c.retryDelay(1))
			c.retries.add(r)
		}
		return true
	}
	for _, m := range msgs {
		r := attempts[m.ID]
		m.Attempt, m.failed = r.attempt+1, r.failed
		if r.deadReason != "" {
			m.Attempt, m.deadReason, m.deadWhy = r.attempt, r.deadReason, r.deadWhy
		}
		delete(attempts, m.ID)
	}
	c.inflight.addAll(msgs)
	for id := range attempts { // not returned: its data is gone
		c.inflight.remove(id)
		c.attempts.forget([]string{id})
		c.obs.Gone(1)
		c.log.Warn("an entry waiting for a retry was deleted or trimmed from the stream; nothing is left to process", "id", id)
	}
	return c.deliver(ctx, hard, msgs, FromRetry)
}
