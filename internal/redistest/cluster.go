package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix"
)

// Cluster is a local Redis Cluster: redis-server processes on loopback
// ports, each with its own directory, stopped by process id.
type Cluster struct {
	// Nodes as started: the masters first, then the replicas, those of the
	// first master first. Roles change with failovers; Owner and Replica
	// ask the cluster.
	Nodes []*Server
}

// NodeTimeout is the cluster-node-timeout of the clusters started here: a
// master that does not answer for that long is failed over by its replica.
const NodeTimeout = time.Second

// StartCluster starts masters master nodes, each with replicas replicas,
// under dir, shares the 16384 slots evenly among the masters, and returns
// once every node says the cluster is ok and every replica is in sync.
// extra is passed to every node (e.g. "--appendonly", "yes").
func StartCluster(dir string, masters, replicas int, extra ...string) (*Cluster, error) {
	if masters < 1 {
		return nil, fmt.Errorf("a cluster needs a master")
	}
	c := &Cluster{}
	args := append([]string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", strconv.Itoa(int(NodeTimeout.Milliseconds()))}, extra...)
	for i := range masters * (1 + replicas) {
		d := filepath.Join(dir, fmt.Sprintf("node-%d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			c.Stop()
			return nil, err
		}
		s, err := Start(d, args...)
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.Nodes = append(c.Nodes, s)
	}
	if err := c.form(masters, replicas); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// MustCluster starts a cluster for one test and stops it when the test
// ends.
func MustCluster(tb testing.TB, masters, replicas int, extra ...string) *Cluster {
	tb.Helper()
	c, err := StartCluster(tb.TempDir(), masters, replicas, extra...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Stop)
	return c
}

func (c *Cluster) form(masters, replicas int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ids := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		cl := s.Client()
		id, err := cl.Do(ctx, "CLUSTER", "MYID").Text()
		if err == nil && i < masters {
			lo, hi := i*16384/masters, (i+1)*16384/masters-1
			err = cl.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err()
		}
		if err == nil && i > 0 {
			host, port, _ := net.SplitHostPort(c.Nodes[0].Addr)
			err = cl.Do(ctx, "CLUSTER", "MEET", host, port).Err()
		}
		cl.Close()
		if err != nil {
			return fmt.Errorf("forming the cluster, node %s: %w", s.Addr, err)
		}
		ids[i] = id
	}
	if err := waitEach(ctx, c.Nodes, "every node to know every other", func(cl *redis.Client) bool {
		nodes, err := cl.ClusterNodes(ctx).Result()
		return err == nil && strings.Count(nodes, "\n") >= len(c.Nodes) && !strings.Contains(nodes, "handshake")
	}); err != nil {
		return err
	}
	for r := masters; r < len(c.Nodes); r++ {
		master := (r - masters) / replicas
		cl := c.Nodes[r].Client()
		err := cl.Do(ctx, "CLUSTER", "REPLICATE", ids[master]).Err()
		cl.Close()
		if err != nil {
			return fmt.Errorf("making %s a replica: %w", c.Nodes[r].Addr, err)
		}
	}
	return waitEach(ctx, c.Nodes, "the cluster to be ok with its replicas in sync", func(cl *redis.Client) bool {
		info, err := cl.ClusterInfo(ctx).Result()
		if err != nil || !strings.Contains(info, "cluster_state:ok") {
			return false
		}
		repl, err := cl.Info(ctx, "replication").Result()
		if err != nil || strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return false
		}
		nodes, err := cl.ClusterNodes(ctx).Result()
		return err == nil && strings.Count(nodes, "slave ") == masters*replicas
	})
}

// waitEach polls ok on each server until it holds for all of them.
func waitEach(ctx context.Context, nodes []*Server, what string, ok func(*redis.Client) bool) error {
	for _, s := range nodes {
		cl := s.Client()
		for !ok(cl) {
			select {
			case <-ctx.Done():
				cl.Close()
				return fmt.Errorf("timed out waiting for %s (node %s)", what, s.Addr)
			case <-time.After(20 * time.Millisecond): // polling interval
			}
		}
		cl.Close()
	}
	return nil
}

// URL returns a redis+cluster:// URL naming every node.
func (c *Cluster) URL() string {
	scheme := "redis+cluster://"
	if c.Nodes[0].tls != nil {
		scheme = "rediss+cluster://"
	}
	u := scheme + c.Nodes[0].Addr
	for i, s := range c.Nodes[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + s.Addr
	}
	return u
}

// Client returns a cluster client for the cluster; the caller closes it.
func (c *Cluster) Client() *redis.ClusterClient {
	addrs := make([]string, len(c.Nodes))
	for i, s := range c.Nodes {
		addrs[i] = s.Addr
	}
	return redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, Protocol: 2, TLSConfig: c.Nodes[0].tls})
}

