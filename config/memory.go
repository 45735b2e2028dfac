package config

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ByteSize is a size in bytes, written in a config file, a variable or a
// flag as a number with an optional unit: 512MiB, 2GiB, 1.5GB, 100000.
type ByteSize uint64

// String writes the size in the largest binary unit that keeps it exact.
func (b ByteSize) String() string {
	n := uint64(b)
	for _, u := range []struct {
		name string
		size uint64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatUint(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatUint(n, 10) + "B"
}

var byteUnits = map[string]float64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

// ParseByteSize reads a size like 512MiB, 2GB or 1000000 (bytes).
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := byteUnits[unit]
	v, err := strconv.ParseFloat(num, 64)
	if num == "" || err != nil || !ok || v*mult >= 1<<63 {
		return 0, fmt.Errorf("%q is not a size; write it like 512MiB, 2GiB or 1GB", s)
	}
	return ByteSize(v * mult), nil
}

// toSize reads a size written as a string ("512MiB", "auto") or a whole
// number of bytes. Errors do not repeat the value.
func toSize(raw any) (ByteSize, error) {
	switch v := raw.(type) {
	case ByteSize:
		return v, nil
	case string:
		if v == "" || v == "auto" {
			return 0, nil
		}
		if n, err := ParseByteSize(v); err == nil {
			return n, nil
		}
		return 0, errors.New("is not a size; write it like 512MiB, 2GiB or 1GB")
	case int64:
		if v >= 0 {
			return ByteSize(v), nil
		}
	case int:
		if v >= 0 {
			return ByteSize(v), nil
		}
	case float64:
		if v >= 0 && v == float64(int64(v)) {
			return ByteSize(v), nil
		}
	}
	return 0, errors.New(`is not a size; write it like "512MiB"`)
}

// DefaultMaxMemory is the memory ceiling of the scripts when none is set:
// half of the memory topix may use, which is the cgroup's limit (a
// container's) when there is one, or else the machine's memory. It also
// says where the figure came from. The other half is headroom: the ceiling
// is watched every few milliseconds, not enforced at each allocation, and
// the heap the calls leave behind is collected after they are stopped.
func DefaultMaxMemory() (ByteSize, string) {
	total, source := availableMemory()
	if total == 0 {
		return 2 << 30, "a fixed 2GiB: the machine's memory is unknown"
	}
	return ByteSize(total / 2), "half of " + source
}

// availableMemory returns the memory limit of topix's cgroup, or the
// machine's memory when that is lower or there is no limit.
func availableMemory() (uint64, string) {
	mem, source := meminfoTotal(), "the machine's memory"
	for _, path := range []string{
		"/sys/fs/cgroup/memory.max",                   // cgroup v2
		"/sys/fs/cgroup/memory/memory.limit_in_bytes", // cgroup v1
	} {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		limit, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err == nil && limit > 0 && (mem == 0 || limit < mem) {
			return limit, "the cgroup's memory limit"
		}
	}
	return mem, source
}

func meminfoTotal() uint64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// goMaxThreads is the Go runtime's default limit of OS threads; past it
// the process dies with "thread exhaustion".
const goMaxThreads = 10_000

// ThreadLimit returns how many OS threads topix can count on: the lowest
// of Go's limit, the kernel's (threads-max) and the user's (RLIMIT_NPROC,
// which counts threads on Linux).
func ThreadLimit() int {
	limit := goMaxThreads
	if b, err := os.ReadFile("/proc/sys/kernel/threads-max"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			limit = min(limit, n)
		}
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(rlimitNproc, &rl); err == nil && rl.Cur > 0 && rl.Cur < uint64(limit) {
		limit = int(rl.Cur)
	}
	return limit
}

// rlimitNproc is RLIMIT_NPROC on Linux.
const rlimitNproc = 6
