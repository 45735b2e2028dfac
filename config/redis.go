package config

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
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
	if o.Protocol != 0 && o.Protocol != 2 && o.Protocol != 3 {
		return nil, fmt.Errorf("invalid Redis URL %s: protocol=%d; use protocol=2 (RESP2) or protocol=3 (RESP3, the default)", Redact(rawURL), o.Protocol)
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
		return nil, fmt.Errorf("invalid Redis URL %s: %s; expected redis://[user:password@]host:port/db", Redact(rawURL), Scrub(urlReason(err), rawURL))
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
		return fmt.Errorf("invalid Redis URL %s: %s", Redact(rawURL), scrub(err.Error(), rawURL))
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

// Redact returns the URL with every credential it can carry replaced by
// "xxxxx", for logs and errors: the password of user:password@, a user
// name given without a password (often a password typed in the wrong
// place: redis://PASSWORD@host), and the values of query options whose
// name holds "password" (password=, sentinel_password=). A URL that does
// not parse is redacted the same way, as text.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return redactText(rawURL)
	}
	r := *u
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			r.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else if u.User.Username() != "" {
			r.User = url.User("xxxxx")
		}
	}
	if q := u.Query(); len(q) > 0 {
		changed := false
		for k := range q {
			if isSecretOption(k) {
				q[k] = []string{"xxxxx"}
				changed = true
			}
		}
		if changed {
			r.RawQuery = q.Encode()
		}
	}
	return r.String()
}

func isSecretOption(name string) bool { return strings.Contains(strings.ToLower(name), "password") }

// secretQuery finds the value of a password option in the text of a URL.
var secretQuery = regexp.MustCompile(`(?i)([?&][a-z_]*password=)[^&#]*`)

// redactText redacts a URL that url.Parse refused, from its text.
func redactText(rawURL string) string {
	s := secretQuery.ReplaceAllString(rawURL, "${1}xxxxx")
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		if strings.Contains(s, "@") {
			return "(unparseable URL)"
		}
		return s
	}
	if info, ok := textUserinfo(rest); ok {
		user, _, hasPassword := strings.Cut(info, ":")
		switch {
		case hasPassword && user != "":
			user += ":xxxxx"
		case hasPassword:
			user = ":xxxxx"
		default:
			user = "xxxxx"
		}
		rest = user + rest[len(info):]
	}
	return scheme + "://" + rest
}

// textUserinfo returns the user information at the start of rest, the
// text after "://" of a URL url.Parse refused: up to the last @ before the
// path or query.
func textUserinfo(rest string) (string, bool) {
	end := len(rest)
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		end = i
	}
	at := strings.LastIndex(rest[:end], "@")
	if at < 0 {
		return "", false
	}
	return rest[:at], true
}

// Secrets returns the credentials written in a Redis URL (as written and
// as decoded): what Redact hides, for scrubbing other messages.
func Secrets(rawURL string) []string {
	var out []string
	addSecret := func(s string) {
		if s == "" {
			return
		}
		out = append(out, s)
		if e := url.QueryEscape(s); e != s {
			out = append(out, e)
		}
	}
	if u, err := url.Parse(rawURL); err == nil {
		if u.User != nil {
			if pw, ok := u.User.Password(); ok {
				addSecret(pw)
			} else {
				addSecret(u.User.Username())
			}
		}
		for k, vs := range u.Query() {
			if isSecretOption(k) {
				for _, v := range vs {
					addSecret(v)
				}
			}
		}
		return out
	}
	// Unparseable: take what Redact would cut.
	for _, m := range secretQuery.FindAllStringSubmatchIndex(rawURL, -1) {
		addSecret(rawURL[m[3]:m[1]])
	}
	if _, rest, ok := strings.Cut(rawURL, "://"); ok {
		if info, ok := textUserinfo(rest); ok {
			user, pw, hasPassword := strings.Cut(info, ":")
			if hasPassword {
				addSecret(pw)
			} else {
				addSecret(user)
			}
		}
	}
	return out
}

// Scrub replaces every credential of rawURL that msg holds with "xxxxx".
func Scrub(msg, rawURL string) string {
	for _, s := range Secrets(rawURL) {
		msg = strings.ReplaceAll(msg, s, "xxxxx")
	}
	return msg
}

// urlReason keeps the reason of a url.Parse error and drops the URL it
// quotes, which holds the password.
func urlReason(err error) string {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err.Error()
	}
	return "cannot parse it"
}

// scrub removes the credentials of rawURL from a message of go-redis.
func scrub(msg, rawURL string) string {
	return strings.TrimPrefix(Scrub(msg, rawURL), "redis: ")
}

// ParseLevel reads a log level name in any case: debug, info, warn
// (or warning) or error, and Python's logging names too: critical and
// fatal are error, notset is debug.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug", "notset":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error", "critical", "fatal":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log_level %q: use debug, info, warn or error", s)
}
