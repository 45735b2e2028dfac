package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"
)

// ErrWrongType means the stream's key holds another type of value.
var ErrWrongType = errors.New("not a stream")

// CreateGroup creates group on stream, and the stream itself when it does
// not exist (MKSTREAM). start is where a new group begins: "0" for the
// whole stream, "$" for entries added from now on, or an entry id. A group
// that already exists is left as it is.
func CreateGroup(ctx context.Context, rdb redis.UniversalClient, stream, group, start string) (created bool, err error) {
	err = rdb.XGroupCreateMkStream(ctx, stream, group, start).Err()
	switch classify(err) {
	case errNone:
		return true, nil
	case errExists:
		return false, nil
	case errWrongType:
		return false, wrongType(ctx, rdb, stream)
	case errPermission:
		return false, permission("XGROUP CREATE", stream, err)
	}
	return false, fmt.Errorf("create consumer group %q on stream %q: %w", group, stream, err)
}

// wrongType is the error of a stream key that holds something else.
func wrongType(ctx context.Context, rdb redis.UniversalClient, stream string) error {
	kind, err := rdb.Type(ctx, stream).Result()
	if err != nil {
		kind = "value of another type"
	}
	return fmt.Errorf("key %q is a %s, %w: pick another stream name, or delete the key", stream, kind, ErrWrongType)
}

// ensureGroup checks that the group exists, and creates it at Start only
// when it does not: a user whose ACL lacks XGROUP CREATE can still consume
// a group made for it. It learns where the group is, for recreateGroup.
func (c *Consumer) ensureGroup(ctx context.Context) error {
	err := c.rdb.Do(ctx, "XPENDING", c.opts.Stream, c.opts.Group).Err()
	switch classify(err) {
	case errNone:
		c.learnPosition(ctx)
		return nil
	case errNoGroup:
		created, err := CreateGroup(ctx, c.rdb, c.opts.Stream, c.opts.Group, c.opts.Start)
		if err != nil {
			return err
		}
		if created {
			c.log.Info("created consumer group", "start", c.opts.Start)
		}
		c.learnPosition(ctx)
		return nil
	}
	if perm := c.permanent("XPENDING", c.opts.Stream, err); perm != nil {
		return perm
	}
	return fmt.Errorf("check consumer group %q on stream %q: %w", c.opts.Group, c.opts.Stream, err)
}

// position is the newest entry id this consumer knows the group to have
// delivered: the group's last-delivered id when the consumer started, and
// the newest it read or claimed since. A group created again after it
// vanished starts there, so that no entry added since is skipped.
type position struct {
	mu  sync.Mutex
	id  string
	why string
}

func (p *position) see(id, why string) {
	if id == "" {
		return
	}
	p.mu.Lock()
	if p.id == "" || compareIDs(id, p.id) > 0 {
		p.id, p.why = id, why
	}
	p.mu.Unlock()
}

func (p *position) get() (id, why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.id, p.why
}

// learnPosition reads the group's last-delivered id (XINFO GROUPS). It is
// optional: without the permission, a group created again before this
// consumer read anything starts at the stream's first entry.
func (c *Consumer) learnPosition(ctx context.Context) {
	groups, err := c.rdb.XInfoGroups(ctx, c.opts.Stream).Result()
	if err != nil {
		c.log.Debug("could not read the group's last-delivered id", "err", err)
		return
	}
	for _, g := range groups {
		if g.Name == c.opts.Group && g.LastDeliveredID != "0-0" {
			c.seen.see(g.LastDeliveredID, "the group's last-delivered entry when this consumer started")
		}
	}
}

// recreateGroup brings back a group that vanished (a Redis restart without
// persistence, FLUSHALL, XGROUP DESTROY, the stream deleted) where this
// consumer last saw it: entries added after that are all delivered, none
// skipped. Without a known position it starts at the stream's first entry:
// entries may be processed again, none is lost.
func (c *Consumer) recreateGroup(ctx context.Context) {
	start, why := c.seen.get()
	if start == "" {
		start, why = "0", "this consumer knew no position of the group, so it starts at the first entry: entries may be processed again, none is skipped"
	}
	created, err := CreateGroup(ctx, c.rdb, c.opts.Stream, c.opts.Group, start)
	switch {
	case err != nil:
		var pe *PermissionError
		if errors.As(err, &pe) {
			c.stopWith(err)
			return
		}
		c.log.Error("the consumer group is gone and could not be created again", "err", err)
	case created:
		c.obs.GroupRecreated()
		c.log.Warn("the consumer group was gone (destroyed, or the stream deleted or Redis emptied); created it again",
			"start", start, "why", why)
	}
}

// deleteConsumerIfIdle removes consumer from the group unless it still owns
// pending entries: XGROUP DELCONSUMER would drop those from the group's
// pending list, and with them the promise that they are delivered again.
func deleteConsumerIfIdle(ctx context.Context, rdb redis.UniversalClient, stream, group, consumer string) (pending int64, err error) {
	p, err := rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: stream, Group: group, Consumer: consumer, Start: "-", End: "+", Count: 1,
	}).Result()
	if err != nil {
		return 0, fmt.Errorf("check pending entries of consumer %q: %w", consumer, err)
	}
	if len(p) > 0 {
		sum, err := rdb.XPending(ctx, stream, group).Result()
		if err != nil {
			return 1, nil
		}
		return sum.Consumers[consumer], nil
	}
	if err := rdb.XGroupDelConsumer(ctx, stream, group, consumer).Err(); err != nil {
		return 0, fmt.Errorf("delete consumer %q: %w", consumer, err)
	}
	rdb.Del(ctx, aliveKey(stream, group, consumer))
	return 0, nil
}
