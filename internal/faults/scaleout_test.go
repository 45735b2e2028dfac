//go:build chaos

package faults

// The scale-out scenarios, n to r: topix on a local Redis Cluster of three
// masters with a replica each (internal/redistest), while slots move and
// masters fail over, and on a Sentinel set through failovers, each with a
// steady flow of entries, so that a stall shows: the suite reports the
// longest time with no entry processed, and the time from the fault's
// end (the slot moved, the replica promoted) to the first entry processed
// after it.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix/internal/redistest"
)

// feedRate is the entries per second of the flow the scenarios keep up.
const feedRate = 2000

// feed adds entries to a stream at about rate per second, a pipeline every
// 10 ms, until halted. Failed adds are counted and not retried: an entry
// whose XADD failed may or may not be in the stream, and count() accounts
// for what is there.
type feed struct {
	stop, done    chan struct{}
	added, failed atomic.Int64
}

func startFeed(rdb redis.UniversalClient, stream string, rate int) *feed {
	f := &feed{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		per := max(1, rate/100)
		for i := 0; ; i += per {
			select {
			case <-f.stop:
				return
			case <-tick.C:
			}
			// Short: go-redis's cluster pipeline retries a dead node until
			// its context ends, and the flow must not stall longer than
			// topix does.
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			pipe := rdb.Pipeline()
			for k := range per {
				pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: plain(i + k)})
			}
			cmds, _ := pipe.Exec(ctx)
			cancel()
			failed := false
			for _, c := range cmds {
				if c.Err() == nil {
					f.added.Add(1)
				} else {
					f.failed.Add(1)
					failed = true
				}
			}
			if cc, ok := rdb.(*redis.ClusterClient); ok && failed {
				// go-redis reloads the slot map on MOVED, not when a
				// node stops answering: a producer must ask, as topix does.
				cc.ReloadState(ctx)
			}
		}
	}()
	return f
}

func (f *feed) halt() { close(f.stop); <-f.done }

// keepFlowing waits until the feed added n more entries.
func (f *feed) keepFlowing(t *testing.T, n int64, what string) {
	t.Helper()
	from := f.added.Load()
	waitFor(t, 60*time.Second, what, func() bool { return f.added.Load() >= from+n })
}

// processedTimes returns when the entries were processed, from the ids of
// the results stream (Redis's clock, this machine's).
func processedTimes(t *testing.T, rdb redis.UniversalClient, stream string) []time.Time {
	var ts []time.Time
	scan(t, rdb, stream, func(m redis.XMessage) {
		ms, _, _ := strings.Cut(m.ID, "-")
		n, _ := strconv.ParseInt(ms, 10, 64)
		ts = append(ts, time.UnixMilli(n))
	})
	return ts
}

// longestGap is the longest time between two entries processed one after
// the other, from the first processed after from.
func longestGap(ts []time.Time, from time.Time) time.Duration {
	var gap time.Duration
	var prev time.Time
	for _, x := range ts {
		if x.Before(from) {
			prev = x
			continue
		}
		if !prev.IsZero() && x.Sub(prev) > gap {
			gap = x.Sub(prev)
		}
		prev = x
	}
	return gap
}

// resumedAfter is the time from at to the first entry processed after it
// (0 within the same millisecond: ids have millisecond times), or -1 when
// none was.
func resumedAfter(ts []time.Time, at time.Time) time.Duration {
	for _, x := range ts {
		if !x.Before(at.Truncate(time.Millisecond)) {
			return max(0, x.Sub(at))
		}
	}
	return -1
}

