package config

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// RedisOptions turns a Redis URL into options for go-redis's universal
// client, so one setting reaches a single server, a cluster or a sentinel-
// managed primary:
//
//	redis://[user:password@]host:port[/db][?options]    one server (rediss:// for TLS)
//	unix://[user:password@]/path/to/redis.sock[?db=N]   one server on a Unix socket
//	redis+cluster://host:port[?addr=host2:port2...]      a Redis Cluster (rediss+cluster:// for TLS)
//	redis+sentinel://host:port?master_name=NAME[&addr=...] through Sentinel
//
// The query options are those of go-redis (dial_timeout, read_timeout,
// protocol, ...). Errors never contain the password.
func RedisOptions(rawURL string) (*redis.UniversalOptions, error) {
	o, err := parseRedisURL(rawURL)
	if err != nil {
		return nil, err
	}
	if o.DialerRetries == 0 {
		// topix retries failed reads and acks itself, with backoff and one
		// log line per outage; go-redis's five quick redials per command
		// only make a refused connection take seconds to report.
		o.DialerRetries = 1
	}
	return o, nil
}

func parseRedisURL(rawURL string) (*redis.UniversalOptions, error) {
	if strings.TrimSpace(rawURL) == "" {
		return nil, errNoURL
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("invalid Redis URL %s: %s; expected redis://[user:password@]host:port/db", Redact(rawURL), urlReason(err))
	}
	base, mode, _ := strings.Cut(u.Scheme, "+")
	if base != "redis" && base != "rediss" && !(base == "unix" && mode == "") {
		return nil, fmt.Errorf("invalid Redis URL %s: unknown scheme %q; use redis://, rediss://, unix://, redis+cluster:// or redis+sentinel://", Redact(rawURL), u.Scheme)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("invalid Redis URL %s: port %s is not a number from 1 to 65535", Redact(rawURL), p)
		}
	}
	plain := *u
	plain.Scheme = base
	bad := func(err error) error {
		return fmt.Errorf("invalid Redis URL %s: %s", Redact(rawURL), scrub(err.Error(), u))
	}

	switch mode {
	case "":
		o, err := redis.ParseURL(plain.String())
		if err != nil {
			return nil, bad(err)
		}
		uo := &redis.UniversalOptions{
			Addrs:           []string{o.Addr},
			DB:              o.DB,
			Protocol:        o.Protocol,
			Username:        o.Username,
			Password:        o.Password,
			MaxRetries:      o.MaxRetries,
			MinRetryBackoff: o.MinRetryBackoff,
			MaxRetryBackoff: o.MaxRetryBackoff,
			DialTimeout:     o.DialTimeout,
			ReadTimeout:     o.ReadTimeout,
			WriteTimeout:    o.WriteTimeout,
			PoolFIFO:        o.PoolFIFO,
			PoolSize:        o.PoolSize,
			PoolTimeout:     o.PoolTimeout,
			MinIdleConns:    o.MinIdleConns,
			MaxIdleConns:    o.MaxIdleConns,
			MaxActiveConns:  o.MaxActiveConns,
			ConnMaxIdleTime: o.ConnMaxIdleTime,
			ConnMaxLifetime: o.ConnMaxLifetime,
			TLSConfig:       o.TLSConfig,
			ClientName:      o.ClientName,
		}
		if o.Network == "unix" {
			path := o.Addr
			uo.Dialer = func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			}
		}
		return uo, nil
	case "cluster":
		o, err := redis.ParseClusterURL(plain.String())
		if err != nil {
			return nil, bad(err)
		}
		return &redis.UniversalOptions{
			Addrs:           o.Addrs,
			IsClusterMode:   true,
			Protocol:        o.Protocol,
			Username:        o.Username,
			Password:        o.Password,
			MaxRetries:      o.MaxRetries,
			MinRetryBackoff: o.MinRetryBackoff,
			MaxRetryBackoff: o.MaxRetryBackoff,
			DialTimeout:     o.DialTimeout,
			ReadTimeout:     o.ReadTimeout,
			WriteTimeout:    o.WriteTimeout,
			PoolSize:        o.PoolSize,
			TLSConfig:       o.TLSConfig,
			ClientName:      o.ClientName,
			MaxRedirects:    o.MaxRedirects,
		}, nil
	case "sentinel":
		o, err := redis.ParseFailoverURL(plain.String())
		if err != nil {
			return nil, bad(err)
		}
		if o.MasterName == "" {
			return nil, fmt.Errorf("invalid Redis URL %s: a sentinel URL needs ?master_name=NAME", Redact(rawURL))
		}
		return &redis.UniversalOptions{
			Addrs:            o.SentinelAddrs,
			MasterName:       o.MasterName,
			SentinelUsername: o.SentinelUsername,
			SentinelPassword: o.SentinelPassword,
			DB:               o.DB,
			Protocol:         o.Protocol,
			Username:         o.Username,
			Password:         o.Password,
			MaxRetries:       o.MaxRetries,
			DialTimeout:      o.DialTimeout,
			ReadTimeout:      o.ReadTimeout,
			WriteTimeout:     o.WriteTimeout,
			PoolSize:         o.PoolSize,
			TLSConfig:        o.TLSConfig,
			ClientName:       o.ClientName,
		}, nil
	}
	return nil, fmt.Errorf("invalid Redis URL %s: unknown mode %q; use redis+cluster:// or redis+sentinel://", Redact(rawURL), mode)
}

// Redact returns the URL with its password replaced by "xxxxx", for logs
// and errors. A URL that does not parse is shown as its scheme and host only
// when they can be found, and as "(unparseable URL)" otherwise.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err == nil {
		return u.Redacted()
	}
	// url.Parse failed; cut anything between "://" and the last "@".
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		if strings.Contains(rawURL, "@") {
			return "(unparseable URL)"
		}
		return rawURL
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		rest = "xxxxx@" + rest[at+1:]
	}
	return scheme + "://" + rest
}

// urlReason keeps the reason of a url.Parse error and drops the URL it
// quotes, which holds the password.
func urlReason(err error) string {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err.Error()
	}
	return "cannot parse it"
}

// scrub removes the password of u from a message of go-redis.
func scrub(msg string, u *url.URL) string {
	if pw, ok := u.User.Password(); ok && pw != "" {
		msg = strings.ReplaceAll(msg, pw, "xxxxx")
	}
	return strings.TrimPrefix(msg, "redis: ")
}

// ParseLevel reads a log level name in any case: debug, info, warn
// (or warning) or error.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log_level %q: use debug, info, warn or error", s)
}
