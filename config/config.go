// Package config builds topix's configuration from, in rising precedence,
// built-in defaults, a config file (TOML or YAML), TOPIX_* environment
// variables and command-line flags, and turns the Redis URL into go-redis
// client options.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/toml/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"

	"github.com/topix-dev/topix/engine"
)

// EnvPrefix starts the name of every environment variable topix reads:
// TOPIX_REDIS_URL sets redis_url, TOPIX_CONCURRENCY sets concurrency.
const EnvPrefix = "TOPIX_"

// DefaultRedisURL is the Redis topix talks to when nothing else is said.
const DefaultRedisURL = "redis://localhost:6379/0"

// Config is the whole configuration. The koanf tag of each field is its key
// in a config file; the flag is the key with dashes (redis_url ->
// --redis-url) and the environment variable is the key in capitals after
// EnvPrefix (TOPIX_REDIS_URL).
type Config struct {
	RedisURL string `koanf:"redis_url"`
	// TLS beyond the URL's rediss:// (see TLS).
	TLSCA         string `koanf:"tls_ca"`          // CA certificates (PEM) that sign Redis's
	TLSCert       string `koanf:"tls_cert"`        // client certificate (PEM), for tls-auth-clients
	TLSKey        string `koanf:"tls_key"`         // its private key (PEM)
	TLSServerName string `koanf:"tls_server_name"` // name Redis's certificates must carry
	LogFormat     string `koanf:"log_format"`      // text or json
	LogLevel      string `koanf:"log_level"`       // debug, info, warn or error

	// Consumer.
	Concurrency     int           `koanf:"concurrency"`      // workers, each with its own Starlark thread
	Batch           int           `koanf:"batch"`            // COUNT of each XREADGROUP; 0 picks one from Concurrency
	BatchBytes      ByteSize      `koanf:"batch_bytes"`      // bytes of entries held in memory, read and not yet processed
	Block           time.Duration `koanf:"block"`            // BLOCK of each XREADGROUP
	Start           string        `koanf:"start"`            // where a new group starts: 0, $ or an entry id
	Name            string        `koanf:"name"`             // consumer name; empty means <hostname>-<pid>
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"` // how long a stop may take to finish calls

	// Reliability.
	ClaimIdle    time.Duration `koanf:"claim_idle"`    // claim entries idle this long in any pending list
	MaxAttempts  int           `koanf:"max_attempts"`  // deliveries before an entry is dead-lettered
	RetryBackoff time.Duration `koanf:"retry_backoff"` // wait before the second attempt; doubles, capped at 1m
	DeadLetter   string        `koanf:"dead_letter"`   // dead-letter stream; empty means <stream>:dead
	PruneIdle    time.Duration `koanf:"prune_idle"`    // remove other consumers idle this long with nothing pending; 0: never
	WorkerNice   int           `koanf:"worker_nice"`   // run the calls this much lower in CPU priority (Linux); 0: same
	WaitReplicas int           `koanf:"wait_replicas"` // replicas that must have emits and dead letters (consumer) or entries (emit) before they count; 0: none
	WaitTimeout  time.Duration `koanf:"wait_timeout"`  // how long to wait for them
	ExactlyOnce  bool          `koanf:"exactly_once"`  // add a call's emits and ack its entry in one script, only while it is pending

	// Observability (consumer).
	HTTP      string `koanf:"http"`       // address to serve /metrics, /healthz, /readyz on; empty: none
	HTTPDebug bool   `koanf:"http_debug"` // also serve /debug/pprof/
	Stats     bool   `koanf:"stats"`      // keep the records topix stats reads (flag: --no-stats)

	// Scripts (consumer, run, check).
	Bytes       bool          `koanf:"bytes"`        // data as a dict of bytes, not str
	MaxSteps    int64         `koanf:"max_steps"`    // Starlark steps one call may take
	CallTimeout time.Duration `koanf:"call_timeout"` // wall-clock time one call may take
	MaxMemory   ByteSize      `koanf:"max_memory"`   // heap above which the calls in flight are cancelled; 0: DefaultMaxMemory
	Reload      bool          `koanf:"reload"`       // reload the script when its files change (flag: --no-reload)

	// Emit.
	MaxLen int64 `koanf:"maxlen"` // trim the stream to about this many entries; 0 does not trim
}