// clusterRun runs a consumer of "in" on a new cluster with a steady flow,
// applies fault once the flow is processed, keeps the flow up for 3 s
// more, drains, and returns what happened: the tally, the longest stall,
// and the time from the fault's end (what fault returns) to the first entry
// processed after it.
func clusterRun(t *testing.T, fault func(ctx context.Context, cl *redistest.Cluster, f *feed) (time.Time, string)) (tally, time.Duration, time.Duration, string) {
	cl := redistest.MustCluster(t, 3, 1)
	rdb := cl.Client()
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	in, _ := cl.Owner(ctx, "in")
	results, _ := cl.Owner(ctx, "results")
	if in == nil || in == results {
		t.Fatalf("in and results must be on different masters (%v, %v)", in, results)
	}
	p := launch(t, launchEnv{url: cl.URL()}, "consumer", "in", "g", filepath.Join(scripts, "recorder.star"), "--name", "c1",
		"--max-steps", "100000000000", "--log-level", "warn", "--claim-idle", "5s")
	f := startFeed(rdb, "in", feedRate)
	waitFor(t, 30*time.Second, "the flow processed", func() bool { return resultsLen(rdb) >= feedRate })
	start := time.Now()
	end, note := fault(ctx, cl, f)
	f.keepFlowing(t, 3*feedRate, "the flow after the fault")
	f.halt()
	waitDrained(t, rdb)
	c := count(t, rdb)
	ts := processedTimes(t, rdb, "results")
	p.stop(t, syscall.SIGTERM, 30*time.Second)
	if out := p.stderr.String(); strings.Contains(out, "Redis failed") && !strings.Contains(note, "kill") {
		t.Errorf("a redirect was logged as an outage:\n%s", tail(out, 10))
	}
	return c, longestGap(ts, start), resumedAfter(ts, end), note
}

// n. the stream's slot migrated to another master mid-drain, through the
// ASK window (the stream moved, the slot not yet) held for a second.
func TestSlotMigratedMidDrain(t *testing.T) {
	c, stall, resumed, note := clusterRun(t, func(ctx context.Context, cl *redistest.Cluster, f *feed) (time.Time, string) {
		target, err := cl.OtherMaster(ctx, "in")
		if err != nil {
			t.Fatal(err)
		}
		m, err := cl.Begin(ctx, redistest.Slot("in"), target)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := m.MoveKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		f.keepFlowing(t, feedRate, "the flow in the ASK window")
		if err := m.Finish(ctx, cl); err != nil {
			t.Fatal(err)
		}
		return time.Now(), fmt.Sprintf("slot %d with %d keys from %s to %s", m.Slot, keys, m.From.Addr, target.Addr)
	})
	report(t, "n. %s (MIGRATING/IMPORTING, MIGRATE, 1 s of ASK, SETSLOT NODE), mid-flow: %s; stall %s; first entry %s after the slot moved",
		note, c, stall.Round(time.Millisecond), resumed.Round(time.Millisecond))
	check(t, c, stall, resumed)
}

// o. CLUSTER FAILOVER of the stream's master mid-drain.
func TestClusterFailoverMidDrain(t *testing.T) {
	c, stall, resumed, note := clusterRun(t, func(ctx context.Context, cl *redistest.Cluster, f *feed) (time.Time, string) {
		owner, promoted, err := cl.Failover(ctx, "in")
		if err != nil {
			t.Fatal(err)
		}
		return time.Now(), fmt.Sprintf("%s to its replica %s", owner.Addr, promoted.Addr)
	})
	report(t, "o. CLUSTER FAILOVER of the stream's master, %s, mid-flow: %s; stall %s; first entry %s after the promotion",
		note, c, stall.Round(time.Millisecond), resumed.Round(time.Millisecond))
	check(t, c, stall, resumed)
}

// p. kill -9 of the stream's master mid-drain; its replica is promoted.
func TestMasterKilledMidDrain(t *testing.T) {
	var promoted time.Duration
	c, stall, resumed, note := clusterRun(t, func(ctx context.Context, cl *redistest.Cluster, f *feed) (time.Time, string) {
		owner, _ := cl.Owner(ctx, "in")
		owner.Stop()
		killed := time.Now()
		next, err := cl.WaitPromoted(ctx, "in", owner)
		if err != nil {
			t.Fatal(err)
		}
		promoted = time.Since(killed)
		return time.Now(), fmt.Sprintf("kill -9 of %s, %s promoted", owner.Addr, next.Addr)
	})
	report(t, "p. %s %s after the kill (cluster-node-timeout %s), mid-flow: %s; stall %s; first entry %s after the promotion",
		note, promoted.Round(time.Millisecond), redistest.NodeTimeout, c, stall.Round(time.Millisecond), resumed.Round(time.Millisecond))
	if c.lost != 0 || c.pending != 0 || resumed < 0 || resumed > 2*time.Second {
		t.Errorf("%s; first entry %s after the promotion: want nothing lost and under 2s", c, resumed)
	}
}

