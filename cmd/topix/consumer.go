package main

import (
	"context"
	"errors"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/topix-dev/topix/config"
	"github.com/topix-dev/topix/engine"
	"github.com/topix-dev/topix/inspect"
	"github.com/topix-dev/topix/internal/version"
	"github.com/topix-dev/topix/metrics"
	"github.com/topix-dev/topix/starlib"
	"github.com/topix-dev/topix/web"
)

func (a *app) consumerCommand() *cobra.Command {
	d := config.Defaults()
	cmd := &cobra.Command{
		Use:   "consumer STREAM GROUP SCRIPT.star[:FUNC]",
		Short: "Run a Starlark function over every entry of a stream",
		Long: `Run FUNC (default: consumer) of SCRIPT.star on every entry of STREAM, as a
member of consumer group GROUP, until SIGINT, SIGTERM or SIGHUP.

The function takes the entry as a dict of str to str, and optionally a second
parameter with its metadata (msg.id, msg.stream, msg.group, msg.consumer,
msg.attempt):

  def consumer(data):
      print(data["sku"])

An entry is acked only when the call returns. A call that fails (fail(...),
any error, or the --max-steps, --call-timeout or --max-memory limit) is
logged with its backtrace; the entry stays pending and is retried with
backoff, and after --max-attempts attempts it goes to the dead-letter stream
(then it is acked). Attempts are calls that started: an entry read along
with one that crashed its consumer is not charged one. With --exactly-once
(Redis 7.0+) a call's emits and its entry's ack are one atomic step, taken
only while the entry is pending: an entry processed twice emits once. Entries idle longer than --claim-idle in any consumer's pending list
(a dead consumer's) are claimed and processed. Scripts can use log, emit,
dead_letter, json, time and math; see docs/scripting.md and
docs/reliability.md.

The script is reloaded when it or a module it loads changes on disk (unless
--no-reload): workers take the new version at their next entry; an edit that
does not compile is logged and the running version stays.

The group is created when missing (with the stream), starting at --start: 0,
the default, means entries added before the first start are processed too.
On start, the consumer first takes the entries it owns and never acked.

--http 127.0.0.1:9464 serves Prometheus metrics on /metrics, liveness on
/healthz (a Redis outage does not fail it) and readiness on /readyz; topix
stats reads what consumers record in Redis (--no-stats turns that off). See
docs/operations.md.

SIGINT, SIGTERM or SIGHUP stops reading, finishes the entries already read,
flushes the acks and removes the consumer from the group if it owns no
pending entries, all within --shutdown-timeout. A second signal, 300ms or
more after the first, exits at once (one sent twice in a row, as timeout(1)
does, is one stop).`,
		Example: `  topix consumer orders billing app.star
  topix consumer orders billing app.star:bill --concurrency 8 --name billing-1
  topix consumer orders billing app.star --http 127.0.0.1:9464`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 3 {
				return usagef("consumer needs 3 arguments, STREAM GROUP SCRIPT.star[:FUNC], got %d; see 'topix consumer --help'", len(args))
			}
			return nil
		},
		RunE: a.runConsumer,
	}
	f := cmd.Flags()
	f.IntP(config.FlagName("concurrency"), "c", d.Concurrency, "workers, each running one call at a time; defaults to the number of CPUs [$TOPIX_CONCURRENCY]")
	f.Int(config.FlagName("batch"), d.Batch, "entries per read (XREADGROUP COUNT); 0 sizes it to the workers: 20 each, at least 100 [$TOPIX_BATCH]")
	f.String(config.FlagName("batch_bytes"), d.BatchBytes.String(), "bytes of entries held in memory, read and not yet processed: reads take fewer entries when they are big; one bigger than it is read alone [$TOPIX_BATCH_BYTES]")
	f.Duration(config.FlagName("block"), d.Block, "how long one read waits for new entries; also bounds how soon a stop is noticed [$TOPIX_BLOCK]")
	f.String(config.FlagName("start"), d.Start, "where a new group starts: 0 (every entry), $ (new entries only) or an entry id [$TOPIX_START]")
	f.String(config.FlagName("name"), d.Name, "consumer name in the group (default: <hostname>-<pid>); keep it stable to resume your own pending entries [$TOPIX_NAME]")
	f.String("consumer", "", "another name of --name, the original Topix's")
	f.Duration(config.FlagName("shutdown_timeout"), d.ShutdownTimeout, "how long a stop may take to finish the entries already read [$TOPIX_SHUTDOWN_TIMEOUT]")
	f.Duration(config.FlagName("claim_idle"), d.ClaimIdle, "claim entries idle this long in any consumer's pending list of the group (a dead consumer's) [$TOPIX_CLAIM_IDLE]")
	f.Int(config.FlagName("max_attempts"), d.MaxAttempts, "attempts (calls started) of a failing entry before it goes to the dead-letter stream [$TOPIX_MAX_ATTEMPTS]")
	f.Duration(config.FlagName("retry_backoff"), d.RetryBackoff, "wait before retrying a failed entry; doubles with each attempt, up to 1m [$TOPIX_RETRY_BACKOFF]")
	f.String(config.FlagName("dead_letter"), d.DeadLetter, "dead-letter stream (default: STREAM:dead) [$TOPIX_DEAD_LETTER]")
	f.Duration(config.FlagName("prune_idle"), d.PruneIdle, "remove other consumers of the group idle this long that own no pending entries; 0 never does [$TOPIX_PRUNE_IDLE]")
	f.Int(config.FlagName("worker_nice"), d.WorkerNice, "run the scripts this much lower in CPU priority (nice) than reading and acking, so busy scripts do not starve a Redis on the same machine; 0 keeps one priority (Linux) [$TOPIX_WORKER_NICE]")
	addWaitFlags(cmd, "its emits and dead letters before it acks the entry")
	f.Bool(config.FlagName("exactly_once"), d.ExactlyOnce, "add each call's emits and ack its entry in one server-side script, only while the entry is pending: an entry processed twice (a crash, a reclaim) emits once. Redis 7.0+; on a Cluster emits must share the stream's hash slot; see docs/reliability.md [$TOPIX_EXACTLY_ONCE]")
	f.Bool("no-reload", !d.Reload, "do not reload the script when its files change [$TOPIX_RELOAD=false]")
	f.String(config.FlagName("http"), d.HTTP, "serve /metrics (Prometheus), /healthz and /readyz on this address, like 127.0.0.1:9090; off by default [$TOPIX_HTTP]")
	f.Bool(config.FlagName("http_debug"), d.HTTPDebug, "with --http, also serve Go's profiles on /debug/pprof/ [$TOPIX_HTTP_DEBUG]")
	f.Bool("no-stats", !d.Stats, "do not keep the small records in Redis that topix stats reads: heartbeat, per-minute counts, registry (docs/operations.md) [$TOPIX_STATS=false]")
	addScriptFlags(cmd)
	return cmd
}

