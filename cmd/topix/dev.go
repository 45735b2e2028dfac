package main

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/alicebob/miniredis/v2"
	"github.com/spf13/cobra"
)

func (a *app) devCommand() *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Start an in-memory Redis-compatible server for trying topix out",
		Long: `Start an embedded, in-memory server that speaks enough of the Redis protocol
for topix (streams, consumer groups), so you can follow the quickstart on a
machine without Redis. Its data lives in memory only: it is gone when the
server stops. Use a real Redis for anything that matters.

The first line on stdout is the server's URL, for scripts; a port of 0 picks
a free one. SIGINT or SIGTERM stops it.`,
		Example: `  topix dev
  topix dev --addr 127.0.0.1:0`,
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
			m := miniredis.NewMiniRedis()
			if err := m.StartAddr(addr); err != nil {
				if errors.Is(err, syscall.EADDRINUSE) {
					return usagef("%s is in use (is Redis already running there?); pick another with --addr, e.g. --addr 127.0.0.1:6380", addr)
				}
				return usagef("cannot listen on %s: %s", addr, err)
			}
			defer m.Close()
			url := "redis://" + m.Addr() + "/0"
			fmt.Fprintln(a.stdout, url)
			fmt.Fprintf(a.stderr, `
  topix dev: an embedded Redis-compatible server is listening on %s
  Its data lives IN MEMORY ONLY and is lost when it stops. Not for production.

  In another terminal:
    export TOPIX_REDIS_URL=%s
    topix consumer demo printers scripts/printer.star
    topix emit demo '{"hello": "world"}'

  Press Ctrl-C to stop.

`, m.Addr(), url)
			ctx, stop := a.signalContext(log)
			defer stop()
			<-ctx.Done()
			log.Info("dev server stopped; its data is gone")
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:6379", "address to listen on (host:port; port 0 picks a free one)")
	return cmd
}