func check(t *testing.T, c tally, stall, resumed time.Duration) {
	t.Helper()
	if c.lost != 0 || c.pending != 0 || c.processed != c.sent {
		t.Errorf("%s: want every entry processed", c)
	}
	if stall > 2*time.Second || resumed < 0 || resumed > 2*time.Second {
		t.Errorf("stall %s, first entry %s after: want both under 2s", stall, resumed)
	}
}

// r. three streams on three masters, one consumer process each; the
// master of one of them (not the results') is killed with SIGKILL.
func TestSeveralStreamsOneMasterKilled(t *testing.T) {
	cl := redistest.MustCluster(t, 3, 1)
	rdb := cl.Client()
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	masters, err := cl.Masters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	results, _ := cl.Owner(ctx, "results")
	script := filepath.Join(t.TempDir(), "streams.star")
	os.WriteFile(script, []byte("def consumer(data, msg):\n    emit('results', {'id': msg.stream + ' ' + msg.id})\n"), 0o644)
	var streams []string
	var victim string
	var feeds []*feed
	for i, m := range masters {
		s, err := cl.KeyOn(ctx, "r", m)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
		if m != results && victim == "" {
			victim = s
		}
		launch(t, launchEnv{url: cl.URL()}, "consumer", s, "g", script, "--name", "c"+strconv.Itoa(i),
			"--log-level", "warn", "--claim-idle", "5s")
		feeds = append(feeds, startFeed(rdb, s, feedRate/2))
	}
	waitFor(t, 30*time.Second, "the flows processed", func() bool { return resultsLen(rdb) >= feedRate })
	owner, _ := cl.Owner(ctx, victim)
	start := time.Now()
	owner.Stop()
	if _, err := cl.WaitPromoted(ctx, victim, owner); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	feeds[0].keepFlowing(t, 3*feedRate/2, "the flows after the promotion")
	for _, f := range feeds {
		f.halt()
	}
	waitFor(t, 120*time.Second, "every stream drained", func() bool {
		for _, s := range streams {
			p, err := rdb.XPending(ctx, s, "g").Result()
			if err != nil || p.Count != 0 {
				return false
			}
		}
		return true
	})
	// Per stream: sent, processed, lost; and when each was processed.
	done := map[string]int{}
	times := map[string][]time.Time{}
	var lines []string
	scan(t, rdb, "results", func(m redis.XMessage) {
		id := m.Values["id"].(string)
		done[id]++
		s, _, _ := strings.Cut(id, " ")
		ms, _, _ := strings.Cut(m.ID, "-")
		n, _ := strconv.ParseInt(ms, 10, 64)
		times[s] = append(times[s], time.UnixMilli(n))
	})
	for _, s := range streams {
		var sent, processed, dup, lost int
		scan(t, rdb, s, func(m redis.XMessage) {
			sent++
			switch n := done[s+" "+m.ID]; {
			case n == 0:
				lost++
			default:
				processed++
				dup += n - 1
			}
		})
		tag := ""
		if s == victim {
			tag = fmt.Sprintf(" (its master killed; first entry %s after the promotion)", resumedAfter(times[s], promoted).Round(time.Millisecond))
			if r := resumedAfter(times[s], promoted); r < 0 || r > 2*time.Second {
				t.Errorf("%s resumed %s after the promotion; want under 2s", s, r)
			}
		}
		lines = append(lines, fmt.Sprintf("%s: sent %d, processed %d, duplicated %d, lost %d, stall %s%s",
			s, sent, processed, dup, lost, longestGap(times[s], start).Round(time.Millisecond), tag))
		if lost != 0 {
			t.Errorf("%s: %d entries lost", s, lost)
		}
	}
	report(t, "r. three streams on three masters, one consumer each, kill -9 of one master: %s", strings.Join(lines, "; "))
}

