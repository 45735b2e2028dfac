package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/topix-dev/topix/config"
	"github.com/topix-dev/topix/internal/logging"
	"github.com/topix-dev/topix/internal/version"
)

// Exit codes; the README lists them.
const (
	exitOK       = 0
	exitFailure  = 1   // failed while running (Redis failed mid-way, ...)
	exitUsage    = 2   // bad input: arguments, flags, configuration, JSON, script
	exitRedis    = 3   // Redis could not be reached or refused us (auth, ACL)
	exitSignaled = 130 // a second SIGINT/SIGTERM stopped topix at once
)

// exitError carries the exit code of an error to run.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageError(err error) error { return &exitError{exitUsage, err} }
func usagef(format string, args ...any) error {
	return usageError(fmt.Errorf(format, args...))
}

// app is one invocation of topix: its streams and environment.
type app struct {
	ctx     context.Context
	env     []string
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
	cfgPath string
}

// run runs topix with args (without the program name) and returns the exit
// code. Every error is reported here, as one line on stderr.
func run(ctx context.Context, args, env []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{ctx: ctx, env: env, stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil || errors.Is(err, errStopped) {
		return exitOK
	}
	var ee *exitError
	if !errors.As(err, &ee) && strings.HasPrefix(err.Error(), "unknown command ") {
		// cobra's own: the command line is wrong.
		err = usagef("%s; the commands are consumer, emit, replay, run, check, dev, stats, web and version (see 'topix --help')", err)
	}
	fmt.Fprintf(stderr, "topix: %s\n", oneLine(err))
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitFailure
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", " ")), " ")
}

func (a *app) rootCommand() *cobra.Command {
	defaults := config.Defaults()
	root := &cobra.Command{
		Use:   "topix",
		Short: "Run a Starlark function over every entry of a Redis stream",
		Long: `topix runs a function written in Starlark over every entry of a Redis stream,
through a consumer group, and acks each entry only once the function succeeded.

  topix dev                                        # a Redis to try it with (in memory)
  topix consumer orders billing app.star:consumer  # consumer(data) for every entry
  topix emit orders '{"sku": "A-1", "qty": 2}'     # add an entry

Settings come from, in rising precedence: defaults, a config file (--config),
TOPIX_* environment variables (TOPIX_REDIS_URL, TOPIX_CONCURRENCY, ...), flags.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		CompletionOptions: cobra.CompletionOptions{
			HiddenDefaultCmd: true,
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.cfgPath, "config", "", "config file (.toml, .yaml or .yml); its keys are the flag names with _ for -")
	pf.String(config.FlagName("redis_url"), defaults.RedisURL, "Redis URL (redis://, rediss://, unix://, redis+cluster://, redis+sentinel://) [$TOPIX_REDIS_URL]")
	pf.String(config.FlagName("tls_ca"), "", "CA certificates (PEM) that Redis's certificate must be signed by; default the system's, or $SSL_CERT_FILE [$TOPIX_TLS_CA]")
	pf.String(config.FlagName("tls_cert"), "", "client certificate (PEM), for a Redis with tls-auth-clients [$TOPIX_TLS_CERT]")
	pf.String(config.FlagName("tls_key"), "", "private key (PEM) of --tls-cert [$TOPIX_TLS_KEY]")
	pf.String(config.FlagName("tls_server_name"), "", "name Redis's certificates must carry; default the address dialed [$TOPIX_TLS_SERVER_NAME]")
	pf.String(config.FlagName("log_format"), defaults.LogFormat, "log format: text or json [$TOPIX_LOG_FORMAT]")
	pf.String(config.FlagName("log_level"), defaults.LogLevel, "log level: debug, info, warn or error (Python's WARNING, CRITICAL too) [$TOPIX_LOG_LEVEL]")

	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usagef("%s; see '%s --help'", err, cmd.CommandPath())
	})
	root.AddCommand(a.consumerCommand(), a.emitCommand(), a.replayCommand(), a.runCommand(), a.checkCommand(), a.devCommand(),
		a.statsCommand(), a.webCommand(), a.versionCommand())
	root.Version = version.Get().Short()
	root.SetVersionTemplate(version.Get().String())
	return root
}

// load builds the configuration of a command and its logger.
func (a *app) load(cmd *cobra.Command) (config.Config, *slog.Logger, error) {
	cfg, err := config.Load(a.cfgPath, a.env, cmd.Flags())
	if err != nil {
		return cfg, nil, usageError(err)
	}
	level, _ := config.ParseLevel(cfg.LogLevel) // validated by Load
	log := logging.New(a.stderr, cfg.LogFormat, level, a.env)
	redis.SetLogger(redisLogger{log})
	return cfg, log, nil
}

// connect makes a Redis client and checks that Redis answers, so a wrong
// address or password is one clear error before anything else happens.
func connect(ctx context.Context, cfg config.Config) (redis.UniversalClient, error) {
	opts, err := cfg.Redis()
	if err != nil {
		return nil, usageError(err)
	}
	// A consumer keeps 4 reads and up to 3 flushes in flight besides its
	// lease, claim and retry loops: go-redis's default of 10 connections
	// per CPU would make them queue on a one-CPU machine.
	opts.Prepare(max(16, 10*runtime.GOMAXPROCS(0)))
	rdb := opts.NewClient()
	pctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := ping(pctx, rdb); err != nil {
		rdb.Close()
		if ctx.Err() != nil {
			return nil, errStopped // a signal while connecting
		}
		return nil, &exitError{exitRedis, fmt.Errorf("cannot use Redis at %s: %s", config.Redact(cfg.RedisURL), redisReason(err, cfg.RedisURL))}
	}
	return rdb, nil
}

// connectTimeout bounds the first PING.
const connectTimeout = 5 * time.Second

// errStopped means a signal came before the command got going: it stops
// with exit code 0 and no message.
var errStopped = errors.New("stopped before it started")

// ping checks that Redis answers, and returns as soon as ctx is done even
// if go-redis is still dialing.
func ping(ctx context.Context, rdb redis.UniversalClient) error {
	done := make(chan error, 1)
	go func() { done <- rdb.Ping(ctx).Err() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// redisReason explains the usual ways a connection to rawURL fails, and
// what to do about each. The error's own text is scrubbed of the URL's
// credentials before it is looked at or quoted.
func redisReason(err error, rawURL string) string {
	msg := config.Scrub(err.Error(), rawURL)
	tls := strings.HasPrefix(rawURL, "rediss")
	userOnly := false
	if u, perr := url.Parse(rawURL); perr == nil && u.User != nil {
		_, hasPassword := u.User.Password()
		userOnly = !hasPassword && u.User.Username() != ""
	}
	switch {
	case strings.Contains(msg, "connection refused"):
		return "connection refused; is Redis running there? (topix dev starts one for trying things out)"
	case strings.Contains(msg, "no such file or directory") && strings.HasPrefix(rawURL, "unix:"):
		return "no socket at that path; is Redis listening on it (unixsocket in redis.conf)?"
	case strings.HasPrefix(msg, "WRONGPASS"), strings.Contains(msg, "invalid password"), strings.Contains(msg, "invalid username-password"),
		strings.HasPrefix(msg, "NOAUTH"):
		if userOnly {
			return "wrong user name or password: the URL has a user name and no password; if what is before the @ is the password, write redis://:PASSWORD@host:port/0"
		}
		if strings.HasPrefix(msg, "NOAUTH") {
			return "Redis wants a password; put it in the URL: redis://:PASSWORD@host:port/0"
		}
		return "wrong user name or password"
	case strings.HasPrefix(msg, "NOPERM"):
		return "the user lacks a permission: " + msg + "; the README lists what each command needs"
	case strings.Contains(msg, "first record does not look like a TLS handshake"), tls && strings.Contains(msg, "EOF"):
		return "this port does not speak TLS; use redis:// instead of rediss://, or the TLS port (tls-port in redis.conf)"
	case !tls && strings.Contains(msg, "connection reset by peer"):
		return "the server closed the connection at once; if it wants TLS, use rediss://"
	case strings.Contains(msg, "unknown command 'sentinel'"):
		return "that server is not a Sentinel; for a plain Redis use redis://, for Sentinel give the sentinels' addresses"
	case strings.Contains(msg, "cluster support disabled"):
		return "that server is not part of a Redis Cluster; use redis:// for it"
	case strings.Contains(msg, "certificate required"):
		return "Redis wants a client certificate (tls-auth-clients): give it with --tls-cert and --tls-key (" + msg + ")"
	case strings.Contains(msg, "unknown authority"):
		return "Redis's certificate is signed by an authority this machine does not trust: give that authority's certificate with --tls-ca (or SSL_CERT_FILE), or, only to try things out, skip_verify=true in the URL (" + msg + ")"
	case strings.Contains(msg, "x509: certificate is valid for"):
		return "Redis's certificate is for another name than the one dialed: connect by a name it has, or set it with --tls-server-name (" + msg + ")"
	case strings.Contains(msg, "x509:") || strings.Contains(msg, "tls:"):
		return "the TLS handshake failed: " + msg
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(msg, "i/o timeout"):
		within := "in time (" + msg + ")"
		if errors.Is(err, context.DeadlineExceeded) {
			within = "within " + connectTimeout.String()
		}
		if tls {
			return "no answer to the TLS handshake " + within + "; if this port is plain Redis (no TLS), use redis://"
		}
		return "no answer " + within + "; is the address right, and does a firewall let it through?"
	}
	return msg
}

// lookupEnv finds the variable name in env, as os.LookupEnv does in the
// process's own.
func lookupEnv(env []string, name string) (string, bool) {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// redisLogger routes go-redis's own messages (reconnects, pool warnings)
// to the debug log instead of raw lines on stderr.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...), "from", "go-redis")
}
