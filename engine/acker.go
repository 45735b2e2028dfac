package engine

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/topix-dev/topix"
)

// ack is a processed entry on its way to XACK, with the entries its call
// emitted.
type ack struct {
	id    string
	emits []Emit
	dead  bool // the only emit is the entry's dead letter
}

const (
	maxAckBatch = 1024                   // bounds one pipeline
	ackEnough   = 128                    // a batch this big is flushed at once
	ackLinger   = 500 * time.Microsecond // how long a smaller batch waits for more
	ackFlushers = 3                      // batches in flight at once
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

// flush adds the emits of batch and acks its entries, retrying while Redis
// fails until hard is done; then it makes one last try. Entries it cannot
// ack stay pending: they are delivered again, never lost.
func (c *Consumer) flush(hard context.Context, batch []ack) {
	for n := 0; ; n++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		sent := time.Now()
		left, err := c.flushOnce(ctx, batch)
		cancel()
		if err == nil {
			c.redis.ok(sent)
			return
		}
		if isNoGroup(err) {
			// The group is gone and its pending list with it: the reader
			// creates it again, and these entries come back from there.
			c.log.Warn("the consumer group vanished before these entries were acked", "entries", len(left))
			c.forget(left)
			return
		}
		batch = left
		c.redis.fail("acking", err, sent)
		if hard.Err() != nil && n > 0 {
			c.log.Warn("gave up acking; these entries stay pending and will be delivered again",
				"entries", len(batch), "err", err)
			c.forget(batch)
			return
		}
		backoff(hard, n)
	}
}

// flushOnce sends one batch and returns the acks still to do.
//
// Entries without emits are acked in the first pipeline, alongside the
// XADDs of the others. An entry with emits is acked only after every one of
// its XADDs succeeded, in a second round trip: in a pipeline, an XADD that
// fails (say, WRONGTYPE) does not stop the XACK after it, and acking then
// would lose the emit.
func (c *Consumer) flushOnce(ctx context.Context, batch []ack) (left []ack, err error) {
	plain := make([]string, 0, len(batch))
	var withEmits []ack
	for _, a := range batch {
		if len(a.emits) == 0 {
			plain = append(plain, a.id)
		} else {
			withEmits = append(withEmits, a)
		}
	}
	// One array holds the arguments of all the XADDs, one the commands.
	nargs, nemits := 0, 0
	for _, a := range withEmits {
		for _, e := range a.emits {
			nargs += 6 + 2*len(e.Fields)
			nemits++
		}
	}
	args := make([]any, 0, nargs)
	cmds := make([]*redis.Cmd, 0, nemits)
	pipe := c.rdb.Pipeline()
	adds := make([][]*redis.Cmd, len(withEmits))
	for i, a := range withEmits {
		// All of an entry's emits are checked before any is sent: a runtime
		// hands only valid ones, and one that can never succeed must not
		// leave its siblings added while the entry stays pending.
		var invalid error
		for _, e := range a.emits {
			if invalid = topix.CheckEntry(e.Stream, e.Fields, e.MaxLen); invalid != nil {
				break
			}
		}
		if invalid != nil {
			c.log.Error("invalid emit; the entry stays pending", "id", a.id, "err", invalid)
			c.inflight.remove(a.id)
			continue
		}
		start := len(cmds)
		for j := range a.emits {
			var cmd *redis.Cmd
			cmd, args = xadd(ctx, &a.emits[j], args)
			cmds = append(cmds, cmd)
			_ = pipe.Process(ctx, cmd)
		}
		adds[i] = cmds[start:len(cmds):len(cmds)]
	}
	var plainAck *redis.IntCmd
	if len(plain) > 0 {
		plainAck = c.xack(ctx, plain)
		_ = pipe.Process(ctx, plainAck)
		c.deleteRecords(ctx, pipe, plain)
	}
	sent, _ := pipe.Exec(ctx)
	for _, cmd := range sent {
		if err := cmd.Err(); err != nil && (!isServerError(err) || isTransient(err)) {
			// The connection failed: what was applied is unknown, so all of
			// it is sent again (a re-sent XADD makes a duplicate emit, which
			// at-least-once allows; a re-sent XACK is harmless).
			return batch, err
		}
	}
	if plainAck != nil {
		if err := plainAck.Err(); err != nil {
			return batch, err
		}
		c.acked.Add(int64(len(plain)))
		c.inflight.remove(plain...)
	}

	ready := make([]string, 0, len(withEmits))
	for i, a := range withEmits {
		ok := adds[i] != nil // nil: an invalid emit, nothing sent
		for j, cmd := range adds[i] {
			if err := cmd.Err(); err != nil {
				ok = false
				c.log.Error("emit failed; the entry stays pending", "id", a.id, "stream", a.emits[j].Stream, "err", err)
			}
		}
		if ok {
			ready = append(ready, a.id)
			if a.dead {
				c.dead.Add(1)
			}
		} else if adds[i] != nil {
			c.inflight.remove(a.id)
		}
	}
	if len(ready) == 0 {
		return nil, nil
	}
	ackReady := c.xack(ctx, ready)
	if had := c.attempts.forget(ready); len(had) > 0 {
		pipe := c.rdb.Pipeline()
		_ = pipe.Process(ctx, ackReady)
		pipe.HDel(ctx, c.attempts.key, had...)
		_, _ = pipe.Exec(ctx)
	} else {
		_ = c.rdb.Process(ctx, ackReady)
	}
	if err := ackReady.Err(); err != nil {
		left = make([]ack, 0, len(ready))
		for _, id := range ready {
			left = append(left, ack{id: id}) // its emits are in; only the ack is missing
		}
		return left, err
	}
	c.acked.Add(int64(len(ready)))
	c.inflight.remove(ready...)
	return nil, nil
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

// isServerError tells an error reply of Redis (WRONGTYPE, OOM, ...) from a
// failure to talk to it.
func isServerError(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

// isTransient tells the error replies that mean "try again" (a server
// loading its data, a cluster resharding or failing over) from the ones
// that mean "this will never work".
func isTransient(err error) bool {
	msg := err.Error()
	for _, p := range []string{"LOADING", "TRYAGAIN", "CLUSTERDOWN", "UNBLOCKED", "MASTERDOWN", "BUSY ", "READONLY", "MOVED", "ASK "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// forget drops acks that could not be sent from the entries this consumer
// holds: they stay pending in Redis, where the claimer finds them again.
func (c *Consumer) forget(batch []ack) {
	for _, a := range batch {
		c.inflight.remove(a.id)
	}
}
