package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Redis says how to reach Redis. Exactly one of its fields is set, with
// the options of go-redis's own URL parser for that form of URL, so that no
// option go-redis documents is lost on the way:
//
//	redis://[user:password@]host:port[/db][?options]     one server (rediss:// for TLS)
//	unix://[user:password@]/path/to/redis.sock[?db=N]    one server on a Unix socket
//	redis+cluster://[user:password@]host:port[?addr=host2:port2...]
//	                                                     a Redis Cluster (rediss+cluster:// for TLS)
//	redis+sentinel://[user:password@]host:port?master_name=NAME[&addr=...][&sentinel_username=U&sentinel_password=P]
//	                                                     the primary that Sentinel names (rediss+sentinel:// for TLS)
//
// The user and password before the @ are always those of the data nodes,
// the servers that hold the streams; a sentinel URL gives the sentinels'
// own in sentinel_username and sentinel_password. skip_verify=true, on
// every TLS form, skips the verification of the servers' certificates.
type Redis struct {
	Single   *redis.Options
	Cluster  *redis.ClusterOptions
	Failover *redis.FailoverOptions
}

// RedisOptions parses a Redis URL (see Redis). Errors never contain the
// password.
func RedisOptions(rawURL string) (*Redis, error) {
	r, err := parseRedisURL(rawURL)
	if err != nil {
		return nil, err
	}
	if p := *r.common().protocol; p != 0 && p != 2 && p != 3 {
		return nil, fmt.Errorf("invalid Redis URL %s: protocol=%d; use protocol=2 (RESP2) or protocol=3 (RESP3, the default)", Redact(rawURL), p)
	}
	return r, nil
}

// Prepare sets what topix needs of every client: poolSize connections
// unless the URL says how many, deadlines of contexts honoured by commands
// in flight (a stop's deadline then holds while Redis does not answer), and
// one dial per try (topix retries failed reads and acks itself, with
// backoff and one log line per outage; go-redis's five quick redials per
// command only make a refused connection take seconds to report).
func (r *Redis) Prepare(poolSize int) {
	c := r.common()
	if *c.poolSize == 0 {
		*c.poolSize = poolSize
	}
	if c.dialerRetries != nil && *c.dialerRetries == 0 {
		*c.dialerRetries = 1
	}
	*c.contextTimeout = true
}

// NewClient returns a client for the form of URL parsed.
func (r *Redis) NewClient() redis.UniversalClient {
	switch {
	case r.Cluster != nil:
		return redis.NewClusterClient(r.Cluster)
	case r.Failover != nil:
		return redis.NewFailoverClient(r.Failover)
	}
	return redis.NewClient(r.Single)
}

// IsTLS reports whether the URL asked for TLS.
func (r *Redis) IsTLS() bool { return *r.common().tls != nil }

// common points at the options every form has.
type commonOptions struct {
	protocol, poolSize *int
	dialerRetries      *int // nil where go-redis has no such option
	contextTimeout     *bool
	tls                **tls.Config
}

func (r *Redis) common() commonOptions {
	switch {
	case r.Cluster != nil:
		o := r.Cluster
		return commonOptions{&o.Protocol, &o.PoolSize, &o.DialerRetries, &o.ContextTimeoutEnabled, &o.TLSConfig}
	case r.Failover != nil:
		o := r.Failover
		return commonOptions{&o.Protocol, &o.PoolSize, &o.DialerRetries, &o.ContextTimeoutEnabled, &o.TLSConfig}
	}
	o := r.Single
	return commonOptions{&o.Protocol, &o.PoolSize, &o.DialerRetries, &o.ContextTimeoutEnabled, &o.TLSConfig}
}

// topixOptions are query options topix reads itself, on every form of URL,
// before go-redis's parser sees the rest: skip_verify (go-redis's cluster
// parser refuses it) and the sentinels' credentials.
var topixOptions = []string{"skip_verify", "sentinel_username", "sentinel_password"}