// Stop kills every node.
func (c *Cluster) Stop() {
	for _, s := range c.Nodes {
		s.Stop()
	}
}

// Node returns the server listening on addr, or nil.
func (c *Cluster) Node(addr string) *Server {
	for _, s := range c.Nodes {
		if s.Addr == addr {
			return s
		}
	}
	return nil
}

// Slot returns the hash slot of key.
func Slot(key string) int { return topix.Slot(key) }

// shards reads the cluster's view from the first live node: for each
// master, its address and its replicas' addresses, and the slot ranges it
// serves.
type shard struct {
	master   string
	replicas []string
	slots    [][2]int
}

func (c *Cluster) shards(ctx context.Context) ([]shard, error) {
	var lastErr error
	for _, s := range c.Nodes {
		cl := s.Client()
		nodes, err := cl.ClusterNodes(ctx).Result()
		cl.Close()
		if err != nil {
			lastErr = err
			continue
		}
		byID := map[string]*shard{}
		var order []string
		type rep struct{ addr, master string }
		var reps []rep
		for _, line := range strings.Split(strings.TrimSpace(nodes), "\n") {
			f := strings.Fields(line)
			if len(f) < 8 || strings.Contains(f[2], "fail") {
				continue
			}
			addr, _, _ := strings.Cut(f[1], "@")
			if strings.Contains(f[2], "master") {
				sh := &shard{master: addr}
				for _, r := range f[8:] {
					if strings.HasPrefix(r, "[") {
						continue // a slot being migrated
					}
					lo, hi, found := strings.Cut(r, "-")
					if !found {
						hi = lo
					}
					a, _ := strconv.Atoi(lo)
					b, _ := strconv.Atoi(hi)
					sh.slots = append(sh.slots, [2]int{a, b})
				}
				byID[f[0]] = sh
				order = append(order, f[0])
			} else {
				reps = append(reps, rep{addr, f[3]})
			}
		}
		for _, r := range reps {
			if sh := byID[r.master]; sh != nil {
				sh.replicas = append(sh.replicas, r.addr)
			}
		}
		out := make([]shard, 0, len(order))
		for _, id := range order {
			out = append(out, *byID[id])
		}
		return out, nil
	}
	return nil, fmt.Errorf("no node of the cluster answers: %w", lastErr)
}

// Owner returns the master that serves key's slot.
func (c *Cluster) Owner(ctx context.Context, key string) (*Server, error) {
	sh, err := c.shardOf(ctx, Slot(key))
	if err != nil {
		return nil, err
	}
	return c.Node(sh.master), nil
}

// Replica returns a replica of the master that serves key's slot.
func (c *Cluster) Replica(ctx context.Context, key string) (*Server, error) {
	sh, err := c.shardOf(ctx, Slot(key))
	if err != nil {
		return nil, err
	}
	if len(sh.replicas) == 0 {
		return nil, fmt.Errorf("the master of slot %d, %s, has no replica", Slot(key), sh.master)
	}
	return c.Node(sh.replicas[0]), nil
}

// Masters returns the masters, in the order of the slots they serve.
func (c *Cluster) Masters(ctx context.Context) ([]*Server, error) {
	shs, err := c.shards(ctx)
	if err != nil {
		return nil, err
	}
	var out []*Server
	for _, sh := range shs {
		if len(sh.slots) > 0 {
			out = append(out, c.Node(sh.master))
		}
	}
	return out, nil
}

