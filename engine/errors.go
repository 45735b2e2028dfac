package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Every error a loop of the engine gets from Redis is sorted here, once,
// into what the loop must do about it. The loops (reader, claimer, lease,
// retrier, marker, acker) switch on the kind; none of them looks at an
// error's text.
type errKind int

const (
	errNone errKind = iota
	// errConn: the connection failed (refused, reset, timed out). What was
	// sent may or may not have been applied. Retry with backoff.
	errConn
	// errTransient: Redis answered "not now" (LOADING, BUSY, TRYAGAIN,
	// CLUSTERDOWN, MASTERDOWN, READONLY, NOREPLICAS). Retry with backoff.
	errTransient
	// errRedirect: MOVED or ASK, the slot is served elsewhere. The cluster
	// client follows these for its own commands; retry.
	errRedirect
	// errUnblocked: a blocked read was ended because its key was deleted
	// or replaced. Read again at once: the next reply says which.
	errUnblocked
	// errNoGroup: the group, or the stream with it, is gone. Create it
	// again where this consumer last saw it.
	errNoGroup
	// errWrongType: the key holds another type of value. For the stream
	// itself this stops the consumer; for an emit it fails the entry.
	errWrongType
	// errPermission: the ACL user may not run the command or touch the
	// key (NOPERM), or is not, or no longer, authenticated (NOAUTH,
	// WRONGPASS). Retrying cannot help: the consumer stops.
	errPermission
	// errExists: BUSYGROUP, the group to create exists already.
	errExists
	// errRefused: any other error reply (OOM, ERR ...). It fails this one
	// command, not the connection: an emit refused so fails its entry.
	errRefused
)

// classify says what err, returned by a command to Redis, means.
func classify(err error) errKind {
	if err == nil {
		return errNone
	}
	var re redis.Error
	if !errors.As(err, &re) {
		return errConn
	}
	msg := re.Error()
	word, _, _ := strings.Cut(msg, " ")
	switch word {
	case "NOGROUP":
		return errNoGroup
	case "BUSYGROUP":
		return errExists
	case "WRONGTYPE":
		return errWrongType
	case "NOPERM", "NOAUTH", "WRONGPASS":
		return errPermission
	case "MOVED", "ASK":
		return errRedirect
	case "UNBLOCKED":
		return errUnblocked
	case "LOADING", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "BUSY", "READONLY", "NOREPLICAS":
		return errTransient
	}
	return errRefused
}

// isServerError tells an error reply of Redis (WRONGTYPE, OOM, ...) from a
// failure to talk to it.
func isServerError(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

// isTimeout reports a connection error that is a timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// unsent reports whether a connection error means the command never left:
// the dial failed, or no connection was free.
func unsent(err error) bool {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return true
	}
	return errors.Is(err, redis.ErrPoolTimeout)
}

// permanent returns the error that stops the consumer when command, sent
// for key, failed with err: a permission refused, the stream's key holding
// another type, a MOVED that this client cannot follow. It returns nil when
// retrying may help.
func (c *Consumer) permanent(command, key string, err error) error {
	switch classify(err) {
	case errPermission:
		return permission(command, key, err)
	case errWrongType:
		if key == c.opts.Stream {
			return wrongType(context.Background(), c.rdb, key)
		}
	case errRedirect:
		return redirected(c.rdb, err)
	}
	return nil
}

// reroute tells a cluster client that its slot map may be out of date
// after err: a MOVED or ASK, CLUSTERDOWN, TRYAGAIN, READONLY (a master
// turned replica), or a failed connection (its node may be dead, and a
// replica promoted in its place: a dead node answers no MOVED). go-redis
// reloads the map for the errors of its own commands, but not for those of
// the raw read, and not for a node that does not answer. The reload runs
// in the background, at most once per 200 ms however often it is asked.
func (c *Consumer) reroute(err error) {
	cc, ok := c.rdb.(*redis.ClusterClient)
	if !ok {
		return
	}
	switch classify(err) {
	case errConn, errTransient, errRedirect:
		cc.ReloadState(context.Background())
	}
}

