// Package redistest starts private redis-server processes for tests.
//
// Each test package starts its own server on a free loopback port with a
// temporary directory, so tests never touch a Redis they did not start. The
// server is stopped by process id when the test (or TestMain) ends.
package redistest

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one redis-server process started by this package.
type Server struct {
	Addr string // 127.0.0.1:port
	Dir  string // working directory (appendonly files, log)

	cmd  *exec.Cmd
	done chan struct{}
	tls  *tls.Config // set when it speaks TLS only (Certs.Args)
	// username and password are what Client logs in with.
	username, password string
	bin                string
	args               []string
}

// Restart starts the server again, stopped or killed, with the same port,
// directory and arguments.
func (s *Server) Restart() error {
	s.Stop()
	_, port, _ := net.SplitHostPort(s.Addr)
	p, _ := strconv.Atoi(port)
	ns, err := startProcess(s.bin, s.Dir, p, s.args, s.tls, s.password)
	if err != nil {
		return err
	}
	ns.username = s.username
	*s = *ns
	return nil
}

// URL returns the redis:// URL of database 0 of the server (rediss:// when
// it speaks TLS).
func (s *Server) URL() string {
	if s.tls != nil {
		return "rediss://" + s.Addr + "/0"
	}
	return "redis://" + s.Addr + "/0"
}

// Pid returns the process id of the server.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Client returns a new client for the server; the caller closes it.
func (s *Server) Client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: s.Addr, Protocol: 2, TLSConfig: s.tls, Username: s.username, Password: s.password})
}

// Start starts a redis-server on a free loopback port, with dir as its
// working directory and extra passed as command-line configuration (e.g.
// "--appendonly", "yes"). It returns once the server answers PING.
func Start(dir string, extra ...string) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server is not installed (apt-get install -y redis-server): %w", err)
	}
	var lastErr error
	// The port is free when chosen but may be taken before redis binds it;
	// a few attempts make that race harmless.
	for attempt := 0; attempt < 5; attempt++ {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		s, err := startOn(bin, dir, port, extra)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// StartOn starts a redis-server on the given port; used to restart a server
// on the address it had before.
func StartOn(dir string, port int, extra ...string) (*Server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, err
	}
	return startOn(bin, dir, port, extra)
}

func startOn(bin, dir string, port int, extra []string) (*Server, error) {
	tlsConfig, err := tlsFromArgs(extra)
	if err != nil {
		return nil, err
	}
	ports := []string{"--port", strconv.Itoa(port)}
	if tlsConfig != nil {
		ports = []string{"--port", "0", "--tls-port", strconv.Itoa(port)}
	}
	args := append(ports,
		"--bind", "127.0.0.1",
		"--dir", dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--logfile", filepath.Join(dir, "redis.log"),
	)
	return startProcess(bin, dir, port, append(args, extra...), tlsConfig, "")
}

// startProcess runs redis-server with args, which make it listen on port,
// and returns once it answers PING.
func startProcess(bin, dir string, port int, args []string, tlsConfig *tls.Config, password string) (*Server, error) {
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Dir: dir, cmd: cmd, done: make(chan struct{}), tls: tlsConfig, password: password, bin: bin, args: args}
	go func() { _ = cmd.Wait(); close(s.done) }()

	c := s.Client()
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil || strings.HasPrefix(err.Error(), "NOAUTH") { // up, with a password
			return s, nil
		}
		select {
		case <-s.done:
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			return nil, fmt.Errorf("redis-server on port %d exited at start: %s", port, lastLines(log, 3))
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("redis-server on port %d did not answer PING: %w", port, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

// Stop kills the server (SIGKILL) and waits for it to exit.
func (s *Server) Stop() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Must starts a server for one test and stops it when the test ends.
func Must(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	s, err := Start(tb.TempDir(), extra...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// Main starts one server for a whole test package, runs the tests and stops
// it. Use it from TestMain: os.Exit(redistest.Main(m, &srv)).
func Main(m *testing.M, srv **Server) int {
	dir, err := os.MkdirTemp("", "topix-redis-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	s, err := Start(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Stop()
	*srv = s
	return m.Run()
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitFor polls cond every 10ms until it returns true or timeout passes, and
// fails the test with msg in the latter case.
func WaitFor(tb testing.TB, timeout time.Duration, msg string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, msg)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// Buffer is a bytes.Buffer that one goroutine (or a child process's output
// copier) writes while the test reads it, as tests do with the log of a
// consumer they wait on.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