// Defaults returns the configuration used when nothing else is set.
func Defaults() Config {
	return Config{
		RedisURL:        DefaultRedisURL,
		LogFormat:       "text",
		LogLevel:        "info",
		Concurrency:     runtime.NumCPU(),
		Batch:           0,
		BatchBytes:      16 << 20,
		Block:           time.Second,
		Start:           "0",
		ShutdownTimeout: 30 * time.Second,
		ClaimIdle:       time.Minute,
		MaxAttempts:     5,
		RetryBackoff:    time.Second,
		WorkerNice:      10,
		WaitTimeout:     time.Second,
		Stats:           true,
		MaxSteps:        100_000_000,
		CallTimeout:     30 * time.Second,
		Reload:          true,
	}
}

// Keys returns every configuration key, in the order of Config's fields.
func Keys() []string {
	t := reflect.TypeFor[Config]()
	keys := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		keys = append(keys, t.Field(i).Tag.Get("koanf"))
	}
	return keys
}

// FlagName returns the command-line flag that sets key.
func FlagName(key string) string { return strings.ReplaceAll(key, "_", "-") }

// negatedFlags are flags that set a key to false: --no-reload sets reload.
var negatedFlags = map[string]string{"no-reload": "reload", "no-stats": "stats"}

// aliasFlags are other names of a key's flag: --consumer, the original
// Topix's, sets name.
var aliasFlags = map[string]string{"consumer": "name"}

// Load builds the configuration: Defaults, then the config file at path (if
// path is not empty), then the TOPIX_* variables of environ, then the flags
// of fs that were set on the command line. fs may hold other flags too;
// only those named after a key (see FlagName) count. The result is
// validated.
func Load(path string, environ []string, fs *pflag.FlagSet) (Config, error) {
	k := koanf.New(".")
	if err := k.Load(confmap.Provider(toMap(Defaults()), "."), nil); err != nil {
		return Config{}, err
	}
	from := map[string]string{} // key -> where its value came from
	if path != "" {
		if err := loadFile(k, path, from); err != nil {
			return Config{}, err
		}
	}
	known := Keys()
	envProvider := env.Provider(".", env.Opt{
		Prefix:      EnvPrefix,
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(name, value string) (string, any) {
			key := strings.ToLower(strings.TrimPrefix(name, EnvPrefix))
			if !slices.Contains(known, key) || value == "" {
				// TOPIX_* variables of the user's own are not ours, and an
				// empty variable counts as unset, as in most tools.
				return "", nil
			}
			from[key] = name
			return key, value
		},
	})
	if err := k.Load(envProvider, nil); err != nil {
		return Config{}, err
	}
	if fs != nil {
		for alias, key := range aliasFlags {
			a, b := fs.Lookup(alias), fs.Lookup(FlagName(key))
			if a != nil && b != nil && a.Changed && b.Changed && a.Value.String() != b.Value.String() {
				return Config{}, fmt.Errorf("--%s %q and --%s %q disagree; --%s is another name of --%s: give one", alias, a.Value, FlagName(key), b.Value, alias, FlagName(key))
			}
		}
		flags := posflag.ProviderWithFlag(fs, ".", k, func(f *pflag.Flag) (string, any) {
			if !f.Changed {
				return "", nil
			}
			if key, ok := negatedFlags[f.Name]; ok {
				on, _ := posflag.FlagVal(fs, f).(bool)
				from[key] = "--" + f.Name
				return key, !on
			}
			key := strings.ReplaceAll(f.Name, "-", "_")
			if alias, ok := aliasFlags[f.Name]; ok {
				key = alias
			}
			if !slices.Contains(known, key) {
				return "", nil
			}
			from[key] = "--" + f.Name
			return key, posflag.FlagVal(fs, f)
		})
		if err := k.Load(flags, nil); err != nil {
			return Config{}, err
		}
	}

	var c Config
	if err := decode(k, &c, from); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			src := from[fe.Key]
			if src == "" {
				src = "the default"
			}
			return Config{}, fmt.Errorf("%s [set by %s]", fe.Msg, src)
		}
		return Config{}, err
	}
	return c, nil
}

