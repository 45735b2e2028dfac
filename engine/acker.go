package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/topix-dev/topix"
)

// ack is a processed entry on its way to XACK, with the entries its call
// emitted.
type ack struct {
	id string
	// emits are the entries still to add: after a flush that failed
	// part-way, only those Redis did not confirm, so that a retry does not
	// add one twice.
	emits []Emit
	dead  bool // the only emit is the entry's dead letter
	why   DeadReason
	msg   *Message // the entry, for its retry or dead letter if an emit fails; nil without emits
}

// size is the bytes the emits of a still to send.
func (a *ack) size() int64 {
	var n int64
	for _, e := range a.emits {
		n += int64(len(e.Stream))
		for _, f := range e.Fields {
			n += int64(len(f.Name) + len(f.Value))
		}
	}
	return n
}

const (
	maxAckBatch   = 1024                   // bounds one pipeline, in entries
	maxFlushBytes = 1 << 20                // bounds one pipeline, in bytes of emits
	ackEnough     = 128                    // a batch this big is flushed at once
	ackLinger     = 500 * time.Microsecond // how long a smaller batch waits for more
	ackFlushers   = 3                      // batches in flight at once
)

// ackLoop batches acks: it takes what the workers have finished and waits
// up to ackLinger for more while the batch is small, then flushes it in
// one pipeline. A busy consumer sends one XACK per hundreds of entries
// instead of one per handful, which is most of Redis's work; the wait
// delays only the ack, never a call.
func (c *Consumer) ackLoop(hard context.Context, acks <-chan []ack) {
	// Batches are flushed by a few goroutines, so one batch's round trips
	// (two when it has emits) overlap the next batch's.
	flushes := make(chan []ack)
	var flushers sync.WaitGroup
	for range ackFlushers {
		flushers.Go(func() {
			for batch := range flushes {
				c.flush(hard, batch)
			}
		})
	}
	defer func() {
		close(flushes)
		flushers.Wait()
	}()

	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for first := range acks {
		batch := make([]ack, 0, ackEnough)
		batch = append(batch, first...)
		linger.Reset(ackLinger)
	collect:
		for len(batch) < maxAckBatch {
			select {
			case more, ok := <-acks:
				if !ok {
					break collect
				}
				batch = append(batch, more...)
				continue
			default:
			}
			if len(batch) >= ackEnough {
				break
			}
			select {
			case more, ok := <-acks:
				if !ok {
					break collect
				}
				batch = append(batch, more...)
			case <-linger.C:
				break collect
			}
		}
		linger.Stop()
		flushes <- batch
	}
}

// flush adds the emits of batch and acks its entries, in pipelines of at
// most maxFlushBytes of emits (an entry with more goes alone), each given
// the time its size needs; see flushPart.
func (c *Consumer) flush(hard context.Context, batch []ack) {
	for len(batch) > 0 {
		n, bytes := 0, int64(0)
		for n < len(batch) {
			s := batch[n].size()
			if n > 0 && bytes+s > maxFlushBytes {
				break
			}
			bytes += s
			n++
		}
		c.flushPart(hard, batch[:n], bytes)
		batch = batch[n:]
	}
}

