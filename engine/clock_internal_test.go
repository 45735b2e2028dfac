package engine

import (
	"testing"
	"time"
)

func TestAgeAtReadsTheIDsMilliseconds(t *testing.T) {
	t0 := time.UnixMilli(1700000000000).UnixNano()
	for _, c := range []struct {
		id   string
		at   int64
		want time.Duration
	}{
		{"1700000000000-0", t0, 0},
		{"1700000000000-17", t0 + int64(1500*time.Millisecond), 1500 * time.Millisecond},
		{"1699999999990-3", t0, 10 * time.Millisecond},
		{"1700000000005-0", t0, -5 * time.Millisecond}, // an id from a clock ahead of ours
	} {
		if got := ageAt(c.id, c.at); got != c.want {
			t.Errorf("ageAt(%s) = %s, want %s", c.id, got, c.want)
		}
	}
}

func TestCallClockChainsTheCallsOfAChunk(t *testing.T) {
	var k callClock
	k.reset()
	before := time.Now().UnixNano()
	s1, e1 := k.tick()
	s2, e2 := k.tick()
	after := time.Now().UnixNano()
	if s1 != k.baseNs || e1 < s1 || s2 != e1 || e2 < s2 {
		t.Errorf("calls (%d, %d) and (%d, %d) from %d: each must start where the one before ended", s1, e1, s2, e2, k.baseNs)
	}
	// The wall time it derives is the wall clock's, within the readings.
	if e2 < before-int64(time.Millisecond) || e2 > after+int64(time.Millisecond) {
		t.Errorf("end %d outside [%d, %d]", e2, before, after)
	}
}
