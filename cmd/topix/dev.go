package main

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/alicebob/miniredis/v2"
	"github.com/spf13/cobra"
)

func (a *app) devCommand() *cobra.Command {
	var addr, password string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Start an in-memory Redis-compatible server for trying topix out",
		Long: `Start an embedded, in-memory server that speaks enough of the Redis protocol
for topix (streams, consumer groups), so you can follow the quickstart on a
machine without Redis. Its data lives in memory only: it is gone when the
server stops. Use a real Redis for anything that matters.

The first line on stdout is the server's URL, for scripts (without the
password, if one is set); a port of 0 picks a free one. It listens on
loopback unless told otherwise, and warns when it is reachable from other
machines: it has no TLS, and no password unless --password (or
TOPIX_DEV_PASSWORD) gives one. A malformed request gets a protocol error
and its connection is closed; the server goes on. SIGINT or SIGTERM stops
it.`,
		Example: `  topix dev
  topix dev --addr 127.0.0.1:0
  TOPIX_DEV_PASSWORD=s3cret topix dev --addr 0.0.0.0:6379`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("dev takes no arguments, got %q; see 'topix dev --help'", args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, log, err := a.load(cmd)
			if err != nil {
				return err
			}
			if password == "" {
				password, _ = lookupEnv(a.env, "TOPIX_DEV_PASSWORD")
			}
			l, err := net.Listen("tcp", addr)
			if err != nil {
				if errors.Is(err, syscall.EADDRINUSE) {
					return usagef("%s is in use (is Redis already running there?); pick another with --addr, e.g. --addr 127.0.0.1:6380", addr)
				}
				return usagef("cannot listen on %s: %s", addr, err)
			}
			defer l.Close()
			m := miniredis.NewMiniRedis()
			defer m.Close()
			if password != "" {
				m.RequireAuth(password)
			}
			if c, err := m.Dial(); err == nil { // starts its listener-less server
				c.Close()
			}
			containPanics(m, log)
			go serveGuarded(l, m)

			bound := l.Addr().String()
			url := "redis://" + bound + "/0"
			fmt.Fprintln(a.stdout, url)
			export := url
			if password != "" {
				export = "redis://:PASSWORD@" + bound + "/0"
			}
			fmt.Fprintf(a.stderr, `
  topix dev: an embedded Redis-compatible server is listening on %s
  Its data lives IN MEMORY ONLY and is lost when it stops. Not for production.

  In another terminal:
    export TOPIX_REDIS_URL=%s
    topix consumer demo printers scripts/printer.star
    topix emit demo '{"hello": "world"}'

  Press Ctrl-C to stop.

`, bound, export)
			if !isLoopback(l.Addr()) {
				msg := "topix dev is reachable from other machines, without TLS"
				if password == "" {
					msg += " and without a password: anyone who can reach it can read and change its data; bind 127.0.0.1, or set --password"
				}
				log.Warn(msg, "addr", bound)
			}
			ctx, stop := a.signalContext(log)
			defer stop()
			<-ctx.Done()
			log.Info("dev server stopped; its data is gone")
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:6379", "address to listen on (host:port; port 0 picks a free one)")
	cmd.Flags().StringVar(&password, "password", "", "password clients must give (AUTH); prefer TOPIX_DEV_PASSWORD, which no process list shows")
	return cmd
}

func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}
