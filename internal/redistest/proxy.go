package redistest

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy forwards TCP connections from a loopback port to a server, at a
// bounded rate in each direction: a slow link for tests, on loopback.
type Proxy struct {
	Addr string // 127.0.0.1:port to connect to instead of the server

	ln     net.Listener
	target string
	rate   int // bytes per second per direction and connection

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
	p := &Proxy{Addr: ln.Addr().String(), ln: ln, target: target, rate: rate, conns: map[net.Conn]bool{}}
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
		p.wg.Go(func() { p.pipe(out, in) })
		p.wg.Go(func() { p.pipe(in, out) })
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

// pipe copies from src to dst at p.rate: it sends a slice of what it read
// every tick, so that a big write takes len/rate seconds to arrive.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	const tick = 10 * time.Millisecond
	chunk := max(1, p.rate/int(time.Second/tick))
	buf := make([]byte, chunk)
	next := time.Now()
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			// Pace: chunk bytes per tick, whatever the reads return.
			next = next.Add(time.Duration(n) * tick / time.Duration(chunk))
			if wait := time.Until(next); wait > 0 {
				time.Sleep(wait) // the rate limit, not synchronisation
			} else {
				next = time.Now()
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
