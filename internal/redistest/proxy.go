package redistest

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy forwards TCP connections from a loopback port to a server, at a
// bounded rate in each direction, shared by all its connections: a slow
// link for tests, on loopback.
type Proxy struct {
	Addr string // 127.0.0.1:port to connect to instead of the server

	ln       net.Listener
	target   string
	up, down pacer // client to server, server to client

	mu    sync.Mutex
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// StartProxy listens on a free loopback port and forwards every connection
// to target at rate bytes per second each way. Close stops it.
func StartProxy(target string, rate int) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Addr: ln.Addr().String(), ln: ln, target: target, up: pacer{rate: rate}, down: pacer{rate: rate}, conns: map[net.Conn]bool{}}
	p.wg.Go(p.accept)
	return p, nil
}

// MustProxy starts a proxy for one test and closes it when the test ends.
func MustProxy(tb testing.TB, target string, rate int) *Proxy {
	tb.Helper()
	p, err := StartProxy(target, rate)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

func (p *Proxy) accept() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		if !p.track(in, out) {
			return
		}
		p.wg.Go(func() { pipe(out, in, &p.up) })
		p.wg.Go(func() { pipe(in, out, &p.down) })
	}
}

func (p *Proxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		p.conns[c] = true
	}
	return true
}

// pacer spreads the bytes of all the connections of one direction over
// time at rate bytes per second.
type pacer struct {
	rate int
	mu   sync.Mutex
	next time.Time // when the link is free again
}

// wait returns when n more bytes may pass.
func (p *pacer) wait(n int) {
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	p.next = p.next.Add(time.Duration(n) * time.Second / time.Duration(p.rate))
	until := p.next
	p.mu.Unlock()
	if d := time.Until(until); d > 0 {
		time.Sleep(d) // the rate limit, not synchronisation
	}
}

// pipe copies from src to dst through pace, in slices of a hundredth of a
// second's worth, so that a big write takes its size over the rate.
func pipe(dst, src net.Conn, pace *pacer) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, max(512, pace.rate/100))
	for {
		n, err := src.Read(buf)
		if n > 0 {
			pace.wait(n)
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF or a closed connection: the deferred closes pass it on
		}
	}
}

// Close stops listening and cuts every connection.
func (p *Proxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	p.wg.Wait()
}

// Silent listens on a loopback port, accepts connections and never
// answers: a server that hangs. It returns the address and a channel that
// gets a value for each connection accepted (dropped when nobody takes
// it), and stops at the end of the test.
func Silent(tb testing.TB) (string, <-chan struct{}) {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	accepted := make(chan struct{}, 16)
	var conns []net.Conn
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()
	tb.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return l.Addr().String(), accepted
}