// producer runs `topix emit STREAM -` with extra flags, fed at a steady
// rate, as a supervisor would: when it exits (a failover refused or broke
// its connection), the lines it did not confirm are given to a new one.
// It records the lines whose ids were printed.
type producer struct {
	t       *testing.T
	url     string
	flags   []string
	mu      sync.Mutex
	printed map[string]string // id -> the line's number
	queue   []int             // lines written and not confirmed, in order
	next    int
	restart int
	stop    chan struct{}
	done    chan struct{}
}

func startProducer(t *testing.T, url string, rate int, flags ...string) *producer {
	p := &producer{t: t, url: url, flags: flags, printed: map[string]string{}, stop: make(chan struct{}), done: make(chan struct{})}
	go p.run(rate)
	return p
}

func (p *producer) run(rate int) {
	defer close(p.done)
	for {
		select {
		case <-p.stop:
			return
		default:
		}
		cmd := exec.Command(topixBin, append([]string{"emit", "in", "-", "--log-level", "error"}, p.flags...)...)
		cmd.Env = append(os.Environ(), "TOPIX_REDIS_URL="+p.url, "NO_COLOR=1")
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			p.t.Error(err)
			return
		}
		exited := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				p.mu.Lock()
				if len(p.queue) > 0 {
					p.printed[sc.Text()] = strconv.Itoa(p.queue[0])
					p.queue = p.queue[1:]
				}
				p.mu.Unlock()
			}
			_ = cmd.Wait()
			close(exited)
		}()
		p.mu.Lock()
		resend := append([]int(nil), p.queue...)
		p.mu.Unlock()
		p.feed(stdin, resend, rate, exited)
		stdin.Close()
		<-exited
		p.mu.Lock()
		p.restart++
		p.mu.Unlock()
	}
}

// feed writes the lines to send again, then new ones at rate per second,
// until the process exits or the producer is stopped.
func (p *producer) feed(w io.Writer, resend []int, rate int, exited chan struct{}) {
	write := func(n int) bool {
		_, err := fmt.Fprintf(w, "{\"i\": \"%d\", \"pad\": \"%s\"}\n", n, strings.Repeat("x", 32))
		return err == nil
	}
	for _, n := range resend {
		if !write(n) {
			return
		}
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-exited:
			return
		case <-tick.C:
		}
		for range max(1, rate/100) {
			p.mu.Lock()
			n := p.next
			p.next++
			p.queue = append(p.queue, n)
			p.mu.Unlock()
			if !write(n) {
				return
			}
		}
	}
}

func (p *producer) halt() { close(p.stop); <-p.done }

