package redistest

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sentinels is a local Sentinel set: a primary, a replica and three
// sentinels watching them, each process with its own directory and port.
type Sentinels struct {
	Name      string    // the master name the sentinels know the primary by
	Data      []*Server // the primary and the replica, as started
	Sentinels []*Server
}

// DownAfter is the sentinels' down-after-milliseconds: a primary that does
// not answer for that long is failed over.
const DownAfter = time.Second

// SentinelOptions adjusts a Sentinel set.
type SentinelOptions struct {
	Data     []string // extra arguments of the primary and the replica
	Sentinel []string // extra lines of each sentinel's configuration
	// Auth, when set, is what a replica and the sentinels say to the
	// primary: "user password" or "password".
	Auth string
	// Password, when set, is the sentinels' own (requirepass).
	Password string
	// TLS, when set, makes every process of the set speak TLS only, with
	// client certificates required.
	TLS *Certs
}

// StartSentinels starts a primary, a replica of it and three sentinels
// under dir, and returns once the sentinels know the replica and each
// other.
func StartSentinels(dir string, opt SentinelOptions) (*Sentinels, error) {
	set := &Sentinels{Name: "topix-primary"}
	user, pass, hasUser := strings.Cut(opt.Auth, " ")
	if !hasUser {
		user, pass = "", opt.Auth
	}
	data := append([]string(nil), opt.Data...)
	if opt.TLS != nil {
		data = append(data, opt.TLS.Args(true)...)
	}
	if pass != "" {
		data = append(data, "--masterauth", pass)
		if user != "" {
			data = append(data, "--masteruser", user)
		}
	}
	for i := range 2 {
		d := filepath.Join(dir, fmt.Sprintf("data-%d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		args := data
		if i == 1 {
			host, port, _ := strings.Cut(set.Data[0].Addr, ":")
			args = append(append([]string(nil), data...), "--replicaof", host, port)
		}
		s, err := Start(d, args...)
		if err != nil {
			set.Stop()
			return nil, err
		}
		s.username, s.password = user, pass
		set.Data = append(set.Data, s)
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		set.Stop()
		return nil, err
	}
	host, port, _ := strings.Cut(set.Data[0].Addr, ":")
	for i := range 3 {
		d := filepath.Join(dir, fmt.Sprintf("sentinel-%d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			set.Stop()
			return nil, err
		}
		var s *Server
		for range 5 { // the free port can be taken before it is bound
			p, err := FreePort()
			if err != nil {
				set.Stop()
				return nil, err
			}
			ports := []string{"port " + strconv.Itoa(p)}
			var tlsConfig *tls.Config
			if c := opt.TLS; c != nil {
				ports = []string{"port 0", "tls-port " + strconv.Itoa(p), "tls-cert-file " + c.Cert, "tls-key-file " + c.Key,
					"tls-ca-cert-file " + c.CA, "tls-auth-clients yes", "tls-replication yes"}
				if tlsConfig, err = tlsFromArgs(c.Args(true)); err != nil {
					set.Stop()
					return nil, err
				}
			}
			conf := append(ports,
				"bind 127.0.0.1",
				"daemonize no",
				"dir "+d,
				"logfile "+filepath.Join(d, "redis.log"),
				fmt.Sprintf("sentinel monitor %s %s %s 2", set.Name, host, port),
				fmt.Sprintf("sentinel down-after-milliseconds %s %d", set.Name, DownAfter.Milliseconds()),
				fmt.Sprintf("sentinel failover-timeout %s 5000", set.Name),
				fmt.Sprintf("sentinel parallel-syncs %s 1", set.Name),
			)
			if pass != "" {
				conf = append(conf, fmt.Sprintf("sentinel auth-pass %s %s", set.Name, pass))
				if user != "" {
					conf = append(conf, fmt.Sprintf("sentinel auth-user %s %s", set.Name, user))
				}
			}
			if opt.Password != "" {
				conf = append(conf, "requirepass "+opt.Password, "sentinel sentinel-pass "+opt.Password)
			}
			conf = append(conf, opt.Sentinel...)
			file := filepath.Join(d, "sentinel.conf")
			if err := os.WriteFile(file, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
				set.Stop()
				return nil, err
			}
			if s, err = startProcess(bin, d, p, []string{file, "--sentinel"}, tlsConfig, opt.Password); err == nil {
				break
			}
		}
		if s == nil {
			set.Stop()
			return nil, fmt.Errorf("could not start sentinel %d", i)
		}
		set.Sentinels = append(set.Sentinels, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := waitEach(ctx, set.Data[1:], "the replica to be in sync", func(cl *redis.Client) bool {
		repl, err := cl.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(repl, "master_link_status:up")
	}); err != nil {
		set.Stop()
		return nil, err
	}
	if err := waitEach(ctx, set.Sentinels, "the sentinels to know the replica and each other", func(cl *redis.Client) bool {
		reps, err := cl.Do(ctx, "SENTINEL", "REPLICAS", set.Name).Slice()
		if err != nil || len(reps) == 0 {
			return false
		}
		others, err := cl.Do(ctx, "SENTINEL", "SENTINELS", set.Name).Slice()
		return err == nil && len(others) == len(set.Sentinels)-1
	}); err != nil {
		set.Stop()
		return nil, err
	}
	return set, nil
}

// MustSentinels starts a Sentinel set for one test and stops it when the
// test ends.
func MustSentinels(tb testing.TB, opt SentinelOptions) *Sentinels {
	tb.Helper()
	s, err := StartSentinels(tb.TempDir(), opt)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// URL returns a redis+sentinel:// URL naming the three sentinels
// (rediss+sentinel:// with TLS).
func (s *Sentinels) URL() string {
	scheme := "redis+sentinel://"
	if s.Sentinels[0].tls != nil {
		scheme = "rediss+sentinel://"
	}
	u := scheme + s.Sentinels[0].Addr + "?master_name=" + s.Name
	for _, x := range s.Sentinels[1:] {
		u += "&addr=" + x.Addr
	}
	return u
}

// Primary returns the data node the sentinels name as primary now.
func (s *Sentinels) Primary(ctx context.Context) (*Server, error) {
	var lastErr error
	for _, x := range s.Sentinels {
		cl := x.Client()
		addr, err := cl.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.Name).StringSlice()
		cl.Close()
		if err != nil || len(addr) != 2 {
			lastErr = err
			continue
		}
		for _, d := range s.Data {
			if d.Addr == addr[0]+":"+addr[1] {
				return d, nil
			}
		}
		return nil, fmt.Errorf("the sentinels name %s:%s, not a node of this set", addr[0], addr[1])
	}
	return nil, fmt.Errorf("no sentinel answers: %v", lastErr)
}

// Failover asks a sentinel to fail the primary over to the replica.
func (s *Sentinels) Failover(ctx context.Context) error {
	cl := s.Sentinels[0].Client()
	defer cl.Close()
	return cl.Do(ctx, "SENTINEL", "FAILOVER", s.Name).Err()
}

// WaitPrimary waits until the sentinels name a primary other than old,
// and that node says it is one, and returns it.
func (s *Sentinels) WaitPrimary(ctx context.Context, old *Server) (*Server, error) {
	for {
		p, err := s.Primary(ctx)
		if err == nil && p != old {
			cl := p.Client()
			role, err := cl.Do(ctx, "ROLE").Slice()
			cl.Close()
			if err == nil && len(role) > 0 && role[0] == "master" {
				return p, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no new primary after %s: %w", old.Addr, ctx.Err())
		case <-time.After(10 * time.Millisecond): // polling interval
		}
	}
}

// WatchTilt polls the sentinels every 100 ms until ctx is done, and
// reports through the returned function whether any was in TILT mode
// meanwhile: a sentinel whose own timer ran more than 2 s late (a starved
// machine) stops acting for 30 s, so a failover then takes as long as the
// machine makes it, not as long as topix does.
func (s *Sentinels) WatchTilt(ctx context.Context) func() bool {
	var tilted atomic.Bool
	go func() {
		for ctx.Err() == nil {
			for _, x := range s.Sentinels {
				cl := x.Client()
				info, err := cl.Info(ctx, "sentinel").Result()
				cl.Close()
				if err == nil && strings.Contains(info, "sentinel_tilt:1") {
					tilted.Store(true)
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond): // polling interval
			}
		}
	}()
	return tilted.Load
}

// Stop kills every process of the set.
func (s *Sentinels) Stop() {
	for _, x := range append(append([]*Server(nil), s.Sentinels...), s.Data...) {
		x.Stop()
	}
}