func loadFile(k *koanf.Koanf, path string, from map[string]string) error {
	var parser koanf.Parser
	switch strings.ToLower(filepath.Ext(path)) {
	case ".toml":
		parser = toml.Parser()
	case ".yaml", ".yml":
		parser = yaml.Parser()
	default:
		return fmt.Errorf("config file %s: unknown format; name it *.toml, *.yaml or *.yml", path)
	}
	if st, err := os.Stat(path); err != nil {
		return fmt.Errorf("config file: %w", err)
	} else if st.IsDir() {
		return fmt.Errorf("config file %s is a directory; give a .toml or .yaml file", path)
	}
	fk := koanf.New(".")
	if err := fk.Load(file.Provider(path), parser); err != nil {
		return fmt.Errorf("config file %s: %s", path, oneLine(err))
	}
	known := Keys()
	for _, key := range fk.Keys() {
		if !slices.Contains(known, key) {
			return fmt.Errorf("config file %s: unknown key %q; the keys are %s", path, key, strings.Join(known, ", "))
		}
		from[key] = "config file " + path
	}
	return k.Merge(fk)
}

// Bounds of the values topix accepts: beyond them a value cannot work,
// or costs more than any deployment needs.
const (
	// MaxConcurrency bounds the workers. With --worker-nice each holds an
	// OS thread for its life, and Go stops the process past 10,000
	// threads ("thread exhaustion"); ThreadLimit lowers it further.
	MaxConcurrency = 4096
	MaxBatch       = 10_000
	MaxAttempts    = 1000
	MinClaimIdle   = time.Second // the lease renews every claim_idle/3: it needs room for a slow round trip
	MaxBlock       = time.Minute // a stop waits for the read in flight
	MaxDuration    = 7 * 24 * time.Hour
	// MaxWaitReplicas bounds wait_replicas: a primary with more replicas
	// than that is not one to wait on each of.
	MaxWaitReplicas = 100
)

// FieldError is a value of one key that topix cannot work with. Load adds
// where the value came from (a flag, a variable, a config file).
type FieldError struct {
	Key string
	Msg string
}

func (e *FieldError) Error() string { return e.Msg }

