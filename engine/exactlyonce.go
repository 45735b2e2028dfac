package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix"
)

// Exactly-once emits (Options.ExactlyOnce): the emits of an entry and its
// ack are applied by one server-side script, atomically, and only while
// the entry is still pending in the group. Whichever consumer flushes an
// entry first adds its emits; any later flush of the same entry (after a
// crash between the calls of two consumers, a reclaim, a lease that
// lapsed in a slow call, a flush sent again because its answer was lost)
// finds it acked, adds nothing, and counts it as a duplicate suppressed.
//
// The script takes a whole flush. For each entry, before anything is
// written, it checks every stream the entry emits to (its type, and the
// ACL user's right to XADD to it): an emit that would fail leaves the
// entry pending, with nothing added, and fails its call as a refused emit
// does without the flag. Then, if the entry is pending, its XADDs; at the
// end one XACK of the entries whose emits went in. A failure in the middle
// (which the checks leave only to an unforeseen error) stops the script
// with the entries not yet acked: they are flushed again, and may then
// emit twice, but nothing is lost. Redis replicates and persists a
// script's effects as one transaction.
//
//	KEYS[1]     the consumed stream
//	ARGV[1]     the group
//	ARGV[2]     K, the number of streams the flush emits to; ARGV[3..2+K]
//	            their names
//	ARGV[3+K]   the number of entries; then, for each: its id, its number
//	            of emits, and for each emit: the index of its stream among
//	            the K, its MAXLEN (0: none), its number of fields, its
//	            fields' names and values
//
// The streams emitted to are not KEYS: Redis checks the ACL of every key
// of an EVALSHA before running it, and one stream the user may not write
// would fail the flush of every entry; the script checks them one by one
// instead. (On a Cluster they share the stream's slot: checkEmits.)
//
// It answers one value per entry: 1 (emitted and acked), 0 (not pending:
// acked already; nothing added), or "WRONGTYPE key" / "NOPERM key" (an
// emit that would fail; nothing done).
const exactlyOnceScript = `#!lua
local stream, group = KEYS[1], ARGV[1]
local nkeys = tonumber(ARGV[2])
local checked = {}
local function check(k)
  local c = checked[k]
  if c == nil then
    local key = ARGV[2 + k]
    c = true
    if not redis.acl_check_cmd('XADD', key, '*', 'f', 'v') then
      c = 'NOPERM ' .. key
    elseif redis.acl_check_cmd('TYPE', key) then
      local t = redis.call('TYPE', key)['ok']
      if t ~= 'stream' and t ~= 'none' then c = 'WRONGTYPE ' .. key end
    end
    checked[k] = c
  end
  return c
end
local out, acks, seen = {}, {}, {}
local i = 4 + nkeys
for n = 1, tonumber(ARGV[3 + nkeys]) do
  local id, ne = ARGV[i], tonumber(ARGV[i + 1])
  local first, j, bad = i + 2, i + 2, nil
  for e = 1, ne do
    local ok = check(tonumber(ARGV[j]))
    if ok ~= true and bad == nil then bad = ok end
    j = j + 3 + 2 * tonumber(ARGV[j + 2])
  end
  if seen[id] or #redis.call('XPENDING', stream, group, id, id, 1) == 0 then
    out[n] = 0
  elseif bad then
    out[n] = bad
  else
    local k = first
    for e = 1, ne do
      local key, maxlen, nf = ARGV[2 + tonumber(ARGV[k])], ARGV[k + 1], tonumber(ARGV[k + 2])
      local args
      if maxlen == '0' then
        args = {'XADD', key, '*'}
      else
        args = {'XADD', key, 'MAXLEN', '~', maxlen, '*'}
      end
      for f = k + 3, k + 2 + 2 * nf do args[#args + 1] = ARGV[f] end
      redis.call(unpack(args))
      k = k + 3 + 2 * nf
    end
    seen[id] = true
    acks[#acks + 1] = id
    out[n] = 1
  end
  i = j
end
for a = 1, #acks, 1000 do
  redis.call('XACK', stream, group, unpack(acks, a, math.min(a + 999, #acks)))
end
return out
`

