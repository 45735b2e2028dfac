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
// The script takes a whole flush. For each entry, before anything of it
// is written, it checks every stream the entry emits to, once per stream
// and flush: that the ACL user may XADD to it, that it is a stream or no
// key, and that it has ids left ("*" fails on a stream whose last id is
// the largest there is). An emit that would fail leaves its entry pending
// with nothing added, and fails its call as a refused emit does without
// the flag. Then XACK of the entry: 0 (someone acked it already) adds
// nothing; 1 adds its emits, which the checks leave nothing to fail on.
// The XACK goes first because it answers the question and does the work
// in one command; what could still stop the script part-way (a check that
// itself fails, such as a key of a slot being migrated away) happens
// before the XACK of its entry, and leaves the entries before it complete
// and the others untouched, to be flushed again. Redis runs a script
// whole (it refuses one under maxmemory before it starts, and does not
// kill one that wrote), and replicates and persists its effects as one
// transaction.
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
// It answers one value per entry: 1 (acked, its emits added), 0 (not
// pending: acked already; nothing added), or "WRONGTYPE key", "NOPERM
// key" or "FULL key" (an emit that would fail; nothing done).
const exactlyOnceScript = `#!lua
local stream, group = KEYS[1], ARGV[1]
local nkeys = tonumber(ARGV[2])
local checked, names = {}, {}
local function check(k)
  local c = checked[k]
  if c == nil then
    local key = ARGV[2 + tonumber(k)]
    names[k] = key
    c = true
    if not redis.acl_check_cmd('XADD', key, '*', 'f', 'v') then
      c = 'NOPERM ' .. key
    elseif redis.acl_check_cmd('TYPE', key) then
      local t = redis.call('TYPE', key)['ok']
      if t ~= 'stream' and t ~= 'none' then
        c = 'WRONGTYPE ' .. key
      elseif t == 'stream' and redis.acl_check_cmd('XINFO', 'STREAM', key) then
        local info = redis.call('XINFO', 'STREAM', key)
        for f = 1, #info, 2 do
          if info[f] == 'last-generated-id' and info[f + 1] == '18446744073709551615-18446744073709551615' then
            c = 'FULL ' .. key
          end
        end
      end
    end
    checked[k] = c
  end
  return c
end
local out = {}
local i = 4 + nkeys
for n = 1, tonumber(ARGV[3 + nkeys]) do
  local id, ne = ARGV[i], tonumber(ARGV[i + 1])
  local first, j, bad = i + 2, i + 2, nil
  for e = 1, ne do
    local ok = checked[ARGV[j]]
    if ok == nil then ok = check(ARGV[j]) end
    if ok ~= true and bad == nil then bad = ok end
    j = j + 3 + 2 * tonumber(ARGV[j + 2])
  end
  if bad then
    out[n] = bad
  elseif redis.call('XACK', stream, group, id) == 0 then
    out[n] = 0
  else
    local k = first
    for e = 1, ne do
      local key, maxlen, f = names[ARGV[k]], ARGV[k + 1], k + 3
      local last = f + 2 * tonumber(ARGV[k + 2]) - 1
      if maxlen == '0' then
        redis.call('XADD', key, '*', unpack(ARGV, f, last))
      else
        redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', unpack(ARGV, f, last))
      end
      k = last + 1
    end
    out[n] = 1
  end
  i = j
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
	switch {
	case err == nil:
	case classify(err) == errPermission:
		return permission("INFO", c.opts.Stream, err)
	case !isServerError(err):
		return err
	}
	v, ok := infoField(info, "redis_version")
	if !ok {
		return fmt.Errorf("%w: it needs Redis 7.0 or later, which runs its server-side script (redis.acl_check_cmd, script flags); this server does not say it is Redis (topix dev's embedded server cannot run it: use a redis-server)", ErrExactlyOnce)
	}
	major, _, _ := strings.Cut(v, ".")
	if n, _ := strconv.Atoi(major); n < 7 {
		return fmt.Errorf("%w: it needs Redis 7.0 or later, which runs its server-side script (redis.acl_check_cmd, script flags); this one is %s", ErrExactlyOnce, v)
	}
	// Loaded now (on every master of a Cluster), so that the first flush
	// finds it.
	if err := c.rdb.ScriptLoad(ctx, exactlyOnceScript).Err(); err != nil {
		if classify(err) == errPermission {
			return permission("SCRIPT", c.opts.Stream, err)
		}
		return fmt.Errorf("%w: Redis refused its script: %w", ErrExactlyOnce, err)
	}
	return nil
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
		if invalid := invalidEmit(a.emits); invalid != nil {
			c.obs.EmitsFailed(1)
			if d, ok := c.emitFailed(a, invalid); ok {
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
	if eval != nil && redis.HasErrorPrefix(eval.Err(), "NOSCRIPT") {
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
				var refused error
				switch kind {
				case "NOPERM":
					refused = permission("XADD", key, errors.New("NOPERM this user has no permissions to access the key"))
				case "FULL":
					refused = fmt.Errorf("emit to stream %q failed: its last id is the largest there is, no entry can be added (XADD * would fail)", key)
				default:
					refused = fmt.Errorf("emit to stream %q failed: %s: Redis holds another type of key there", key, kind)
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
			if reason, short := c.replicasShort(wait.Result()); short {
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
