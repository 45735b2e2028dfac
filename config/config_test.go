package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/topix-dev/topix/config"
)

func TestRedisOptionsErrorsHideThePassword(t *testing.T) {
	for _, tc := range []struct{ url, err string }{
		{"", "the Redis URL is empty"},
		{"http://:s3cret@host/", `unknown scheme "http"`},
		{"redis://:s3cret@host:70000/0", "port 70000 is not a number from 1 to 65535"},
		{"redis://:s3cret@host/x", "invalid Redis URL redis://:xxxxx@host/x"},
		{"redis+sentinel://:s3cret@host:26379", "needs ?master_name=NAME"},
		{"redis://:s3cret@ho st/", "invalid Redis URL"},
		{"redis+mesh://host", `unknown mode "mesh"`},
	} {
		_, err := config.RedisOptions(tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("RedisOptions(%q) = %v, want %q", tc.url, err, tc.err)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("RedisOptions(%q) error shows the password: %v", tc.url, err)
		}
	}
}

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "topix.yaml")
	os.WriteFile(file, []byte("concurrency: 3\nbatch: 30\nblock: 5s\nstart: $\n"), 0o644)
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.Int("batch", 0, "")
	fs.Int("concurrency", 0, "")
	fs.String("unrelated", "", "")
	if err := fs.Parse([]string{"--batch", "99", "--unrelated", "x"}); err != nil {
		t.Fatal(err)
	}
	env := []string{"TOPIX_CONCURRENCY=4", "TOPIX_BLOCK=", "TOPIX_SHUTDOWN_TIMEOUT=2m", "OTHER=1"}
	c, err := config.Load(file, env, fs)
	if err != nil {
		t.Fatal(err)
	}
	if c.Batch != 99 || c.Concurrency != 4 || c.Block != 5*time.Second || c.Start != "$" || c.ShutdownTimeout != 2*time.Minute || c.RedisURL != config.DefaultRedisURL {
		t.Errorf("config = %+v", c)
	}
}

func TestMaxMemory(t *testing.T) {
	for _, tc := range []struct {
		file, env, flag string
		want            config.ByteSize
		err             string
	}{
		{want: 0},
		{env: "512MiB", want: 512 << 20},
		{file: `max_memory = "2GiB"`, want: 2 << 30},
		{file: `max_memory = 1000000000`, want: 1e9},
		{file: `max_memory = "1.5GB"`, flag: "3g", want: 3e9},
		{flag: "auto", want: 0},
		{env: "lots", err: `max_memory "lots": is not a size; write it like 512MiB, 2GiB or 1GB [set by TOPIX_MAX_MEMORY]`},
		{flag: "10MiB", err: "max_memory 10MiB: use at least 64MiB"},
		{flag: "-1", err: `max_memory "-1": is not a size`},
	} {
		t.Run(tc.file+tc.env+tc.flag, func(t *testing.T) {
			path := ""
			if tc.file != "" {
				path = filepath.Join(t.TempDir(), "topix.toml")
				os.WriteFile(path, []byte(tc.file+"\n"), 0o644)
			}
			fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
			fs.String("max-memory", "auto", "")
			if tc.flag != "" {
				fs.Parse([]string{"--max-memory", tc.flag})
			}
			var env []string
			if tc.env != "" {
				env = []string{"TOPIX_MAX_MEMORY=" + tc.env}
			}
			c, err := config.Load(path, env, fs)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("err = %v, want one line with %q", err, tc.err)
				}
				return
			}
			if err != nil || c.MaxMemory != tc.want {
				t.Fatalf("max_memory = %v (%d), %v; want %d", c.MaxMemory, c.MaxMemory, err, tc.want)
			}
		})
	}
	if ceiling, source := config.DefaultMaxMemory(); ceiling < config.MinMaxMemory || source == "" {
		t.Errorf("the default ceiling is %s (%s)", ceiling, source)
	}
}

func TestRedactHidesEveryCredential(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"redis://:s3cret@host:6379/0", "redis://:xxxxx@host:6379/0"},
		{"redis://alice:s3cret@host/0", "redis://alice:xxxxx@host/0"},
		{"redis://s3cret@host/0", "redis://xxxxx@host/0"}, // a password typed in the user slot
		{"redis+sentinel://host:26379?master_name=m&password=s3cret", "redis+sentinel://host:26379?master_name=m&password=xxxxx"},
		{"redis+sentinel://host?sentinel_password=s3cret&master_name=m", "redis+sentinel://host?master_name=m&sentinel_password=xxxxx"},
		{"redis://:s3cret@host:notaport/0", "redis://:xxxxx@host:notaport/0"},
		{"redis://al:s3cret@ho st/0?password=s3cret", "redis://al:xxxxx@ho st/0?password=xxxxx"},
		{"redis://s3cret@ho st/0", "redis://xxxxx@ho st/0"},
		{"redis://host:6379/0", "redis://host:6379/0"},
	} {
		if got := config.Redact(tc.url); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.url, got, tc.want)
		}
		if got := config.Scrub("dial "+tc.url+" failed", tc.url); strings.Contains(got, "s3cret") {
			t.Errorf("Scrub left the password in %q", got)
		}
	}
}