// ErrExactlyOnce is wrapped by the errors that refuse ExactlyOnce before
// the first read: a server that cannot run its script, a dead-letter
// stream on another Cluster slot.
var ErrExactlyOnce = errors.New("--exactly-once cannot run here")

// MaxExactlyOnceFields bounds the fields of one emit with ExactlyOnce: the
// script passes an XADD's arguments through Lua's unpack, which takes at
// most 8,000 values.
const MaxExactlyOnceFields = 3990

// exactlyOnceLua holds the script's SHA1, which EVALSHA names it by.
var exactlyOnceLua = redis.NewScript(exactlyOnceScript)

// checkExactlyOnce is run by Run before the first read: the server must
// run the script (Redis 7.0 or later; topix dev's embedded server cannot),
// and it is loaded, so that the first flush finds it.
func (c *Consumer) checkExactlyOnce(ctx context.Context) error {
	info, err := c.rdb.Info(ctx, "server").Result()
	if err != nil && !isServerError(err) {
		return err
	}
	v, ok := infoField(info, "redis_version")
	if !ok {
		return fmt.Errorf("%w: it needs Redis 7.0 or later, which runs its server-side script (redis.acl_check_cmd, script flags); this server does not say it is Redis (topix dev's embedded server cannot run it: use a redis-server)", ErrExactlyOnce)
	}
	if major, _, _ := strings.Cut(v, "."); atoi(major) < 7 {
		return fmt.Errorf("%w: it needs Redis 7.0 or later, which runs its server-side script (redis.acl_check_cmd, script flags); this one is %s", ErrExactlyOnce, v)
	}
	if err := c.loadExactlyOnce(ctx); err != nil {
		if classify(err) == errPermission {
			return permission("SCRIPT", c.opts.Stream, err)
		}
		return fmt.Errorf("%w: Redis refused its script: %w", ErrExactlyOnce, err)
	}
	return nil
}

// loadExactlyOnce loads the script (on every master of a Cluster).
func (c *Consumer) loadExactlyOnce(ctx context.Context) error {
	return c.rdb.ScriptLoad(ctx, exactlyOnceScript).Err()
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func infoField(info, name string) (string, bool) {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v, true
		}
	}
	return "", false
}

// exactlyOnceDeadLetter is the default dead-letter stream with
// ExactlyOnce on a Cluster: the script adds dead letters too, so the
// stream must share the consumed stream's slot; "{orders}:dead" does.
func exactlyOnceDeadLetter(stream string) string { return slotPrefix(stream) + ":dead" }

// checkSlots refuses, at New, a dead-letter stream the script could not
// reach on a Cluster.
func checkSlots(o *Options) error {
	if s, d := topix.Slot(o.Stream), topix.Slot(o.DeadLetter); s != d {
		return fmt.Errorf("%w on a Redis Cluster: the dead-letter stream %q is on slot %d and the stream %q on slot %d; one server-side script touches one slot only. Give a dead-letter stream with the stream's hash tag (--dead-letter %q), or leave --dead-letter out",
			ErrExactlyOnce, o.DeadLetter, d, o.Stream, s, exactlyOnceDeadLetter(o.Stream))
	}
	return nil
}

// checkEmits refuses, at the call, what the script cannot add: on a
// Cluster an emit to another slot than the consumed stream's, anywhere an
// emit with more fields than Lua passes on.
func (c *Consumer) checkEmits(emits []Emit) error {
	for _, e := range emits {
		if len(e.Fields) > MaxExactlyOnceFields {
			return fmt.Errorf("emit to %q: %d fields; with --exactly-once an emit holds at most %d", e.Stream, len(e.Fields), MaxExactlyOnceFields)
		}
		if c.slot >= 0 && topix.Slot(e.Stream) != c.slot {
			return fmt.Errorf("emit to %q: with --exactly-once on a Redis Cluster, a call can emit only to streams on the slot of %q (one server-side script adds the emits and acks the entry); give the stream its hash tag, as %q",
				e.Stream, c.opts.Stream, slotPrefix(c.opts.Stream)+":"+strings.Trim(e.Stream, "{}"))
		}
	}
	return nil
}

