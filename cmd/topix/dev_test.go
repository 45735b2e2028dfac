package main

import (
	"bufio"
	"context"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/topix-dev/topix/internal/redistest"
)

// startDev starts topix dev on a free port with env and returns its
// address and its stderr.
func startDev(t *testing.T, host string, env ...string) (string, *redistest.Buffer, *exec.Cmd) {
	t.Helper()
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	srv := &redistest.Server{Addr: "127.0.0.1:1"} // not used: dev is the server
	cmd := topixCmd(t, srv, "dev", "--addr", addr)
	cmd.Env = append(cmd.Env, env...)
	var stderr redistest.Buffer
	cmd.Stderr = &stderr
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("no URL on stdout: %v; stderr:\n%s", err, stderr.String())
	}
	if strings.Contains(line, "@") {
		t.Errorf("the URL %q carries credentials", line)
	}
	return strings.Replace(addr, "0.0.0.0", "127.0.0.1", 1), &stderr, cmd
}

// rawRequest sends b on a new connection and returns what comes back
// before the server closes it or 2s pass.
func rawRequest(t *testing.T, addr string, b []byte) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(b)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	var out []byte
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil || strings.HasSuffix(string(out), "\r\n") {
			return string(out)
		}
	}
}

// A malformed request, or a command that panics inside the embedded
// server, gets an error; the server goes on.
func TestDevSurvivesMalformedRequests(t *testing.T) {
	addr, stderr, cmd := startDev(t, "127.0.0.1")
	for _, req := range []string{
		"*0\r\n",
		"*-1\r\n",
		"*1\r\n$9223372036854775807\r\n",
		"*1\r\n$-5\r\n",
		"PING\r\n",
		"*2\r\n$4\r\nPING\r\n$1\r\nxyz\r\n",
		"*4\r\n$5\r\nXTRIM\r\n$1\r\ns\r\n$6\r\nMAXLEN\r\n$1\r\n~\r\n", // panics inside miniredis v2.40.0
	} {
		got := rawRequest(t, addr, []byte(req))
		if !strings.HasPrefix(got, "-ERR") {
			t.Errorf("request %q: reply %q, want an error", req, got)
		}
		if pong := rawRequest(t, addr, []byte("*1\r\n$4\r\nPING\r\n")); pong != "+PONG\r\n" {
			t.Fatalf("after %q the server no longer answers PING (%q); stderr:\n%s", req, pong, stderr.String())
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, cmd, 10*time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
	if strings.Contains(stderr.String(), "reachable from other machines") {
		t.Errorf("warned about a loopback address:\n%s", stderr.String())
	}
}

// Bound to every address without a password, topix dev warns; with
// TOPIX_DEV_PASSWORD it asks for it, and never prints it.
func TestDevWarnsWhenExposedAndTakesAPassword(t *testing.T) {
	_, stderr, _ := startDev(t, "0.0.0.0")
	redistest.WaitFor(t, 5*time.Second, "the warning", func() bool {
		return strings.Contains(stderr.String(), "reachable from other machines, without TLS and without a password")
	})

	addr, stderr, _ := startDev(t, "127.0.0.1", "TOPIX_DEV_PASSWORD=d3v-s3cret")
	ctx := context.Background()
	anon := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2})
	defer anon.Close()
	if err := anon.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("PING without the password = %v, want NOAUTH", err)
	}
	authed := redis.NewClient(&redis.Options{Addr: addr, Password: "d3v-s3cret", Protocol: 2})
	defer authed.Close()
	if err := authed.Ping(ctx).Err(); err != nil {
		t.Errorf("PING with the password: %v", err)
	}
	if strings.Contains(stderr.String(), "d3v-s3cret") {
		t.Errorf("the password is in the output:\n%s", stderr.String())
	}
}
