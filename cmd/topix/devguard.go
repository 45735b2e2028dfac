package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"sync"

	"github.com/alicebob/miniredis/v2"
	"github.com/alicebob/miniredis/v2/server"
)

// The embedded server (miniredis) trusts its clients: some malformed
// requests panic inside it (an empty array, "*0\r\n", is four bytes that
// end the process), and a bulk length is allocated before it is read. So
// topix dev does not expose it directly: it accepts the connections itself
// and passes on only well-formed requests, each an array of 1 to
// devMaxArgs bulk strings of at most devMaxBulk bytes. Anything else gets
// a protocol error and the connection is closed; the server goes on.
const (
	devMaxArgs = 1 << 20
	devMaxBulk = 64 << 20
)

// serveGuarded serves the connections of l with m until l is closed.
func serveGuarded(l net.Listener, m *miniredis.Miniredis) {
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		go guard(conn, m)
	}
}

// guard copies the requests of client to a connection of m once each is
// known to be well-formed, and the replies back.
func guard(client net.Conn, m *miniredis.Miniredis) {
	defer client.Close()
	server, err := m.Dial()
	if err != nil {
		return
	}
	defer server.Close()
	go func() {
		_, _ = io.Copy(client, server)
		client.Close()
	}()
	rd := bufio.NewReader(client)
	for {
		req, err := readRequest(rd)
		if err != nil {
			var pe protocolError
			if errors.As(err, &pe) {
				fmt.Fprintf(client, "-ERR Protocol error: %s\r\n", string(pe))
			}
			return
		}
		if _, err := server.Write(req); err != nil {
			return
		}
	}
}

type protocolError string

func (e protocolError) Error() string { return string(e) }

// readRequest reads one request, an array of bulk strings, and returns its
// bytes as they came.
func readRequest(rd *bufio.Reader) ([]byte, error) {
	n, req, err := readHeader(rd, '*', nil)
	if err != nil {
		return nil, err
	}
	if n < 1 || n > devMaxArgs {
		return nil, protocolError(fmt.Sprintf("a request is an array of 1 to %d arguments, not %d", devMaxArgs, n))
	}
	for range n {
		var size int
		size, req, err = readHeader(rd, '$', req)
		if err != nil {
			return nil, err
		}
		if size < 0 || size > devMaxBulk {
			return nil, protocolError(fmt.Sprintf("an argument of %d bytes; topix dev takes 0 to %d", size, devMaxBulk))
		}
		start := len(req)
		req = append(req, make([]byte, size+2)...)
		if _, err := io.ReadFull(rd, req[start:]); err != nil {
			return nil, err
		}
		if req[len(req)-2] != '\r' || req[len(req)-1] != '\n' {
			return nil, protocolError("an argument does not end with CRLF")
		}
	}
	return req, nil
}

// readHeader reads a line "<kind><number>\r\n", appends it to req and
// returns the number.
func readHeader(rd *bufio.Reader, kind byte, req []byte) (int, []byte, error) {
	line, err := rd.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return 0, nil, protocolError("a header line too long")
		}
		return 0, nil, err
	}
	if len(line) < 4 || line[0] != kind || line[len(line)-2] != '\r' {
		return 0, nil, protocolError(fmt.Sprintf("expected '%c' and a number", kind))
	}
	n, err := strconv.Atoi(string(line[1 : len(line)-2]))
	if err != nil {
		return 0, nil, protocolError(fmt.Sprintf("expected '%c' and a number", kind))
	}
	return n, append(req, line...), nil
}

// containPanics runs every command of m inside a recover: a command that
// panics inside the embedded server (XTRIM s MAXLEN ~ does) answers an
// error, and the server goes on. The hook is called by the server's
// dispatcher before each command; it dispatches the command again itself,
// under the recover, and the nested call runs the command.
func containPanics(m *miniredis.Miniredis, log *slog.Logger) {
	srv := m.Server()
	var mu sync.Mutex
	inside := map[*server.Peer]bool{}
	srv.SetPreHook(func(c *server.Peer, cmd string, args ...string) (done bool) {
		mu.Lock()
		nested := inside[c]
		inside[c] = true
		mu.Unlock()
		if nested {
			return false // the dispatch below: run the command
		}
		defer func() {
			mu.Lock()
			delete(inside, c)
			mu.Unlock()
		}()
		defer func() {
			r := recover()
			if r == nil {
				return
			}
			done = true // answered here: the dispatcher must not run it again
			// A command panicking between the server's Lock and Unlock
			// (in withTx) leaves its lock held: every later command would
			// hang. Its frames are on the stack still.
			if bytes.Contains(debug.Stack(), []byte("miniredis/v2.withTx(")) {
				m.Unlock()
			}
			c.WriteError(fmt.Sprintf("ERR topix dev: the embedded server failed on %s (%v); the server goes on", cmd, r))
			log.Warn("the embedded server failed on a command; it answered an error and goes on (a bug of the embedded server, miniredis)",
				"command", cmd, "args", len(args), "panic", fmt.Sprint(r))
		}()
		srv.Dispatch(c, append([]string{cmd}, args...))
		return true
	})
}
