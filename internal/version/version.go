// Package version says which build of topix is running, from what the Go
// toolchain stamped into the binary: the module version, the VCS revision
// and its time, and the Go version.
package version

import (
	"fmt"
	"runtime/debug"
	"sync"
)

// Info describes a build.
type Info struct {
	Version  string // the module version ("v1.2.3"), or "devel" for a build from a checkout
	Revision string // VCS revision, "" when not built from a checkout
	Time     string // the revision's commit time, RFC 3339, or ""
	Modified bool   // the checkout had uncommitted changes
	Go       string // the Go version it was built with
}

// Get returns the running binary's build info.
var Get = sync.OnceValue(func() Info {
	info := Info{Version: "devel"}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	info.Go = bi.GoVersion
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		info.Version = v
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
})

// Short is the version with the revision's first 12 digits, as consumers
// record it in their heartbeats: "devel+0123456789ab", "v1.2.3",
// "devel+0123456789ab-dirty".
func (i Info) Short() string {
	s := i.Version
	if i.Revision != "" && i.Version == "devel" {
		s += "+" + i.Revision[:min(12, len(i.Revision))]
		if i.Modified {
			s += "-dirty"
		}
	}
	return s
}

// String is the multi-line text of `topix version`.
func (i Info) String() string {
	s := fmt.Sprintf("topix %s\n", i.Short())
	if i.Revision != "" {
		mod := ""
		if i.Modified {
			mod = " (with uncommitted changes)"
		}
		s += fmt.Sprintf("revision %s%s\n", i.Revision, mod)
	}
	if i.Time != "" {
		s += fmt.Sprintf("committed %s\n", i.Time)
	}
	return s + fmt.Sprintf("built with %s\n", i.Go)
}