func parseRedisURL(rawURL string) (*Redis, error) {
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
	bad := func(err error) error {
		return fmt.Errorf("invalid Redis URL %s: %s", Redact(rawURL), scrub(err.Error(), rawURL))
	}
	plain := *u
	plain.Scheme = base
	q := u.Query()
	own := map[string]string{}
	for _, name := range topixOptions {
		if vs, ok := q[name]; ok {
			if len(vs) != 1 {
				return nil, fmt.Errorf("invalid Redis URL %s: %s is given %d times; give it once", Redact(rawURL), name, len(vs))
			}
			own[name] = vs[0]
			q.Del(name)
		}
	}
	plain.RawQuery = q.Encode()

	r := &Redis{}
	switch mode {
	case "":
		if r.Single, err = redis.ParseURL(plain.String()); err != nil {
			return nil, bad(err)
		}
	case "cluster":
		if r.Cluster, err = redis.ParseClusterURL(plain.String()); err != nil {
			return nil, bad(err)
		}
	case "sentinel":
		if r.Failover, err = parseSentinelURL(&plain, q, own); err != nil {
			return nil, bad(err)
		}
		if r.Failover.MasterName == "" {
			return nil, fmt.Errorf("invalid Redis URL %s: a sentinel URL needs ?master_name=NAME", Redact(rawURL))
		}
	default:
		return nil, fmt.Errorf("invalid Redis URL %s: unknown mode %q; use redis+cluster:// or redis+sentinel://", Redact(rawURL), mode)
	}
	if mode != "sentinel" {
		for _, name := range []string{"sentinel_username", "sentinel_password"} {
			if _, ok := own[name]; ok {
				return nil, fmt.Errorf("invalid Redis URL %s: %s is for redis+sentinel:// URLs only", Redact(rawURL), name)
			}
		}
	}
	if v, ok := own["skip_verify"]; ok {
		skip, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("invalid Redis URL %s: skip_verify=%s; use true or false", Redact(rawURL), v)
		}
		t := *r.common().tls
		if t == nil {
			return nil, fmt.Errorf("invalid Redis URL %s: skip_verify is for TLS, and this URL has none; use rediss://", Redact(rawURL))
		}
		t.InsecureSkipVerify = skip
	}
	if t := *r.common().tls; t != nil && mode != "" {
		// go-redis names the first address as the server of every node; a
		// node's certificate is for its own name: verify each against the
		// address it is dialed at (tls_server_name sets one name for all).
		t.ServerName = ""
	}
	return r, nil
}

// TLS are the settings of TLS connections to Redis beyond the URL: files
// in PEM format and the name the servers' certificates must carry.
type TLS struct {
	CA         string // certificates of the authorities that sign the servers'; default the system's (SSL_CERT_FILE)
	Cert, Key  string // this client's certificate and key, for tls-auth-clients
	ServerName string // the name the servers' certificates are checked against; default the address dialed
}

func (t TLS) set() bool { return t != TLS{} }

// SetTLS applies t to the TLS connections of r. It refuses t for a URL
// without TLS, and explains a file it cannot use.
func (r *Redis) SetTLS(t TLS) error {
	if !t.set() {
		return nil
	}
	cfg := *r.common().tls
	if cfg == nil {
		key := "tls_ca"
		switch {
		case t.Cert != "":
			key = "tls_cert"
		case t.Key != "":
			key = "tls_key"
		case t.ServerName != "":
			key = "tls_server_name"
		case t.CA != "":
		}
		return bad(key, "%s is set, but the Redis URL does not use TLS: use rediss://, rediss+cluster:// or rediss+sentinel://", key)
	}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return bad("tls_ca", "tls_ca: cannot read %s: %s", t.CA, fileReason(err))
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return bad("tls_ca", "tls_ca: %s holds no certificate in PEM format (-----BEGIN CERTIFICATE-----)", t.CA)
		}
		cfg.RootCAs = pool
	}
	switch {
	case t.Cert != "" && t.Key != "":
		pair, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				key := "tls_cert"
				if pe.Path == t.Key {
					key = "tls_key"
				}
				return bad(key, "%s: cannot read %s: %s", key, pe.Path, fileReason(pe))
			}
			return bad("tls_cert", "tls_cert %s and tls_key %s: %s", t.Cert, t.Key, strings.TrimPrefix(err.Error(), "tls: "))
		}
		cfg.Certificates = []tls.Certificate{pair}
	case t.Cert != "":
		return bad("tls_key", "tls_cert is set without tls_key: give the client certificate's private key too")
	case t.Key != "":
		return bad("tls_cert", "tls_key is set without tls_cert: give the client certificate too")
	}
	if t.ServerName != "" {
		cfg.ServerName = t.ServerName
	}
	return nil
}

// fileReason is why a file could not be opened, without the path the
// error repeats.
func fileReason(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// parseSentinelURL parses a redis+sentinel:// URL (already without its
// topix options, in own) with go-redis's parser, and puts each credential
// where topix documents it: the user and password before the @ for the
// data nodes, sentinel_username and sentinel_password for the sentinels.
// go-redis's parser gives the userinfo to the sentinels and takes the
// data nodes' from username= and password=; those still work, but not
// together with a userinfo.
func parseSentinelURL(u *url.URL, q url.Values, own map[string]string) (*redis.FailoverOptions, error) {
	if u.User != nil && (q.Has("username") || q.Has("password")) {
		return nil, errors.New("the data nodes' credentials are given twice, before the @ and as username=/password=; give them once")
	}
	o, err := redis.ParseFailoverURL(u.String())
	if err != nil {
		return nil, err
	}
	if u.User != nil {
		o.Username, o.Password = o.SentinelUsername, o.SentinelPassword
	}
	o.SentinelUsername, o.SentinelPassword = own["sentinel_username"], own["sentinel_password"]
	return o, nil
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