func (a *app) runConsumer(cmd *cobra.Command, args []string) error {
	stream, group, target := args[0], args[1], args[2]
	if stream == "" {
		return usagef("the stream name is empty")
	}
	if group == "" {
		return usagef("the group name is empty")
	}
	cfg, log, err := a.load(cmd)
	if err != nil {
		return err
	}
	// The script is checked before Redis is touched: a typo costs nothing.
	script, env, err := loadScript(target, cfg, log)
	if err != nil {
		return err
	}

	// The address is taken before Redis is touched: a port in use is a
	// mistake to report at once.
	var listener net.Listener
	if cfg.HTTP != "" {
		if listener, err = listenHTTP(cfg.HTTP, "--http"); err != nil {
			return err
		}
		defer listener.Close()
	}

	tuneGC(a.env)
	ctx, stop := a.signalContext(log)
	defer stop()

	rt := starlib.NewRuntime(script, env)
	var mx *metrics.Metrics
	var srv *metrics.Server
	if listener != nil {
		mx = metrics.New(stream, group, cfg.CallTimeout)
		// The loops may go quiet for a whole call, and a read's block.
		srv = metrics.NewServer(mx, max(time.Minute, 2*cfg.CallTimeout+cfg.Block), cfg.HTTPDebug, log)
		go func() {
			if err := srv.Serve(ctx, listener); err != nil {
				log.Error("the --http server stopped", "err", err)
			}
		}()
		log.Info("serving metrics and health", "http", "http://"+listener.Addr().String()+"/metrics")
	}

	rdb, err := connect(ctx, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()

	opts := engine.Options{
		Stream:          stream,
		Group:           group,
		Consumer:        cfg.ConsumerName(),
		Start:           cfg.Start,
		Concurrency:     cfg.Concurrency,
		Batch:           cfg.BatchSize(),
		BatchBytes:      int64(cfg.BatchBytes),
		Block:           cfg.Block,
		ShutdownTimeout: cfg.ShutdownTimeout,
		ClaimIdle:       cfg.ClaimIdle,
		MaxAttempts:     cfg.MaxAttempts,
		RetryBackoff:    cfg.RetryBackoff,
		DeadLetter:      cfg.DeadLetter,
		PruneIdle:       cfg.PruneIdle,
		WorkerNice:      cfg.WorkerNice,
		WaitReplicas:    cfg.WaitReplicas,
		WaitTimeout:     cfg.WaitTimeout,
		ExactlyOnce:     cfg.ExactlyOnce,
		Records:         cfg.Stats,
		Describe: func() engine.Presence {
			path, hash := rt.Version()
			return engine.Presence{Version: version.Get().Short(), Script: path, ScriptHash: hash}
		},
		Logger: log,
	}
	if mx != nil {
		opts.Observer = mx
	}
	c, err := engine.New(rdb, rt, opts)
	if err != nil {
		return usageError(err)
	}
	if mx != nil {
		mx.Watch(c, rt, inspect.New(rdb), stream, group, inspect.Options{DeadLetter: c.DeadLetter(), ClaimIdle: cfg.ClaimIdle})
		// The web page of its own group, read-only: actions are topix web's.
		page, err := web.New(rdb, web.Options{Group: &inspect.Ref{Stream: stream, Group: group}, Log: log})
		if err != nil {
			return err
		}
		srv.Attach(c, page.Handler())
	}
	ceiling, source := cfg.MemoryCeiling()
	log.Debug("script loaded", "script", script.Path, "func", script.Func,
		"max_steps", cfg.MaxSteps, "call_timeout", cfg.CallTimeout.String(), "max_memory", ceiling.String(), "max_memory_from", source)
	if cfg.Reload {
		go func() {
			if err := rt.Watch(ctx); err != nil {
				log.Warn("hot reload is off", "err", err)
			}
		}()
	}
	if err := c.Run(ctx); err != nil {
		var pe *engine.PermissionError
		switch {
		case errors.Is(err, engine.ErrWrongType), errors.Is(err, engine.ErrExactlyOnce):
			return usageError(err)
		case errors.As(err, &pe), errors.Is(err, engine.ErrClusterNode):
			return &exitError{exitRedis, err}
		}
		return err
	}
	return nil
}

// listenHTTP listens on addr, given by flag, or says in one line why it
// cannot (exit 2): before Redis is touched, a port in use is a mistake to
// report at once.
func listenHTTP(addr, flag string) (net.Listener, error) {
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		return nil, usagef("%s %q: give an address with a port, like 127.0.0.1:8080 (or :8080 for every interface)", flag, addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, usagef("cannot serve %s on %s: %s; pick another address", flag, addr, listenReason(err))
	}
	return l, nil
}

// listenReason says why an address could not be listened on, without
// Go's "listen tcp ...:" prefix.
func listenReason(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		err = oe.Err
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "address already in use"):
		return "the address is in use (another topix, or another program, serves there)"
	case strings.Contains(msg, "permission denied"):
		return "permission denied (ports below 1024 need privileges)"
	}
	return msg
}

