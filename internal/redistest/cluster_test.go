package redistest

import (
	"context"
	"testing"
	"time"
)

func TestClusterForms(t *testing.T) {
	start := time.Now()
	c := MustCluster(t, 3, 1)
	t.Logf("formed in %s", time.Since(start))
	ctx := context.Background()
	cl := c.Client()
	defer cl.Close()
	if err := cl.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	o, err := c.Owner(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Replica(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	t.Log(o.Addr, r.Addr, Slot("k"))
}

func TestSentinelsFailOver(t *testing.T) {
	start := time.Now()
	s := MustSentinels(t, SentinelOptions{})
	t.Logf("started in %s", time.Since(start))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	old, err := s.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := s.Failover(ctx); err != nil {
		t.Fatal(err)
	}
	p, err := s.WaitPrimary(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("failed over from %s to %s in %s", old.Addr, p.Addr, time.Since(start))
}
