package config_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/topix-dev/topix/config"
)

func TestRedisURLForms(t *testing.T) {
	for _, tc := range []struct {
		url, kind, addrs string
		db               int
		tls              bool
		user, pass       string
	}{
		{url: "redis://localhost:6379/0", kind: "single", addrs: "localhost:6379"},
		{url: "redis://:pw@10.0.0.1:6380/3", kind: "single", addrs: "10.0.0.1:6380", db: 3, pass: "pw"},
		{url: "rediss://u:pw@cache:6379", kind: "single", addrs: "cache:6379", tls: true, user: "u", pass: "pw"},
		{url: "unix:///run/redis.sock?db=2", kind: "single", addrs: "/run/redis.sock", db: 2},
		{url: "redis+cluster://u:pw@n1:7000?addr=n2:7001&addr=n3:7002", kind: "cluster", addrs: "n1:7000 n2:7001 n3:7002", user: "u", pass: "pw"},
		{url: "rediss+cluster://n1:7000", kind: "cluster", addrs: "n1:7000", tls: true},
		{url: "redis+sentinel://s1:26379?master_name=main&addr=s2:26379", kind: "failover", addrs: "s1:26379 s2:26379"},
		{url: "rediss+sentinel://app:pw@s1:26379/4?master_name=main", kind: "failover", addrs: "s1:26379", db: 4, tls: true, user: "app", pass: "pw"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			r, err := config.RedisOptions(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			var kind, addrs, user, pass string
			var db int
			var tls bool
			switch {
			case r.Single != nil:
				o := r.Single
				kind, addrs, db, tls, user, pass = "single", o.Addr, o.DB, o.TLSConfig != nil, o.Username, o.Password
			case r.Cluster != nil:
				o := r.Cluster
				kind, addrs, tls, user, pass = "cluster", strings.Join(o.Addrs, " "), o.TLSConfig != nil, o.Username, o.Password
			case r.Failover != nil:
				o := r.Failover
				kind, addrs, db, tls, user, pass = "failover", strings.Join(o.SentinelAddrs, " "), o.DB, o.TLSConfig != nil, o.Username, o.Password
			}
			got := fmt.Sprint(kind, addrs, db, tls, user, pass)
			if want := fmt.Sprint(tc.kind, tc.addrs, tc.db, tc.tls, tc.user, tc.pass); got != want {
				t.Errorf("got %s, want %s", got, want)
			}
		})
	}
}

// optionValues are the query options of go-redis's URL parsers (all
// three: ParseURL, ParseClusterURL and ParseFailoverURL) and topix's own,
// each with a value that is not its default.
var optionValues = map[string]string{
	"addr": "other:7000", "client_name": "topix-test", "conn_max_idle_time": "7s", "conn_max_lifetime": "7s",
	"conn_max_lifetime_jitter": "1s", "context_timeout_enabled": "true", "db": "3", "dial_timeout": "7s",
	"dialer_retries": "7", "dialer_retry_timeout": "7s", "disableIdentity": "true", "failing_timeout_seconds": "7",
	"identitySuffix": "x", "idle_timeout": "7s", "master_name": "other", "max_active_conns": "7", "max_conn_age": "7s",
	"max_concurrent_dials": "7", "max_idle_conns": "7", "max_redirects": "7", "max_retries": "7", "max_retry_backoff": "7s",
	"min_idle_conns": "7", "min_retry_backoff": "7ms", "password": "pw", "pipeline_pool_size": "7",
	"pipeline_read_buffer_size": "7000", "pipeline_write_buffer_size": "7000", "pool_fifo": "true", "pool_size": "7",
	"pool_timeout": "7s", "protocol": "2", "read_only": "true", "read_timeout": "7s", "replica_only": "true",
	"route_by_latency": "true", "route_by_latency_tolerance": "7ms", "route_randomly": "true", "skip_verify": "true",
	"unstable_resp3": "true", "use_disconnected_replicas": "true", "username": "u", "write_timeout": "7s",
	"sentinel_username": "su", "sentinel_password": "spw",
}

// refused lists the options a URL form cannot have, by what it means
// there: they must be refused with a message naming them, never dropped.
var refused = map[string][]string{
	"single": {"addr", "master_name", "max_redirects", "read_only", "route_by_latency", "route_by_latency_tolerance",
		"route_randomly", "replica_only", "use_disconnected_replicas", "dialer_retries", "dialer_retry_timeout",
		"context_timeout_enabled", "disableIdentity", "identitySuffix", "unstable_resp3", "failing_timeout_seconds",
		"username", "password", "sentinel_username", "sentinel_password"},
	"cluster": {"db", "master_name", "replica_only", "use_disconnected_replicas", "context_timeout_enabled",
		"disableIdentity", "identitySuffix", "unstable_resp3", "idle_timeout", "max_conn_age", "username", "password",
		"sentinel_username", "sentinel_password"},
	"failover": {"max_redirects", "read_only", "idle_timeout", "max_conn_age", "failing_timeout_seconds"},
}

