package web

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/topix-dev/topix/inspect"
)

// TestChartDrawsTheLagOnItsOwnScale: the lag line spans 0 to its own
// largest value whatever the counts are, and a minute without a sample
// breaks it instead of drawing a zero.
func TestChartDrawsTheLagOnItsOwnScale(t *testing.T) {
	lag := func(v int64) *int64 { return &v }
	t0 := time.Unix(0, 0)
	hist := []inspect.Minute{
		{Time: t0, Processed: 10, Lag: lag(1000000)},
		{Time: t0, Processed: 20, Lag: lag(500000)},
		{Time: t0, Processed: 30},
		{Time: t0, Processed: 40, Lag: lag(0)},
	}
	c := chartOf(hist)
	if !c.HasLag || c.LagMax != 1000000 || c.Max != 40 {
		t.Fatalf("chart = %+v", c)
	}
	parts := strings.Fields(c.Lag)
	if len(parts) != 4 || !strings.HasPrefix(parts[0], "M") || !strings.HasPrefix(parts[1], "L") || !strings.HasPrefix(parts[2], "M") || parts[3] != "l0,0" {
		t.Errorf("lag path %q: want a line over the first two minutes, a gap, then a dot for the last alone", c.Lag)
	}
	top, bottom := float64(chartPad), float64(chartH-chartPad)
	if y := yOf(t, parts[0]); y != top {
		t.Errorf("the largest lag at y=%.1f, want the top %.1f", y, top)
	}
	if y := yOf(t, parts[2]); y != bottom {
		t.Errorf("lag 0 at y=%.1f, want the bottom %.1f", y, bottom)
	}

	if c := chartOf([]inspect.Minute{{Time: t0, Processed: 1}}); c.HasLag || c.Lag != "" {
		t.Errorf("no lag samples, yet a lag line: %+v", c)
	}
}

func yOf(t *testing.T, point string) float64 {
	t.Helper()
	_, y, ok := strings.Cut(point[1:], ",")
	if !ok {
		t.Fatalf("point %q", point)
	}
	v, err := strconv.ParseFloat(y, 64)
	if err != nil {
		t.Fatalf("point %q: %v", point, err)
	}
	return v
}
