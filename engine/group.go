package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"

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
	switch {
	case err == nil:
		return true, nil
	case strings.HasPrefix(err.Error(), "BUSYGROUP"):
		return false, nil
	case isWrongType(err):
		kind, _ := rdb.Type(ctx, stream).Result()
		return false, fmt.Errorf("key %q is a %s, %w: pick another stream name, or delete the key", stream, kind, ErrWrongType)
	}
	return false, fmt.Errorf("create consumer group %q on stream %q: %w", group, stream, err)
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
	return 0, nil
}

func isWrongType(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "WRONGTYPE") }

func isNoGroup(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOGROUP") }
