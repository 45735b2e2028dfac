package engine

import (
	"strings"
	"testing"
)

// hashTag is the part of a key Redis Cluster hashes: the text between the
// first '{' and the first '}' after it when that is not empty, else the
// whole key.
func hashTag(key string) string {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if end := strings.IndexByte(key[open+1:], '}'); end > 0 {
			return key[open+1 : open+1+end]
		}
	}
	return key
}

func TestAttemptsKeyIsOnTheStreamsSlot(t *testing.T) {
	for _, stream := range []string{"orders", "{tenant}.orders", "a{b}c{d}", "x:y:z", "{}odd", "a{b", "a}b{"} {
		key := AttemptsKey(stream, "billing")
		if !strings.HasPrefix(key, "{"+stream+"}") && !strings.HasPrefix(key, stream) {
			t.Errorf("AttemptsKey(%q) = %q: does not name its stream", stream, key)
		}
		same := hashTag(key) == hashTag(stream)
		// Names with braces that make no tag cannot share a slot with any
		// longer key; the others must.
		if !same && !strings.ContainsAny(stream, "{}") {
			t.Errorf("AttemptsKey(%q) = %q hashes %q, the stream %q", stream, key, hashTag(key), hashTag(stream))
		}
		if !same && hashTag(stream) != stream {
			t.Errorf("AttemptsKey(%q) = %q loses the stream's own tag %q", stream, key, hashTag(stream))
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range []record{{1, 0}, {3, 2}, {1000, 999}} {
		if got, ok := parseRecord(r.value()); !ok || got != r {
			t.Errorf("parseRecord(%q) = %v, %v", r.value(), got, ok)
		}
	}
	for _, bad := range []string{"", "1", "a:b", "1:2", "-1:0", "1:-1"} {
		if _, ok := parseRecord(bad); ok {
			t.Errorf("parseRecord(%q) accepted", bad)
		}
	}
}

func TestCompareIDs(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"1-0", "1-0", 0},
		{"1-1", "1-0", 1},
		{"9-0", "10-0", -1}, // numeric, not text, order
		{"1700000000000-9", "1700000000000-10", -1},
		{"18446744073709551615-0", "1-0", 1},
	} {
		if got := compareIDs(tc.a, tc.b); got != tc.want {
			t.Errorf("compareIDs(%s, %s) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