func bad(key, format string, args ...any) error {
	return &FieldError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Validate reports the first value that topix cannot work with.
func (c Config) Validate() error {
	if _, err := c.Redis(); err != nil {
		return err
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		hint := ""
		if strings.Contains(c.LogFormat, "%(") {
			hint = " (topix's log format is a style, not a Python logging format string)"
		}
		return bad("log_format", "log_format %q: use text or json%s", c.LogFormat, hint)
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		return &FieldError{Key: "log_level", Msg: err.Error()}
	}
	if limit := min(MaxConcurrency, ThreadLimit()/2); c.Concurrency < 1 || c.Concurrency > limit {
		return bad("concurrency", "concurrency %d: use 1 to %d workers (each may hold an OS thread, and this system allows %d threads)", c.Concurrency, limit, ThreadLimit())
	}
	if c.Batch < 0 || c.Batch > MaxBatch {
		return bad("batch", "batch %d: use 0 (sized to the workers) or up to %d entries per read", c.Batch, MaxBatch)
	}
	if c.BatchBytes < 64<<10 || c.BatchBytes > 1<<30 {
		return bad("batch_bytes", "batch_bytes %s: use 64KiB to 1GiB, like 16MiB (an entry bigger than it is still read, alone)", c.BatchBytes)
	}
	if c.Block < time.Millisecond || c.Block > MaxBlock {
		return bad("block", "block %s: use 1ms to %s (the read wait must be finite and short, so topix can stop)", c.Block, MaxBlock)
	}
	if !validStart(c.Start) {
		return bad("start", "start %q: use 0 (the whole stream), $ (only new entries) or an entry id like 1700000000000-0", c.Start)
	}
	if c.ShutdownTimeout <= 0 || c.ShutdownTimeout > MaxDuration {
		return bad("shutdown_timeout", "shutdown_timeout %s: use a positive duration up to %s, like 30s", c.ShutdownTimeout, MaxDuration)
	}
	if c.ClaimIdle < MinClaimIdle || c.ClaimIdle > MaxDuration {
		return bad("claim_idle", "claim_idle %s: use %s to %s, like 60s (the entries a consumer works on are renewed every claim_idle/3; below %s a slow round trip lets another consumer run them too)",
			c.ClaimIdle, MinClaimIdle, MaxDuration, MinClaimIdle)
	}
	if c.MaxAttempts < 1 || c.MaxAttempts > MaxAttempts {
		return bad("max_attempts", "max_attempts %d: use 1 (no retries) to %d", c.MaxAttempts, MaxAttempts)
	}
	if c.RetryBackoff <= 0 || c.RetryBackoff > MaxDuration {
		return bad("retry_backoff", "retry_backoff %s: use a positive duration up to %s, like 1s", c.RetryBackoff, MaxDuration)
	}
	if c.PruneIdle < 0 || c.PruneIdle > MaxDuration {
		return bad("prune_idle", "prune_idle %s: use 0 (never) or a positive duration up to %s", c.PruneIdle, MaxDuration)
	}
	if minimum := engine.MinPruneIdle(c.Block); c.PruneIdle > 0 && c.PruneIdle < minimum {
		return bad("prune_idle", "prune_idle %s cannot tell a consumer waiting in a read from a dead one: use 0 (never) or at least %s (3 × block %s, and 1s), and more than every consumer's block",
			c.PruneIdle, minimum, c.Block)
	}
	if c.WorkerNice < 0 || c.WorkerNice > 19 {
		return bad("worker_nice", "worker_nice %d: use 0 (same priority as the rest of topix) to 19 (the lowest)", c.WorkerNice)
	}
	if c.HTTP != "" {
		if _, port, err := net.SplitHostPort(c.HTTP); err != nil || port == "" {
			return bad("http", "http %q: give an address with a port, like 127.0.0.1:9090 (or :9090 for every interface)", c.HTTP)
		}
	}
	if c.WaitReplicas < 0 || c.WaitReplicas > MaxWaitReplicas {
		return bad("wait_replicas", "wait_replicas %d: use 0 (do not wait) to %d replicas", c.WaitReplicas, MaxWaitReplicas)
	}
	if c.WaitTimeout < time.Millisecond || c.WaitTimeout > time.Minute {
		return bad("wait_timeout", "wait_timeout %s: use 1ms to 1m, like 1s (WAIT with no timeout would block for ever)", c.WaitTimeout)
	}
	if c.MaxSteps < 1 {
		return bad("max_steps", "max_steps %d: use 1 or more (the default is %d)", c.MaxSteps, Defaults().MaxSteps)
	}
	if c.CallTimeout <= 0 || c.CallTimeout > MaxDuration {
		return bad("call_timeout", "call_timeout %s: use a positive duration up to %s, like 30s", c.CallTimeout, MaxDuration)
	}
	if c.MaxMemory != 0 && c.MaxMemory < MinMaxMemory {
		return bad("max_memory", "max_memory %s: use at least %s (topix itself needs some), or leave it unset for half of the memory available", c.MaxMemory, MinMaxMemory)
	}
	if c.MaxLen < 0 {
		return bad("maxlen", "maxlen %d: use 0 (no trimming) or more", c.MaxLen)
	}
	return nil
}

// Redis returns how to reach Redis: the URL's options with the TLS keys.
func (c Config) Redis() (*Redis, error) {
	r, err := RedisOptions(c.RedisURL)
	if err != nil {
		return nil, &FieldError{Key: "redis_url", Msg: err.Error()}
	}
	if err := r.SetTLS(TLS{CA: c.TLSCA, Cert: c.TLSCert, Key: c.TLSKey, ServerName: c.TLSServerName}); err != nil {
		return nil, err
	}
	return r, nil
}

// MinMaxMemory is the lowest memory ceiling topix accepts: below it, the
// heap of the consumer itself (read buffers, entries waiting for a worker)
// would cancel calls that allocate nothing.
const MinMaxMemory = ByteSize(64 << 20)

// MemoryCeiling returns MaxMemory, or DefaultMaxMemory when it is unset,
// and where the figure came from.
func (c Config) MemoryCeiling() (ByteSize, string) {
	if c.MaxMemory != 0 {
		return c.MaxMemory, "max_memory"
	}
	return DefaultMaxMemory()
}

// BatchSize returns the XREADGROUP COUNT: Batch when set, or else enough
// entries to keep every worker busy while the next read is in flight.
func (c Config) BatchSize() int {
	if c.Batch > 0 {
		return c.Batch
	}
	return max(100, 20*c.Concurrency)
}

// ConsumerName returns Name, or <hostname>-<pid> when it is empty.
func (c Config) ConsumerName() string {
	if c.Name != "" {
		return c.Name
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "topix"
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

func validStart(s string) bool {
	if s == "0" || s == "$" {
		return true
	}
	ms, seq, found := strings.Cut(s, "-")
	return digits(ms) && (!found || digits(seq))
}

// digits reports whether s is a number Redis takes as part of an entry id:
// digits only, at most 2^64-1.
func digits(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil && s != "" && s[0] != '+'
}

// toDuration reads a duration, which must carry its unit: "block = 2"
// would otherwise mean two nanoseconds. Errors do not repeat the value.
func toDuration(raw any) (time.Duration, error) {
	switch v := raw.(type) {
	case time.Duration:
		return v, nil
	case string:
		if d, err := time.ParseDuration(v); err == nil {
			return d, nil
		}
		return 0, errors.New("is not a duration; write it with a unit, like 2s or 500ms")
	}
	return 0, errors.New(`is not a duration; write it as a string with a unit, like "2s"`)
}

// decode sets every field of c from k, one key at a time, so that a value
// of the wrong type is one error that names the key, the value and where
// it came from. Values are taken as they are written: a number where a
// whole number is wanted must be one (2.7 is refused, not cut to 2), a
// boolean is not a number, and the text of a variable or flag is parsed
// without trimming.
func decode(k *koanf.Koanf, c *Config, from map[string]string) error {
	v := reflect.ValueOf(c).Elem()
	t := v.Type()
	for i := range t.NumField() {
		key := t.Field(i).Tag.Get("koanf")
		raw := k.Get(key)
		val, err := convert(raw, t.Field(i).Type)
		if err != nil {
			src := from[key]
			if src == "" {
				src = "the default"
			}
			return fmt.Errorf("%s %s: %s [set by %s]", key, quoteValue(raw), err, src)
		}
		v.Field(i).Set(val)
	}
	return nil
}

func quoteValue(raw any) string {
	if s, ok := raw.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(raw)
}

// convert turns a value read from a file, a variable or a flag into the
// type of a Config field.
func convert(raw any, to reflect.Type) (reflect.Value, error) {
	switch to {
	case reflect.TypeFor[time.Duration]():
		d, err := toDuration(raw)
		return reflect.ValueOf(d), err
	case reflect.TypeFor[ByteSize]():
		s, err := toSize(raw)
		return reflect.ValueOf(s), err
	}
	switch to.Kind() {
	case reflect.String:
		if s, ok := raw.(string); ok {
			return reflect.ValueOf(s).Convert(to), nil
		}
		return reflect.Value{}, errors.New("is not a string; quote it")
	case reflect.Bool:
		switch b := raw.(type) {
		case bool:
			return reflect.ValueOf(b), nil
		case string:
			if v, err := strconv.ParseBool(b); err == nil {
				return reflect.ValueOf(v), nil
			}
		}
		return reflect.Value{}, errors.New("is not a boolean; use true or false")
	case reflect.Int, reflect.Int64:
		var n int64
		switch x := raw.(type) {
		case int:
			n = int64(x)
		case int64:
			n = x
		case float64:
			if x != float64(int64(x)) {
				return reflect.Value{}, errors.New("is not a whole number")
			}
			n = int64(x)
		case string:
			v, err := strconv.ParseInt(x, 10, 64)
			if err != nil {
				return reflect.Value{}, errors.New("is not a whole number (write digits only, like 4)")
			}
			n = v
		default:
			return reflect.Value{}, errors.New("is not a whole number")
		}
		out := reflect.New(to).Elem()
		if out.OverflowInt(n) {
			return reflect.Value{}, errors.New("is too large")
		}
		out.SetInt(n)
		return out, nil
	}
	return reflect.Value{}, fmt.Errorf("cannot be read as %s", to)
}

func toMap(c Config) map[string]any {
	m := map[string]any{}
	v := reflect.ValueOf(c)
	t := v.Type()
	for i := range t.NumField() {
		m[t.Field(i).Tag.Get("koanf")] = v.Field(i).Interface()
	}
	return m
}

// oneLine flattens the multi-line errors of the decoders into one line.
func oneLine(err error) string {
	var lines []string
	for _, l := range strings.Split(err.Error(), "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "*"))
		if l != "" && !strings.HasSuffix(l, "error(s) decoding:") && !strings.HasPrefix(l, "decoding failed due to") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}

var errNoURL = errors.New("the Redis URL is empty; set TOPIX_REDIS_URL or --redis-url, e.g. redis://localhost:6379/0")