// signalContext returns a context cancelled by the first SIGINT, SIGTERM
// or SIGHUP; another one, at least repeatWindow after the first, exits the
// process at once. A repeat within the window is the same stop, sent twice:
// timeout(1) signals its child and then the child's process group, and a
// supervisor may signal every process of a group.
func (a *app) signalContext(log interface{ Warn(string, ...any) }) (context.Context, func()) {
	ctx, cancel := context.WithCancel(a.ctx)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
			return
		}
		first := time.Now()
		for sig := range sigs {
			if time.Since(first) < repeatWindow {
				continue
			}
			log.Warn("second signal: exiting now; entries in flight stay pending", "signal", sig.String())
			os.Exit(exitSignaled)
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		cancel()
	}
}

// repeatWindow is how soon after the first a signal counts as the same.
const repeatWindow = 300 * time.Millisecond

// tuneGC lets the garbage collector run less often than Go's default,
// unless GOGC or GOMEMLIMIT say otherwise. A consumer's live heap is small
// and bounded (a few batches of entries), while it allocates fast; at the
// default the collector took a third of the CPU of a drain. A memory limit
// keeps the trade bounded. docs/benchmarks.md has the figures.
func tuneGC(env []string) {
	if _, set := lookupEnv(env, "GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
	if _, set := lookupEnv(env, "GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(memoryLimit)
	}
}

const (
	gcPercent   = 800
	memoryLimit = 32 << 20
)
