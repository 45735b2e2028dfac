package engine

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/topix-dev/topix/internal/redistest"
)

// A pooled connection to a primary that turned replica answers the raw
// read READONLY. go-redis drops such connections, but never sees the raw
// read's replies: the read must hand the READONLY to it, so that the next
// connection is dialed where the dialer points now (as Sentinel's does).
// Before, the same stale connection answered READONLY to every read.
func TestARawReadDropsAConnectionToAReplica(t *testing.T) {
	a, b := redistest.Must(t), redistest.Must(t)
	ctx := context.Background()
	ac, bc := a.Client(), b.Client()
	defer ac.Close()
	defer bc.Close()
	if err := ac.XGroupCreateMkStream(ctx, "ro", "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := ac.XAdd(ctx, &redis.XAddArgs{Stream: "ro", Values: []string{"n", "1"}}).Err(); err != nil {
		t.Fatal(err)
	}
	var target atomic.Value
	target.Store(a.Addr)
	rdb := redis.NewClient(&redis.Options{PoolSize: 1, Dialer: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, target.Load().(string))
	}})
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil { // the one connection, to a, idle in the pool
		t.Fatal(err)
	}
	// b takes a's data and becomes the primary; a its replica.
	host, port, _ := strings.Cut(a.Addr, ":")
	if err := bc.Do(ctx, "REPLICAOF", host, port).Err(); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 10*time.Second, "b in sync", func() bool {
		info, _ := bc.Info(ctx, "replication").Result()
		return strings.Contains(info, "master_link_status:up")
	})
	if err := bc.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	host, port, _ = strings.Cut(b.Addr, ":")
	if err := ac.Do(ctx, "REPLICAOF", host, port).Err(); err != nil {
		t.Fatal(err)
	}
	target.Store(b.Addr)

	c, err := New(rdb, nil, Options{Stream: "ro", Group: "g", Consumer: "c"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	var msgs []*Message
	for range 3 {
		if msgs, err = c.readGroup(ctx, ">", 10, &buf); err == nil {
			break
		}
	}
	if err != nil || len(msgs) != 1 {
		t.Fatalf("reads after the failover: %d entries, %v; want the entry, from the new primary", len(msgs), err)
	}
}
