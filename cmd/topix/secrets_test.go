package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/topix-dev/topix/internal/redistest"
)

// secret is the password of every URL below, written percent-encoded in
// the user information: neither form may appear in any output.
const (
	secret        = "hunter2@Xyz"
	secretInURL   = "hunter2%40Xyz"
	secretMarker  = "hunter2"
	wrongPassword = "not-the-password"
)

// TestNoSecretInAnyOutput crosses every form of Redis URL with every way
// using it can fail, runs the real CLI (emit, and consumer at debug level,
// which also logs go-redis's own messages) and checks that the password is
// in none of its output.
func TestNoSecretInAnyOutput(t *testing.T) {
	dir := t.TempDir()
	plain := redistest.Must(t)                                  // answers, no TLS
	locked := redistest.Must(t, "--requirepass", wrongPassword) // refuses our password
	silent, _ := redistest.Silent(t)                            // accepts, never answers
	port, _ := redistest.FreePort()
	closed := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	script := filepath.Join(dir, "app.star")
	os.WriteFile(script, []byte("def consumer(data):\n    pass\n"), 0o644)

	// Each form, with HOST standing for the address and OPT for extra
	// query options.
	forms := []string{
		"redis://:" + secretInURL + "@HOST/0?OPT",
		"redis://user:" + secretInURL + "@HOST/0?OPT",
		"redis://" + secretInURL + "@HOST/0?OPT", // the password typed in the user slot
		"rediss://:" + secretInURL + "@HOST/0?OPT",
		"redis+cluster://:" + secretInURL + "@HOST?OPT",
		"rediss+cluster://user:" + secretInURL + "@HOST?OPT",
		"redis+sentinel://:" + secretInURL + "@HOST?master_name=m&OPT",
		"redis+sentinel://HOST?master_name=m&password=" + secretInURL + "&OPT",
		"redis+sentinel://HOST?master_name=m&sentinel_password=" + secretInURL + "&OPT",
		"unix://:" + secretInURL + "@" + filepath.Join(dir, "no.sock") + "?OPT",
		"redis://:" + secretInURL + "@HOST:notaport/0?OPT",
		"redis://user:" + secretInURL + "@ho st/0?OPT",
	}
	paths := []struct{ name, host, opt string }{
		{"unreachable", closed, "dial_timeout=1s"},
		{"wrong password", locked.Addr, "dial_timeout=1s"},
		{"bad option", plain.Addr, "dial_timeout=soon"},
		{"bad protocol", plain.Addr, "protocol=9"},
		{"TLS to a plain port", plain.Addr, "dial_timeout=1s"},
		{"no answer", silent, "dial_timeout=300ms&read_timeout=300ms&write_timeout=300ms"},
	}
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			checkForms(t, forms, p.name, p.host, p.opt, script)
		})
	}
}

func checkForms(t *testing.T, forms []string, name, host, opt, script string) {
	p := struct{ name, host, opt string }{name, host, opt}
	{
		for _, form := range forms {
			url := strings.ReplaceAll(strings.ReplaceAll(form, "HOST", p.host), "OPT", p.opt)
			if p.name == "TLS to a plain port" {
				url = strings.Replace(url, "redis:", "rediss:", 1)
				url = strings.Replace(url, "redis+", "rediss+", 1)
			}
			for _, args := range [][]string{
				{"emit", "s", `{"a": 1}`},
				{"consumer", "s", "g", script, "--log-level", "debug"},
			} {
				cmd := exec.Command(os.Args[0], args...)
				cmd.Env = append(os.Environ(), asTopix+"=1", "TOPIX_REDIS_URL="+url, "NO_COLOR=1")
				var out bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &out
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				code := waitExit(t, cmd, 20*time.Second)
				got := out.String()
				if code == 0 {
					t.Errorf("%s, %s: topix %s exited 0:\n%s", p.name, form, args[0], got)
				}
				for _, s := range []string{secretMarker, secret, secretInURL} {
					if strings.Contains(got, s) {
						t.Errorf("%s, %s: topix %s printed the password:\n%s", p.name, form, args[0], got)
						break
					}
				}
				if !strings.HasPrefix(lastLine(got), "topix: ") {
					t.Errorf("%s, %s: topix %s did not end with one error line:\n%s", p.name, form, args[0], got)
				}
				t.Logf("%s: %s", args[0], lastLine(got))
			}
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// A password that is a common word does not blot out topix's own words.
func TestAPasswordThatIsAWordLeavesTheMessageReadable(t *testing.T) {
	locked := redistest.Must(t, "--requirepass", "right")
	cmd := exec.Command(os.Args[0], "emit", "s", `{"a": 1}`)
	cmd.Env = append(os.Environ(), asTopix+"=1", "TOPIX_REDIS_URL=redis://:wrong@"+locked.Addr+"/0", "NO_COLOR=1")
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "wrong user name or password") || !strings.Contains(string(out), ":xxxxx@") {
		t.Errorf("output %q; want the password hidden in the URL and the reason intact", out)
	}
}
