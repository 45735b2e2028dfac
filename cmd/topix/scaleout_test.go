package main

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/topix-dev/topix/internal/redistest"
)

// topixAt runs topix against the Redis at url, with env added.
func topixAt(t *testing.T, url string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), asTopix+"=1", "TOPIX_REDIS_URL="+url, "NO_COLOR=1"), env...)
	return cmd
}

// runAt runs a topix command to its end and returns its exit code and
// output.
func runAt(t *testing.T, url string, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := topixAt(t, url, env, args...)
	var out redistest.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return waitExit(t, cmd, 30*time.Second), out.String()
}

// TLS with a private CA and a client certificate (tls-auth-clients yes):
// the tls_* settings as flags and as variables, and each way it can go
// wrong named with what to do.
func TestTLSWithAPrivateCAAndAClientCertificate(t *testing.T) {
	certs := redistest.MustCerts(t)
	srv := redistest.Must(t, certs.Args(true)...)
	url := srv.URL()
	ca, cert, key := "--tls-ca="+certs.CA, "--tls-cert="+certs.Cert, "--tls-key="+certs.Key
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"flags", nil, []string{ca, cert, key}, 0, "-"},
		{"variables", []string{"TOPIX_TLS_CA=" + certs.CA, "TOPIX_TLS_CERT=" + certs.Cert, "TOPIX_TLS_KEY=" + certs.Key}, nil, 0, "-"},
		{"the system's CAs from SSL_CERT_FILE", []string{"SSL_CERT_FILE=" + certs.CA}, []string{cert, key}, 0, "-"},
		{"a server name the certificate has", nil, []string{ca, cert, key, "--tls-server-name=localhost"}, 0, "-"},
		{"a server name it has not", nil, []string{ca, cert, key, "--tls-server-name=redis.example"}, exitRedis, "not redis.example"},
		{"no client certificate", nil, []string{ca}, exitRedis, "--tls-cert and --tls-key"},
		{"another CA", nil, []string{"--tls-ca=" + certs.OtherCA, cert, key}, exitRedis, "--tls-ca"},
		{"no CA", nil, []string{cert, key}, exitRedis, "--tls-ca"},
		{"a CA file that is missing", nil, []string{"--tls-ca=/nonexistent/ca.pem", cert, key}, exitUsage, "tls_ca: cannot read /nonexistent/ca.pem: no such file"},
		{"a CA file that holds no certificate", nil, []string{"--tls-ca=" + certs.Key, cert, key}, exitUsage, "holds no certificate"},
		{"a certificate without its key", nil, []string{ca, cert}, exitUsage, "tls_cert is set without tls_key"},
		{"a key of another certificate", nil, []string{ca, cert, "--tls-key=" + certs.CA}, exitUsage, "tls_cert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runAt(t, url, tc.env, append([]string{"emit", "tls", `{"k": "v"}`}, tc.args...)...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, want %d with %q; output:\n%s", code, tc.code, tc.want, out)
			}
		})
	}
	code, out := runAt(t, strings.Replace(url, "rediss:", "redis:", 1), nil, "emit", "tls", "{}", ca)
	if code != exitUsage || !strings.Contains(out, "does not use TLS") {
		t.Errorf("--tls-ca with redis://: exit %d, output:\n%s", code, out)
	}
}

// A consumer on a Redis Cluster over TLS with client certificates: it
// drains a stream and its emits reach a stream on the same slot.
func TestAConsumerOnAClusterOverTLS(t *testing.T) {
	certs := redistest.MustCerts(t)
	cl := redistest.MustCluster(t, 3, 0, certs.Args(true)...)
	tlsArgs := []string{"--tls-ca=" + certs.CA, "--tls-cert=" + certs.Cert, "--tls-key=" + certs.Key}
	url := cl.URL()
	if !strings.HasPrefix(url, "rediss+cluster://") {
		t.Fatal(url)
	}
	const n = 50
	for i := range n {
		if code, out := runAt(t, url, nil, append([]string{"emit", "{tls}:in", `{"n": ` + strconv.Itoa(i) + `}`}, tlsArgs...)...); code != 0 {
			t.Fatalf("emit: exit %d:\n%s", code, out)
		}
	}
	script := writeScript(t, "def consumer(data):\n    emit('{tls}:out', data)\n")
	cmd := topixAt(t, url, nil, append([]string{"consumer", "{tls}:in", "g", script, "--block=50ms"}, tlsArgs...)...)
	var out redistest.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rdb := cl.Client()
	defer rdb.Close()
	ctx := context.Background()
	redistest.WaitFor(t, 30*time.Second, "the entries emitted on", func() bool {
		return rdb.XLen(ctx, "{tls}:out").Val() == n
	})
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, cmd, 20*time.Second); code != 0 {
		t.Fatalf("consumer exit %d:\n%s", code, out.String())
	}
	if p := rdb.XPending(ctx, "{tls}:in", "g").Val(); p == nil || p.Count != 0 {
		t.Errorf("pending after the drain: %+v", p)
	}
}