// q. SENTINEL FAILOVER, then kill -9 of the new primary, with a consumer
// and a paced `topix emit -` running through redis+sentinel://, without
// and with --wait-replicas 1: entries whose ids emit printed and that are
// gone afterwards are counted, and with --wait-replicas 1 there must be
// none.
func TestSentinelFailovers(t *testing.T) {
	for _, wait := range []bool{false, true} {
		name := "without --wait-replicas"
		var flags []string
		if wait {
			name, flags = "with --wait-replicas 1", []string{"--wait-replicas", "1", "--wait-timeout", "500ms"}
		}
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			set := redistest.MustSentinels(t, redistest.SentinelOptions{})
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			tilted := set.WatchTilt(ctx)
			c := launch(t, launchEnv{url: set.URL()}, append([]string{"consumer", "in", "g", filepath.Join(scripts, "recorder.star"), "--name", "c1",
				"--max-steps", "100000000000", "--log-level", "warn", "--claim-idle", "5s"}, flags...)...)
			prod := startProducer(t, set.URL(), feedRate/2, flags...)
			primary, err := set.Primary(ctx)
			if err != nil {
				t.Fatal(err)
			}
			client := func() *redis.Client {
				p, err := set.Primary(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return p.Client()
			}
			rdb := client()
			waitFor(t, 30*time.Second, "the flow processed", func() bool { return resultsLen(rdb) >= feedRate/2 })
			rdb.Close()
			start := time.Now()
			if err := set.Failover(ctx); err != nil {
				t.Fatal(err)
			}
			second, err := set.WaitPrimary(ctx, primary)
			if err != nil {
				t.Fatal(err)
			}
			announced1 := time.Now()
			// The old primary, now a replica, in sync before the next blow.
			old := primary.Client()
			waitFor(t, 30*time.Second, "the old primary in sync as a replica", func() bool {
				info, _ := old.Info(ctx, "replication").Result()
				return strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up")
			})
			old.Close()
			rdb = second.Client()
			from := resultsLen(rdb)
			waitFor(t, 30*time.Second, "the flow processed after the failover", func() bool { return resultsLen(rdb) >= from+feedRate/2 })
			rdb.Close()
			second.Stop()
			third, err := set.WaitPrimary(ctx, second)
			if err != nil {
				t.Fatal(err)
			}
			announced2 := time.Now()
			// The killed node back, as an operator would bring it: the
			// sentinels make it a replica of the new primary. With
			// --wait-replicas 1 nothing is acked or printed until then.
			if err := second.Restart(); err != nil {
				t.Fatal(err)
			}
			back := second.Client()
			inSync := func() bool {
				info, _ := back.Info(ctx, "replication").Result()
				return strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up")
			}
			// The sentinels convert it once they see it up; on a loaded
			// machine they have been seen to take longer than 30 s. Then the
			// operator does it by hand, and the report says so.
			byHand := ""
			for deadline := time.Now().Add(20 * time.Second); !inSync() && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond) // polling interval
			}
			if !inSync() {
				host, port, _ := strings.Cut(third.Addr, ":")
				if err := back.Do(ctx, "REPLICAOF", host, port).Err(); err != nil {
					t.Fatal(err)
				}
				byHand = " (REPLICAOF by hand: the sentinels had not converted it in 20 s)"
			}
			waitFor(t, 30*time.Second, "the killed node back as a replica, in sync", inSync)
			back.Close()
			synced := time.Now()
			rdb = third.Client()
			defer rdb.Close()
			from = resultsLen(rdb)
			waitFor(t, 30*time.Second, "the flow processed after the kill", func() bool { return resultsLen(rdb) >= from+feedRate/2 })
			prod.halt()
			waitDrained(t, rdb)
			tl := count(t, rdb)
			c.stop(t, syscall.SIGTERM, 30*time.Second)
			inStream := map[string]bool{}
			scan(t, rdb, "in", func(m redis.XMessage) { inStream[m.ID] = true })
			gone := 0
			for id := range prod.printed {
				if !inStream[id] {
					gone++
				}
			}
			ts := processedTimes(t, rdb, "results")
			r1, r2 := resumedAfter(ts, announced1), resumedAfter(ts, announced2)
			second2 := fmt.Sprintf("%s after the second", r2.Round(time.Millisecond))
			if wait {
				// No replica to confirm anything until the killed node is
				// back in sync: count from then.
				r2 = resumedAfter(ts, synced)
				second2 = fmt.Sprintf("%s after the killed node was back in sync (%s after the second new primary)",
					r2.Round(time.Millisecond), synced.Sub(announced2).Round(time.Millisecond))
			}
			report(t, "q. Sentinel, %s: SENTINEL FAILOVER then kill -9 of the new primary, a paced topix emit - (%d restarts): %s; ids printed %d, of which gone after the failovers %d; stall %s; first entry %s after the first new primary, %s%s",
				name, prod.restart, tl, len(prod.printed), gone, longestGap(ts, start).Round(time.Millisecond), r1.Round(time.Millisecond), second2, byHand)
			if tl.lost != 0 || tl.pending != 0 {
				t.Errorf("%s: want nothing lost", tl)
			}
			if wait && gone != 0 {
				t.Errorf("%d entries whose ids emit --wait-replicas 1 printed are gone", gone)
			}
			for _, r := range []time.Duration{r1, r2} {
				switch {
				case r >= 0 && r <= 2*time.Second:
				case tilted():
					// The sentinels' own timers ran late: the failover took as
					// long as the machine made it. Said, not held to 2 s.
					report(t, "q. (%s: a sentinel went into TILT mode, the machine starving it; reading resumed %s after a new primary, not held to 2 s)", name, r.Round(time.Millisecond))
				default:
					t.Errorf("reading resumed %s after a new primary was announced; want under 2s", r)
				}
			}
		})
	}
}