// flushAtomic is flushOnce with ExactlyOnce: the entries with emits (dead
// letters included) go through the script, the others are acked as
// usual; both in one pipeline. What it returns is flushOnce's.
func (c *Consumer) flushAtomic(ctx context.Context, rdb redis.UniversalClient, batch []ack) (left []ack, err error) {
	if cc, ok := rdb.(*redis.ClusterClient); ok && c.opts.WaitReplicas > 0 {
		// WAIT counts the writes of its own connection: send everything to
		// the stream's master, which holds every key of the flush. A slot
		// that moved meanwhile answers MOVED, and the flush is sent again
		// once the slot map is reloaded.
		node, err := cc.MasterForKey(ctx, c.opts.Stream)
		if err != nil {
			return batch, err
		}
		rdb = node
	}
	plain := make([]string, 0, len(batch))
	var scripted []int // indexes in batch
	var dead []ack
	var streams []string // emitted to
	index := map[string]int{}
	nargs := 0
	for i := range batch {
		a := &batch[i]
		if len(a.emits) == 0 {
			plain = append(plain, a.id)
			continue
		}
		var invalid error
		for _, e := range a.emits {
			if invalid = topix.CheckEntry(e.Stream, e.Fields, e.MaxLen); invalid != nil {
				break
			}
		}
		if invalid != nil {
			c.obs.EmitsFailed(1)
			if d, ok := c.emitFailed(a, fmt.Errorf("invalid emit: %w", invalid)); ok {
				dead = append(dead, d)
			}
			continue
		}
		scripted = append(scripted, i)
		nargs += 2
		for _, e := range a.emits {
			if _, ok := index[e.Stream]; !ok {
				streams = append(streams, e.Stream)
				index[e.Stream] = len(streams)
			}
			nargs += 3 + 2*len(e.Fields)
		}
	}

	var args []any // EVALSHA's
	if len(scripted) > 0 {
		args = make([]any, 0, 7+len(streams)+nargs)
		args = append(args, "EVALSHA", exactlyOnceLua.Hash(), 1, &c.opts.Stream, &c.opts.Group, len(streams))
		for i := range streams {
			args = append(args, &streams[i])
		}
		args = append(args, len(scripted))
		for _, i := range scripted {
			a := &batch[i]
			args = append(args, &a.id, len(a.emits))
			for j := range a.emits {
				e := &a.emits[j]
				args = append(args, index[e.Stream], e.MaxLen, len(e.Fields))
				for f := range e.Fields {
					args = append(args, &e.Fields[f].Name, &e.Fields[f].Value)
				}
			}
		}
	}
	// send sends the script (and the plain acks, the first time) in one
	// pipeline, ended by WAIT with WaitReplicas.
	var plainAck *redis.IntCmd
	send := func(withPlain bool) (eval *redis.Cmd, wait *redis.IntCmd) {
		pipe := rdb.Pipeline()
		if args != nil {
			eval = redis.NewCmd(ctx, args...)
			_ = pipe.Process(ctx, eval)
			if c.opts.WaitReplicas > 0 {
				wait = waitCmd(ctx, c.opts.WaitReplicas, c.opts.WaitTimeout)
				_ = pipe.Process(ctx, wait)
			}
		}
		if withPlain && len(plain) > 0 {
			plainAck = c.xack(ctx, plain)
			_ = pipe.Process(ctx, plainAck)
			c.deleteRecords(ctx, pipe, plain)
		}
		if pipe.Len() > 0 {
			_, _ = pipe.Exec(ctx)
		}
		return eval, wait
	}
	eval, wait := send(true)
	if eval != nil && isNoScript(eval.Err()) {
		// Redis restarted, failed over, or its script cache was flushed:
		// nothing of the script ran. EVAL it, which caches it again.
		args[0], args[1] = "EVAL", exactlyOnceScript
		eval, wait = send(false)
	}

	var failure error
	var again []ack
	suppressed := 0
	if plainAck != nil {
		if err := plainAck.Err(); err != nil {
			failure = err
			for _, id := range plain {
				again = append(again, ack{id: id})
			}
		} else {
			// An entry XACK did not remove was acked already: by another
			// consumer, or by this one's earlier try whose answer was lost.
			suppressed += len(plain) - int(plainAck.Val())
			c.acked.Add(int64(len(plain)))
			c.obs.Acked(len(plain))
			c.inflight.remove(plain...)
		}
	}
	if eval != nil {
		results, err := eval.Slice()
		if err == nil && len(results) != len(scripted) {
			err = fmt.Errorf("the exactly-once script answered %d values for %d entries", len(results), len(scripted))
		}
		if err != nil {
			if classify(err) == errPermission {
				err = permission("EVALSHA", c.opts.Stream, err)
			}
			if failure == nil {
				failure = err
			}
			for _, i := range scripted {
				again = append(again, batch[i])
			}
			return append(again, dead...), failure
		}
		var done []string
		var readyDead [numDeadReasons]int64
		emitted := 0
		for k, i := range scripted {
			a := batch[i]
			switch r := results[k].(type) {
			case int64:
				done = append(done, a.id)
				if r == 0 {
					suppressed++
					continue
				}
				if a.dead {
					readyDead[a.why]++
				} else {
					emitted += len(a.emits)
				}
			case string:
				kind, key, _ := strings.Cut(r, " ")
				var refused error = fmt.Errorf("emit to stream %q failed: %s: Redis holds another type of key there", key, kind)
				if kind == "NOPERM" {
					refused = permission("XADD", key, errors.New("NOPERM this user has no permissions to access the key"))
				}
				if !a.dead {
					c.obs.EmitsFailed(1)
				}
				if d, ok := c.emitFailed(&a, refused); ok {
					dead = append(dead, d)
				}
			default:
				failure = fmt.Errorf("the exactly-once script answered %v (%T) for an entry", r, r)
				again = append(again, a)
			}
		}
		if emitted > 0 {
			c.obs.Emitted(emitted)
		}
		for r, n := range readyDead {
			if n > 0 {
				c.dead.Add(n)
				c.obs.DeadLettered(DeadReason(r), int(n))
			}
		}
		if len(done) > 0 {
			c.acked.Add(int64(len(done)))
			c.obs.Acked(len(done))
			c.inflight.remove(done...)
			if had := c.attempts.forget(done); len(had) > 0 {
				_ = rdb.HDel(ctx, c.attempts.key, had...).Err() // a leftover record is dropped at the next ack of its id, or expires
			}
		}
		if wait != nil {
			if n, err := wait.Result(); err != nil || n < int64(c.opts.WaitReplicas) {
				reason := fmt.Sprintf("%d of %d replicas confirmed them within %s", n, c.opts.WaitReplicas, c.opts.WaitTimeout)
				if err != nil {
					reason = "WAIT failed: " + err.Error()
				}
				// The script's effects are one transaction: a failover that
				// loses them loses the acks with the emits, and the entries
				// are delivered again, and emitted once.
				c.log.Warn("acks and emits not confirmed by the replicas (--wait-replicas); a failover now would undo both, and the entries would be processed again",
					"entries", len(done), "why", reason)
			}
		}
	}
	if suppressed > 0 {
		c.suppressed.Add(int64(suppressed))
		c.obs.Suppressed(suppressed)
		c.log.Info("entries acked already, by another consumer or an earlier try of this flush: their emits were not added again (--exactly-once)",
			"entries", suppressed)
	}
	return append(again, dead...), failure
}

func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}