// flushPart sends one part, retrying while Redis fails until hard is done;
// then it makes one last try. Entries it cannot ack stay pending: they are
// delivered again, never lost. A retry sends only what is not known to be
// applied: an emit whose XADD was answered is not added again.
func (c *Consumer) flushPart(hard context.Context, batch []ack, bytes int64) {
	timeout := flushTimeout(bytes)
	rdb := c.rdb
	if bytes >= slowFlushBytes {
		rdb = c.forSize(timeout)
	}
	for n := 0; len(batch) > 0; n++ {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		ctx, cancelOp := c.opCtx(ctx)
		sent := time.Now()
		left, err := c.flushOnce(ctx, rdb, batch)
		cancelOp()
		cancel()
		batch = left
		kind := classify(err)
		switch {
		case kind == errNone:
			c.redis.ok(sent)
			continue // what is left are dead letters of entries whose emits failed
		case kind == errNoGroup:
			// The group is gone and its pending list with it: the reader
			// creates it again. These entries were processed.
			c.log.Warn("the consumer group vanished before these entries were acked", "entries", len(left))
			c.forget(left)
			return
		case c.permanent("XACK", c.opts.Stream, err) != nil:
			c.forget(left)
			c.stopWith(c.permanent("XACK", c.opts.Stream, err))
			return
		case !retryable(kind):
			c.log.Error("Redis refused to ack entries; they stay pending and are delivered again", "entries", len(left), "err", err)
			c.forget(left)
			return
		}
		if timedOut := errors.Is(err, context.DeadlineExceeded) || isTimeout(err); timedOut && bytes >= slowFlushBytes {
			// Most likely a slow link, not Redis gone: say so, not "Redis failed".
			c.log.Warn("a flush got no answer in the time its size allows (a slow link?); sending again what Redis did not confirm",
				"entries", len(batch), "emit_bytes", bytes, "timeout", timeout.Round(time.Millisecond).String(), "err", err)
		} else if kind == errRedirect {
			// A slot moved under the per-node pipelines of --wait-replicas:
			// not an outage; the XADDs it refused are sent again.
			c.reroute(err)
		} else {
			c.redis.fail("acking", err, sent)
		}
		if hard.Err() != nil && n > 0 {
			c.log.Warn("gave up acking; these entries stay pending and will be delivered again",
				"entries", len(batch), "err", err)
			c.forget(batch)
			return
		}
		c.backoff(hard, n)
	}
}

// Timeouts of a flush: long enough for its bytes over a slow link, so that
// a big flush is not cut short and sent again for ever.
const (
	flushBaseTimeout = 10 * time.Second
	minLinkRate      = 256 << 10 // bytes per second a link is assumed to carry at least
)

// slowFlushBytes is the size from which a flush that timed out is taken
// for a slow link rather than for Redis gone.
const slowFlushBytes = 256 << 10

func flushTimeout(bytes int64) time.Duration {
	return flushBaseTimeout + time.Duration(bytes)*time.Second/minLinkRate
}

// forSize returns the client to send a big flush with: rdb itself, or,
// when rdb's read or write timeout is shorter than timeout, a clone of it
// with that timeout on the same connections (a clone per flush: small
// flushes, which the usual timeouts fit, use rdb). A cluster client has no
// such clone; there the flush's byte bound keeps it within the timeouts.
func (c *Consumer) forSize(timeout time.Duration) redis.UniversalClient {
	cl, ok := c.rdb.(*redis.Client)
	if !ok {
		return c.rdb
	}
	o := cl.Options()
	short := func(d time.Duration) bool { return d > 0 && d < timeout }
	if !short(o.WriteTimeout) && !short(o.ReadTimeout) {
		return c.rdb
	}
	return cl.WithTimeout(timeout)
}