// Every option on every URL form: either it reaches the client's options
// (they differ from those of the same URL without it) or the URL is
// refused with a message that names it.
func TestEveryOptionOnEveryURLForm(t *testing.T) {
	forms := map[string][]string{
		"single":   {"redis://h:6379/0", "rediss://h:6379/0", "unix:///run/redis.sock"},
		"cluster":  {"redis+cluster://h:7000", "rediss+cluster://h:7000"},
		"failover": {"redis+sentinel://h:26379?master_name=m", "rediss+sentinel://h:26379?master_name=m"},
	}
	for kind, urls := range forms {
		for _, form := range urls {
			for name, value := range optionValues {
				base := form
				if name == "conn_max_lifetime_jitter" {
					// go-redis caps the jitter at the lifetime.
					base = join(base, "conn_max_lifetime=7s")
				}
				want, err := config.RedisOptions(base)
				if err != nil {
					t.Fatal(err)
				}
				u := join(base, name+"="+value)
				if name == "skip_verify" && !strings.HasPrefix(base, "rediss") {
					if _, err := config.RedisOptions(u); err == nil || !strings.Contains(err.Error(), "skip_verify") {
						t.Errorf("%s: skip_verify without TLS: %v", u, err)
					}
					continue
				}
				got, err := config.RedisOptions(u)
				if contains(refused[kind], name) {
					if err == nil || !strings.Contains(err.Error(), name) {
						t.Errorf("%s: %s is not for this form, and was not refused by name: %v", u, name, err)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", u, err)
					continue
				}
				if reflect.DeepEqual(options(want), options(got)) {
					t.Errorf("%s: %s was dropped: the options are those of %s", u, name, base)
				}
			}
		}
	}
}

func join(u, option string) string {
	if strings.Contains(u, "?") {
		return u + "&" + option
	}
	return u + "?" + option
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// options renders what can be compared of the parsed options (functions
// cannot be).
func options(r *config.Redis) string {
	var v reflect.Value
	switch {
	case r.Single != nil:
		v = reflect.ValueOf(*r.Single)
	case r.Cluster != nil:
		v = reflect.ValueOf(*r.Cluster)
	default:
		v = reflect.ValueOf(*r.Failover)
	}
	var b strings.Builder
	for i := range v.NumField() {
		f := v.Field(i)
		if !v.Type().Field(i).IsExported() || f.Kind() == reflect.Func {
			continue
		}
		if f.Kind() == reflect.Pointer && !f.IsNil() {
			f = f.Elem()
		}
		if tc, ok := f.Interface().(interface{ String() string }); ok && f.Kind() != reflect.Struct {
			fmt.Fprintf(&b, "%s=%s ", v.Type().Field(i).Name, tc.String())
			continue
		}
		if f.Kind() == reflect.Struct && f.Type().Name() == "Config" { // tls.Config
			fmt.Fprintf(&b, "%s=%v ", v.Type().Field(i).Name, f.FieldByName("InsecureSkipVerify"))
			continue
		}
		fmt.Fprintf(&b, "%s=%#v ", v.Type().Field(i).Name, f.Interface())
	}
	return b.String()
}

// A sentinel URL's user and password are the data nodes'; the sentinels'
// have their own options.
func TestSentinelCredentials(t *testing.T) {
	r, err := config.RedisOptions("redis+sentinel://app:data-pw@s1:26379?master_name=m&sentinel_username=sen&sentinel_password=sen-pw")
	if err != nil {
		t.Fatal(err)
	}
	o := r.Failover
	if o.Username != "app" || o.Password != "data-pw" || o.SentinelUsername != "sen" || o.SentinelPassword != "sen-pw" {
		t.Errorf("data %q/%q, sentinels %q/%q", o.Username, o.Password, o.SentinelUsername, o.SentinelPassword)
	}
	// go-redis's own form still works alone.
	r, err = config.RedisOptions("redis+sentinel://s1:26379?master_name=m&username=app&password=data-pw")
	if err != nil || r.Failover.Username != "app" || r.Failover.Password != "data-pw" || r.Failover.SentinelPassword != "" {
		t.Errorf("username=/password=: %+v %v", r, err)
	}
	_, err = config.RedisOptions("redis+sentinel://app:data-pw@s1:26379?master_name=m&password=other")
	if err == nil || !strings.Contains(err.Error(), "given twice") || strings.Contains(err.Error(), "data-pw") || strings.Contains(err.Error(), "other") {
		t.Errorf("both forms at once: %v", err)
	}
	for _, u := range []string{
		"redis+sentinel://app:data-pw@s1:26379?master_name=m&sentinel_password=sen-pw",
		"redis+sentinel://s1:26379?master_name=m&password=data-pw&sentinel_password=sen-pw",
	} {
		red := config.Redact(u)
		if strings.Contains(red, "data-pw") || strings.Contains(red, "sen-pw") {
			t.Errorf("Redact(%s) = %s", u, red)
		}
		msg := "failed: data-pw sen-pw"
		if s := config.Scrub(msg, u); strings.Contains(s, "pw") {
			t.Errorf("Scrub left a password: %s", s)
		}
	}
}