// On redis+sentinel://, the user and password before the @ are the data
// nodes' (an ACL user there), and the sentinels' are their own options.
// The consumer keeps consuming across a failover.
func TestSentinelURLCredentials(t *testing.T) {
	set := redistest.MustSentinels(t, redistest.SentinelOptions{
		Data:     []string{"--requirepass", "repl-pw", "--user", "app", "on", ">app-pw", "~*", "&*", "+@all"},
		Auth:     "repl-pw",
		Password: "sentinel-pw",
	})
	url := strings.Replace(set.URL(), "redis+sentinel://", "redis+sentinel://app:app-pw@", 1) + "&sentinel_password=sentinel-pw"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	primary, err := set.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: primary.Addr, Username: "app", Password: "app-pw"})
	defer rdb.Close()

	emit := func(from, to int) {
		for i := from; i < to; i++ {
			if code, out := runAt(t, url, nil, "emit", "orders", `{"n": `+strconv.Itoa(i)+`}`); code != 0 {
				t.Fatalf("emit: exit %d:\n%s", code, out)
			}
		}
	}
	emit(0, 20)
	script := writeScript(t, "def consumer(data):\n    pass\n")
	cmd := topixAt(t, url, nil, "consumer", "orders", "g", script, "--block=50ms")
	var out redistest.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("the consumer's output:\n%s", out.String())
		}
	}()
	// Every entry of the stream delivered to the group and acked.
	acked := func() bool {
		g, err := rdb.XInfoGroups(ctx, "orders").Result()
		s, serr := rdb.XInfoStream(ctx, "orders").Result()
		return err == nil && serr == nil && len(g) == 1 && g[0].LastDeliveredID == s.LastGeneratedID && g[0].Pending == 0
	}
	redistest.WaitFor(t, 20*time.Second, "the first entries consumed", acked)
	if err := set.Failover(ctx); err != nil {
		t.Fatal(err)
	}
	next, err := set.WaitPrimary(ctx, primary)
	if err != nil {
		t.Fatal(err)
	}
	rdb.Close()
	rdb = redis.NewClient(&redis.Options{Addr: next.Addr, Username: "app", Password: "app-pw"})
	emit(20, 40)
	redistest.WaitFor(t, 20*time.Second, "the entries emitted after the failover consumed", acked)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, cmd, 20*time.Second); code != 0 {
		t.Fatalf("consumer exit %d", code)
	}
	if strings.Contains(out.String(), "was gone") {
		t.Errorf("the group was created again:\n%s", out.String())
	}
	if strings.Contains(out.String(), "app-pw") || strings.Contains(out.String(), "sentinel-pw") {
		t.Errorf("a password in the output:\n%s", out.String())
	}
}

// topix emit --wait-replicas prints an id only once the replicas have the
// entry, and says so when they did not confirm it in time.
func TestEmitWaitsForTheReplicas(t *testing.T) {
	primary := redistest.Must(t)
	host, port, _ := strings.Cut(primary.Addr, ":")
	replica := redistest.Must(t, "--replicaof", host, port)
	rc := replica.Client()
	defer rc.Close()
	ctx := context.Background()
	redistest.WaitFor(t, 20*time.Second, "the replica in sync", func() bool {
		info, _ := rc.Info(ctx, "replication").Result()
		return strings.Contains(info, "master_link_status:up")
	})
	code, out := runAt(t, primary.URL(), nil, "emit", "w", `{"k": "v"}`, "--wait-replicas=1")
	id := strings.TrimSpace(out)
	if code != 0 || rc.XLen(ctx, "w").Val() != 1 || !strings.Contains(id, "-") {
		t.Fatalf("--wait-replicas=1: exit %d, output %q, replica holds %d", code, out, rc.XLen(ctx, "w").Val())
	}
	cmd := topixAt(t, primary.URL(), nil, "emit", "w", "-", "--wait-replicas=1")
	cmd.Stdin = strings.NewReader(`{"n": 1}` + "\n" + `{"n": 2}` + "\n")
	lines, err := cmd.Output()
	if err != nil || strings.Count(string(lines), "\n") != 2 {
		t.Fatalf("emit - --wait-replicas=1: %q, %v", lines, err)
	}
	cmd = topixAt(t, primary.URL(), nil, "emit", "w", `{"k": "v"}`, "--wait-replicas=2", "--wait-timeout=50ms")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitFailure || stdout.Len() != 0 ||
		!strings.Contains(stderr.String(), "1 of 2 replicas confirmed them within 50ms") {
		t.Errorf("--wait-replicas=2 with one replica: %v, stdout %q, stderr %q", err, stdout.String(), stderr.String())
	}
}

// rediss+sentinel://: the sentinels and the data nodes speak TLS only and
// want client certificates; the tls_* settings reach both.
func TestSentinelOverTLS(t *testing.T) {
	certs := redistest.MustCerts(t)
	set := redistest.MustSentinels(t, redistest.SentinelOptions{TLS: certs})
	url := set.URL()
	if !strings.HasPrefix(url, "rediss+sentinel://") {
		t.Fatal(url)
	}
	tlsArgs := []string{"--tls-ca=" + certs.CA, "--tls-cert=" + certs.Cert, "--tls-key=" + certs.Key}
	for i := range 5 {
		if code, out := runAt(t, url, nil, append([]string{"emit", "orders", `{"n": ` + strconv.Itoa(i) + `}`}, tlsArgs...)...); code != 0 {
			t.Fatalf("emit: exit %d:\n%s", code, out)
		}
	}
	script := writeScript(t, "def consumer(data):\n    emit('orders:out', data)\n")
	cmd := topixAt(t, url, nil, append([]string{"consumer", "orders", "g", script, "--block=50ms"}, tlsArgs...)...)
	var out redistest.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	primary, err := set.Primary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rdb := primary.Client()
	defer rdb.Close()
	redistest.WaitFor(t, 30*time.Second, "the entries consumed", func() bool { return rdb.XLen(ctx, "orders:out").Val() == 5 })
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, cmd, 20*time.Second); code != 0 {
		t.Fatalf("consumer exit %d:\n%s", code, out.String())
	}
	code, msg := runAt(t, url, nil, "emit", "orders", `{"k": "v"}`, "--tls-ca="+certs.CA)
	if code != exitRedis || !strings.Contains(msg, "--tls-cert") {
		t.Errorf("without a client certificate: exit %d:\n%s", code, msg)
	}
}