// flushOnce sends one part and returns what is left to do, with the error
// that left it; with a nil error, what is left are new dead letters.
//
// Entries without emits (or whose emits are all in) are acked in the
// first pipeline, alongside the XADDs of the others. An entry with emits
// is acked only after every one of its XADDs succeeded, in a second round
// trip: in a pipeline, an XADD that fails (say, WRONGTYPE) does not stop
// the XACK after it, and acking then would lose the emit.
//
// An emit that Redis refuses (WRONGTYPE, OOM, NOPERM on its key, ...)
// fails its entry, as a failed call does: it is retried after its backoff,
// and dead-lettered with Redis's error after its last attempt.
func (c *Consumer) flushOnce(ctx context.Context, rdb redis.UniversalClient, batch []ack) (left []ack, err error) {
	if c.opts.ExactlyOnce {
		return c.flushAtomic(ctx, rdb, batch)
	}
	plain := make([]string, 0, len(batch))
	var withEmits []int // indexes in batch
	nargs, nemits := 0, 0
	for i := range batch {
		a := &batch[i]
		if len(a.emits) == 0 {
			plain = append(plain, a.id)
			continue
		}
		for _, e := range a.emits {
			nargs += 6 + 2*len(e.Fields)
		}
		nemits += len(a.emits)
		withEmits = append(withEmits, i)
	}
	// One array holds the arguments of all the XADDs, one their commands.
	args := make([]any, 0, nargs)
	cmds := make([]*redis.Cmd, nemits)
	pipe := rdb.Pipeline()
	var nodes *nodePipes // on a Cluster with WaitReplicas: the XADDs, by node
	if cc, ok := rdb.(*redis.ClusterClient); ok && c.opts.WaitReplicas > 0 && nemits > 0 {
		nodes = &nodePipes{cc: cc, pipes: map[*redis.Client]redis.Pipeliner{}, master: map[string]*redis.Client{}}
	}
	adds := make([][]*redis.Cmd, len(withEmits)) // adds[k][j]: emits[j] of batch[withEmits[k]]; nil when they are invalid
	var again, dead []ack
	emitted, emitsFailed := 0, 0
	defer func() {
		if emitted > 0 {
			c.obs.Emitted(emitted)
		}
		if emitsFailed > 0 {
			c.obs.EmitsFailed(emitsFailed)
		}
	}()
	for k, i := range withEmits {
		a := &batch[i]
		// All of an entry's emits are checked before any is sent: a runtime
		// hands only valid ones, and one that can never succeed must not
		// leave its siblings added while the entry is retried.
		if invalid := invalidEmit(a.emits); invalid != nil {
			emitsFailed++
			if d, ok := c.emitFailed(a, invalid); ok {
				dead = append(dead, d)
			}
			withEmits[k] = -1
			continue
		}
		adds[k], cmds = cmds[:len(a.emits):len(a.emits)], cmds[len(a.emits):]
		for j := range a.emits {
			var cmd *redis.Cmd
			cmd, args = xadd(ctx, &a.emits[j], args)
			adds[k][j] = cmd
			if nodes != nil {
				nodes.add(ctx, a.emits[j].Stream, cmd)
			} else {
				_ = pipe.Process(ctx, cmd)
			}
		}
	}
	var waits []*redis.IntCmd
	if c.opts.WaitReplicas > 0 && nemits > 0 {
		// After the XADDs, on the same connection (a pipeline holds one):
		// WAIT counts the replicas that have every write sent on it.
		if nodes != nil {
			waits = nodes.wait(ctx, c.opts.WaitReplicas, c.opts.WaitTimeout)
		} else {
			waits = append(waits, waitCmd(ctx, c.opts.WaitReplicas, c.opts.WaitTimeout))
			_ = pipe.Process(ctx, waits[0])
		}
	}
	var plainAck *redis.IntCmd
	if len(plain) > 0 {
		plainAck = c.xack(ctx, plain)
		_ = pipe.Process(ctx, plainAck)
		c.deleteRecords(ctx, pipe, plain)
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(ctx)
	}
	if nodes != nil {
		nodes.exec(ctx)
	}

	var failure error // the first error that leaves work for a retry
	fail := func(err error) {
		if failure == nil {
			failure = err
		}
	}
	if plainAck != nil {
		if err := plainAck.Err(); err != nil {
			fail(err)
			for _, id := range plain {
				again = append(again, ack{id: id})
			}
		} else {
			c.acked.Add(int64(len(plain)))
			c.obs.Acked(len(plain))
			c.inflight.remove(plain...)
		}
	}
	ready := make([]string, 0, len(withEmits))
	var readyDead [numDeadReasons]int64 // by reason
	resent := 0
	for k, i := range withEmits {
		if i < 0 {
			continue
		}
		a := batch[i]
		var refused error
		var unconfirmed []Emit // those to send again, when the connection failed
		for j, cmd := range adds[k] {
			err := cmd.Err()
			switch kind := classify(err); {
			case kind == errNone:
				if !a.dead {
					emitted++
				}
			case retryable(kind):
				unconfirmed = append(unconfirmed, a.emits[j])
				fail(err)
				if kind == errConn && !unsent(err) {
					resent++ // Redis may have added it before the connection failed
				}
			case refused == nil:
				if !a.dead {
					emitsFailed++
				}
				refused = fmt.Errorf("emit to stream %q failed: %w", a.emits[j].Stream, err)
				if kind == errPermission {
					refused = permission("XADD", a.emits[j].Stream, err)
				}
			}
		}
		switch {
		case refused != nil:
			if d, ok := c.emitFailed(&a, refused); ok {
				dead = append(dead, d)
			}
		case unconfirmed != nil:
			a.emits = unconfirmed
			again = append(again, a)
		default:
			ready = append(ready, a.id)
			if a.dead {
				readyDead[a.why]++
			}
		}
	}
	if waits != nil && failure == nil && len(ready) > 0 {
		if reason, short := c.replicasShort(fewestReplicas(waits)); short {
			// Their emits are on the primary only: acking them now would
			// let a failover lose the emits of entries no longer pending.
			// They stay pending, and are processed again after claim_idle.
			c.log.Warn("emits not confirmed by the replicas (--wait-replicas); their entries are not acked: they stay pending and are processed again, and their emits may then be added twice",
				"entries", len(ready), "why", reason)
			c.unreplicated.Add(int64(len(ready)))
			for _, id := range ready {
				c.inflight.remove(id)
			}
			ready = ready[:0]
			readyDead = [numDeadReasons]int64{}
		}
	}
	if resent > 0 {
		c.resent.Add(int64(resent))
		c.log.Warn("the connection failed during a flush; sending again the emits it did not confirm: Redis may have added some already, and they would then appear twice",
			"emits", resent, "err", failure)
	}
	if len(ready) > 0 {
		if failure != nil {
			// The connection is failing: ack these with the rest at the next
			// try; their emits are in.
			for _, id := range ready {
				again = append(again, ack{id: id})
			}
		} else {
			ackReady := c.xack(ctx, ready)
			if had := c.attempts.forget(ready); len(had) > 0 {
				pipe := rdb.Pipeline()
				_ = pipe.Process(ctx, ackReady)
				pipe.HDel(ctx, c.attempts.key, had...)
				_, _ = pipe.Exec(ctx)
			} else {
				_ = rdb.Process(ctx, ackReady)
			}
			if err := ackReady.Err(); err != nil {
				fail(err)
				for _, id := range ready {
					again = append(again, ack{id: id}) // its emits are in; only the ack is missing
				}
			} else {
				for r, n := range readyDead {
					if n > 0 {
						c.dead.Add(n)
						c.obs.DeadLettered(DeadReason(r), int(n))
					}
				}
				c.acked.Add(int64(len(ready)))
				c.obs.Acked(len(ready))
				c.inflight.remove(ready...)
			}
		}
	}
	return append(again, dead...), failure
}