// OtherMaster returns a master that does not serve key's slot: where to
// move it.
func (c *Cluster) OtherMaster(ctx context.Context, key string) (*Server, error) {
	owner, err := c.Owner(ctx, key)
	if err != nil {
		return nil, err
	}
	masters, err := c.Masters(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range masters {
		if m != owner {
			return m, nil
		}
	}
	return nil, fmt.Errorf("no master but %s", owner.Addr)
}

func (c *Cluster) shardOf(ctx context.Context, slot int) (shard, error) {
	shs, err := c.shards(ctx)
	if err != nil {
		return shard{}, err
	}
	for _, sh := range shs {
		for _, r := range sh.slots {
			if slot >= r[0] && slot <= r[1] {
				return sh, nil
			}
		}
	}
	return shard{}, fmt.Errorf("no master serves slot %d", slot)
}

// KeyOn returns a key with the given prefix whose slot is served by
// master.
func (c *Cluster) KeyOn(ctx context.Context, prefix string, master *Server) (string, error) {
	shs, err := c.shards(ctx)
	if err != nil {
		return "", err
	}
	for i := range 100000 {
		key := prefix + strconv.Itoa(i)
		slot := Slot(key)
		for _, sh := range shs {
			if sh.master != master.Addr {
				continue
			}
			for _, r := range sh.slots {
				if slot >= r[0] && slot <= r[1] {
					return key, nil
				}
			}
		}
	}
	return "", fmt.Errorf("no key %s<n> is served by %s", prefix, master.Addr)
}

// Migration moves one slot from its master to another, in the steps
// redis-cli --cluster reshard takes, so that a test can act in between:
// Begin marks the slot importing and migrating, MoveKeys moves its keys
// (from then until Finish, the source answers ASK for them), Finish gives
// the slot to the target on every master.
type Migration struct {
	Slot     int
	From, To *Server
	fromID   string
	toID     string
}

// Begin starts moving slot to the master to.
func (c *Cluster) Begin(ctx context.Context, slot int, to *Server) (*Migration, error) {
	sh, err := c.shardOf(ctx, slot)
	if err != nil {
		return nil, err
	}
	m := &Migration{Slot: slot, From: c.Node(sh.master), To: to}
	if m.From == to {
		return nil, fmt.Errorf("slot %d is on %s already", slot, to.Addr)
	}
	from, dst := m.From.Client(), to.Client()
	defer from.Close()
	defer dst.Close()
	if m.fromID, err = from.Do(ctx, "CLUSTER", "MYID").Text(); err != nil {
		return nil, err
	}
	if m.toID, err = dst.Do(ctx, "CLUSTER", "MYID").Text(); err != nil {
		return nil, err
	}
	if err := dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", m.fromID).Err(); err != nil {
		return nil, err
	}
	if err := from.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", m.toID).Err(); err != nil {
		return nil, err
	}
	return m, nil
}

// MoveKeys moves every key of the slot to the target, and returns how
// many it moved.
func (m *Migration) MoveKeys(ctx context.Context) (int, error) {
	from := m.From.Client()
	defer from.Close()
	host, port, _ := net.SplitHostPort(m.To.Addr)
	moved := 0
	for {
		keys, err := from.ClusterGetKeysInSlot(ctx, m.Slot, 100).Result()
		if err != nil {
			return moved, err
		}
		if len(keys) == 0 {
			return moved, nil
		}
		args := []any{"MIGRATE", host, port, "", 0, 10000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		if err := from.Do(ctx, args...).Err(); err != nil {
			return moved, fmt.Errorf("MIGRATE: %w", err)
		}
		moved += len(keys)
	}
}

// Finish gives the slot to the target, on the target first and then on
// every other master, as redis-cli does.
func (m *Migration) Finish(ctx context.Context, c *Cluster) error {
	masters, err := c.Masters(ctx)
	if err != nil {
		return err
	}
	nodes := append([]*Server{m.To, m.From}, masters...)
	done := map[*Server]bool{}
	for _, s := range nodes {
		if s == nil || done[s] {
			continue
		}
		done[s] = true
		cl := s.Client()
		err := cl.Do(ctx, "CLUSTER", "SETSLOT", m.Slot, "NODE", m.toID).Err()
		cl.Close()
		if err != nil {
			return fmt.Errorf("SETSLOT NODE on %s: %w", s.Addr, err)
		}
	}
	return nil
}

// WaitPromoted waits until a node other than old serves key's slot and
// the cluster is ok again, as seen by every live node, and returns the new
// master.
// Failover promotes the replica of key's master with CLUSTER FAILOVER
// and waits until it serves key's slot, within ctx (a minute at most). A
// manual failover that the replica cannot complete in time (it had not
// caught up, on a loaded machine) is aborted by Redis without a word: it
// is asked again every 5 s. It returns the old master and the new one.
func (c *Cluster) Failover(ctx context.Context, key string) (old, promoted *Server, err error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	old, err = c.Owner(ctx, key)
	if err != nil {
		return nil, nil, err
	}
	replica, err := c.Replica(ctx, key)
	if err != nil {
		return nil, nil, err
	}
	rc := replica.Client()
	defer rc.Close()
	for ctx.Err() == nil {
		if err := rc.Do(ctx, "CLUSTER", "FAILOVER").Err(); err != nil {
			return nil, nil, err
		}
		try, cancelTry := context.WithTimeout(ctx, 5*time.Second)
		promoted, err = c.WaitPromoted(try, key, old)
		cancelTry()
		if err == nil {
			return old, promoted, nil
		}
	}
	return nil, nil, fmt.Errorf("CLUSTER FAILOVER of %s to %s: %w", old.Addr, replica.Addr, ctx.Err())
}

func (c *Cluster) WaitPromoted(ctx context.Context, key string, old *Server) (*Server, error) {
	for {
		sh, err := c.shardOf(ctx, Slot(key))
		if err == nil && sh.master != old.Addr {
			return c.Node(sh.master), nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no replica took over slot %d from %s: %w", Slot(key), old.Addr, ctx.Err())
		case <-time.After(10 * time.Millisecond): // polling interval
		}
	}
}