// followable reports whether err, the error reply to a raw read, must be
// handed to go-redis: the read is then sent again through go-redis's own
// command path, which acts on it. A MOVED or ASK on a cluster client is
// followed at once (with ASKING for an ASK). A READONLY means the
// connection is to a primary turned replica: go-redis closes a connection
// that answers READONLY, so that the next one is dialed where the
// sentinels (or the slot map) point now, but it never sees the replies of
// the raw read, and without this a pool of such connections would be
// reused for ever after a failover that happened while none was in use.
func (c *Consumer) followable(err error) bool {
	switch classify(err) {
	case errRedirect:
		_, ok := c.rdb.(*redis.ClusterClient)
		return ok
	case errTransient:
		return isReadOnly(err)
	}
	return false
}

// isReadOnly reports a READONLY reply: a write sent to a replica.
func isReadOnly(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(re.Error(), "READONLY")
}

// retryable reports whether a loop should try err's command again later.
func retryable(k errKind) bool {
	return k == errConn || k == errTransient || k == errRedirect || k == errUnblocked
}

// ErrClusterNode means a client for a lone Redis server was given one node
// of a Redis Cluster: the node answers MOVED for the keys of other nodes,
// and such a client cannot follow it.
var ErrClusterNode = errors.New("this is one node of a Redis Cluster (it answered MOVED: the key is served by another node); use a redis+cluster:// URL")

// redirected is the error of a MOVED or ASK that rdb cannot follow, or nil
// when it is a cluster client (which follows them; retry).
func redirected(rdb redis.UniversalClient, err error) error {
	if _, ok := rdb.(*redis.ClusterClient); ok {
		return nil
	}
	return fmt.Errorf("%w (%s)", ErrClusterNode, err)
}

// PermissionError means Redis refused a command for the ACL user topix
// connects as, or no longer accepts its password. Retrying cannot help, so
// the consumer stops with it; Run returns it.
type PermissionError struct {
	Command string // e.g. "XREADGROUP"
	Key     string // the key the command was for
	Err     error  // Redis's reply
}

func (e *PermissionError) Error() string {
	msg := e.Err.Error()
	switch word, _, _ := strings.Cut(msg, " "); word {
	case "NOAUTH", "WRONGPASS":
		return fmt.Sprintf("Redis no longer accepts topix's credentials (%s, while running %s): was the password changed? Put the new one in the Redis URL and start again",
			msg, e.Command)
	}
	return fmt.Sprintf("Redis refused %s on key %q: %s; the ACL user needs %s (the README lists what each command needs)",
		e.Command, e.Key, msg, e.needed())
}

func (e *PermissionError) Unwrap() error { return e.Err }

// quotedCommand finds the command named in a NOPERM reply: Redis 7.0 says
// "no permissions to run the 'xgroup|create' command".
var quotedCommand = regexp.MustCompile(`'([a-zA-Z|_-]+)' command`)

// needed names the ACL rule that would let the command through.
func (e *PermissionError) needed() string {
	msg := e.Err.Error()
	switch {
	case strings.Contains(msg, "command"):
		cmd := strings.ToLower(e.Command)
		if m := quotedCommand.FindStringSubmatch(msg); m != nil {
			cmd = m[1]
		}
		return "+" + cmd
	case strings.Contains(msg, "key"):
		return fmt.Sprintf("access to the key (e.g. ~%s)", e.Key)
	case strings.Contains(msg, "channel"):
		return "access to the channel"
	}
	return fmt.Sprintf("+%s and ~%s", strings.ToLower(e.Command), e.Key)
}

// permission wraps err, which classify took for errPermission, with the
// command and key it came from.
func permission(command, key string, err error) error {
	var pe *PermissionError
	if errors.As(err, &pe) {
		return err
	}
	return &PermissionError{Command: command, Key: key, Err: err}
}