// invalidEmit returns why one of emits can never be added, or nil. All of
// an entry's emits are checked before any is sent.
func invalidEmit(emits []Emit) error {
	for _, e := range emits {
		if err := topix.CheckEntry(e.Stream, e.Fields, e.MaxLen); err != nil {
			return fmt.Errorf("invalid emit: %w", err)
		}
	}
	return nil
}

// replicasShort says whether a flush's WAIT (n replicas, or err) fell
// short of WaitReplicas, and how.
func (c *Consumer) replicasShort(n int64, err error) (reason string, short bool) {
	switch {
	case err != nil:
		return "WAIT failed: " + err.Error(), true
	case n < int64(c.opts.WaitReplicas):
		return fmt.Sprintf("%d of %d replicas confirmed them within %s", n, c.opts.WaitReplicas, c.opts.WaitTimeout), true
	}
	return "", false
}

func waitCmd(ctx context.Context, replicas int, timeout time.Duration) *redis.IntCmd {
	return redis.NewIntCmd(ctx, "WAIT", replicas, timeout.Milliseconds())
}

// fewestReplicas returns the lowest count of replicas the WAITs report:
// how many have every write of the flush.
func fewestReplicas(waits []*redis.IntCmd) (int64, error) {
	fewest := int64(-1)
	for _, w := range waits {
		n, err := w.Result()
		if err != nil {
			return 0, err
		}
		if fewest < 0 || n < fewest {
			fewest = n
		}
	}
	return fewest, nil
}

// nodePipes sends the XADDs of a flush on a Cluster with WaitReplicas to
// their streams' masters directly, a pipeline per master, each ended by a
// WAIT: WAIT counts the writes of its own connection, and go-redis's
// cluster pipeline, which splits commands over the nodes, has no place for
// one per node. A MOVED reply (the slot moved meanwhile) fails its XADD,
// which is not applied, and the flush sends it again after the slot map is
// reloaded.
type nodePipes struct {
	cc     *redis.ClusterClient
	pipes  map[*redis.Client]redis.Pipeliner
	master map[string]*redis.Client // stream -> its master, for this flush
	order  []redis.Pipeliner
}

