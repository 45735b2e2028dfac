package main

import (
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/topix-dev/topix/web"
)

func (a *app) webCommand() *cobra.Command {
	var addr, token string
	var actions bool
	cmd := &cobra.Command{
		Use:   "web",
		Short: "Serve a web page over the groups topix consumers use, and their dead letters",
		Long: `Serve a page over every group topix consumers have used (the ones topix stats
lists): each group's figures, the last hour per minute, its consumers, its
oldest pending entries and its dead letters, which a filter narrows; and each
dead letter in full. The page refreshes itself every few seconds.

Safe by default: it listens on loopback (--addr 127.0.0.1:8080) and is
read-only. --actions lets it replay and delete dead letters (a replayed entry
leaves the dead-letter stream only once it was added again, as with topix
replay); actions are confirmed with their count, and logged. A token is
required with --actions, and to listen beyond loopback: set TOPIX_WEB_TOKEN
(or --token, which other users of the machine can see in ps), and open the
page once as http://ADDR/?token=TOKEN.`,
		Example: `  topix web
  TOPIX_WEB_TOKEN=$(openssl rand -hex 16) topix web --actions`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("web takes no arguments; see 'topix web --help'")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if token == "" {
				token, _ = lookupEnv(a.env, "TOPIX_WEB_TOKEN")
			}
			if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
				return usagef("--addr %q: give an address with a port, like 127.0.0.1:8080", addr)
			}
			opts := web.Options{Addr: addr, Token: token, Actions: actions}
			if err := opts.Check(); err != nil {
				return usageError(err)
			}
			cfg, log, err := a.load(cmd)
			if err != nil {
				return err
			}
			opts.Log = log
			ctx, stop := a.signalContext(log)
			defer stop()
			listener, err := listenHTTP(addr, "--addr")
			if err != nil {
				return err
			}
			defer listener.Close()
			rdb, err := connect(ctx, cfg)
			if err != nil {
				return err
			}
			defer rdb.Close()
			srv, err := web.New(rdb, opts)
			if err != nil {
				return err
			}
			hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second}
			go func() {
				<-ctx.Done()
				_ = hs.Close()
			}()
			log.Info("serving the web page", "url", "http://"+listener.Addr().String()+"/", "actions", actions, "token", token != "")
			if err := hs.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", "127.0.0.1:8080", "address to serve the page on; beyond loopback it needs a token")
	f.BoolVar(&actions, "actions", false, "allow replaying and deleting dead letters from the page (needs a token)")
	f.StringVar(&token, "token", "", "the token the page asks for once [$TOPIX_WEB_TOKEN]")
	return cmd
}