func (n *nodePipes) add(ctx context.Context, stream string, cmd redis.Cmder) {
	node, ok := n.master[stream]
	if !ok {
		var err error
		if node, err = n.cc.MasterForKey(ctx, stream); err != nil {
			cmd.SetErr(err)
			return
		}
		n.master[stream] = node
	}
	p := n.pipes[node]
	if p == nil {
		p = node.Pipeline()
		n.pipes[node] = p
		n.order = append(n.order, p)
	}
	_ = p.Process(ctx, cmd)
}

// wait ends each node's pipeline with a WAIT and returns them.
func (n *nodePipes) wait(ctx context.Context, replicas int, timeout time.Duration) []*redis.IntCmd {
	waits := make([]*redis.IntCmd, 0, len(n.order))
	for _, p := range n.order {
		w := waitCmd(ctx, replicas, timeout)
		_ = p.Process(ctx, w)
		waits = append(waits, w)
	}
	return waits
}

// exec sends the nodes' pipelines at once, and returns when all are done.
func (n *nodePipes) exec(ctx context.Context) {
	var wg sync.WaitGroup
	for _, p := range n.order {
		wg.Go(func() { _, _ = p.Exec(ctx) })
	}
	wg.Wait()
}

// emitFailed fails the entry of a, whose emit Redis refused, as if its
// call had failed with err: it is retried after its backoff, or, after its
// last attempt, dead-lettered with err (the dead letter is returned, to be
// flushed). A dead letter that Redis refuses is tried again later; a
// refusal for the ACL stops the consumer.
func (c *Consumer) emitFailed(a *ack, err error) (ack, bool) {
	msg := a.msg
	if a.dead {
		var pe *PermissionError
		if errors.As(err, &pe) {
			c.inflight.remove(a.id)
			c.stopWith(err)
			return ack{}, false
		}
		wait := c.retryDelay(msg.Attempt)
		c.log.Error("could not add the entry to the dead-letter stream; it stays pending and is tried again",
			"id", a.id, "dead_letter", c.opts.DeadLetter, "err", err, "retry_in", wait.String())
		c.retries.add(retry{id: a.id, attempt: msg.Attempt, failed: msg.failed, due: time.Now().Add(wait), deadReason: msg.deadReason, deadWhy: msg.deadWhy})
		return ack{}, false
	}
	c.processed.Add(-1)
	return c.failCall(context.Background(), msg, err)
}

// The words of XADD and XACK, boxed once. The other arguments point at the
// strings of the entry and its emits (go-redis writes a *string as the
// string) instead of copying each into an interface: one allocation per
// command, not one per field name and value.
var (
	argXADD   any = "XADD"
	argMAXLEN any = "MAXLEN"
	argApprox any = "~"
	argAutoID any = "*"
	argXACK   any = "XACK"
)

// xadd makes the XADD of one emit, with its arguments appended to args,
// and returns it and args; e must not change until it was sent.
func xadd(ctx context.Context, e *Emit, args []any) (*redis.Cmd, []any) {
	start := len(args)
	args = append(args, argXADD, &e.Stream)
	if e.MaxLen > 0 {
		args = append(args, argMAXLEN, argApprox, &e.MaxLen)
	}
	args = append(args, argAutoID)
	for i := range e.Fields {
		args = append(args, &e.Fields[i].Name, &e.Fields[i].Value)
	}
	return redis.NewCmd(ctx, args[start:len(args):len(args)]...), args
}

// xack makes the XACK of ids; ids must not change until it was sent.
func (c *Consumer) xack(ctx context.Context, ids []string) *redis.IntCmd {
	args := make([]any, 0, 3+len(ids))
	args = append(args, argXACK, &c.opts.Stream, &c.opts.Group)
	for i := range ids {
		args = append(args, &ids[i])
	}
	return redis.NewIntCmd(ctx, args...)
}

// forget drops acks that could not be sent from the entries this consumer
// holds: they stay pending in Redis, where the claimer finds them again.
func (c *Consumer) forget(batch []ack) {
	for _, a := range batch {
		c.inflight.remove(a.id)
	}
}
