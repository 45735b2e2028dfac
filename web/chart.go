package web

import (
	"fmt"
	"strings"

	"github.com/topix-dev/topix/inspect"
)

// chart is the last hour of a group, drawn as an SVG of three lines
// (processed, failed, dead-lettered per minute) on one scale, the lag on a
// scale of its own (it can be a million while a minute counts a
// thousand), and a mark where the script's hash changed.
type chart struct {
	W, H                    int
	Processed, Failed, Dead string // polyline points
	Max                     int64
	Lag                     string // path: minutes without a lag sample are gaps
	LagMax                  int64
	HasLag                  bool
	Marks                   []mark
	From, To                string // the first and the last minute, HH:MM UTC
	Empty                   bool
}

type mark struct {
	X    float64
	Hash string
}

const chartW, chartH, chartPad = 720, 160, 4

func chartOf(hist []inspect.Minute) chart {
	c := chart{W: chartW, H: chartH, Empty: true}
	if len(hist) == 0 {
		return c
	}
	c.From, c.To = hist[0].Time.Format("15:04"), hist[len(hist)-1].Time.Format("15:04")
	for _, m := range hist {
		c.Max = max(c.Max, m.Processed, m.Failed, m.DeadLettered)
	}
	c.Empty = c.Max == 0
	top := max(c.Max, 1)
	x := func(i int) float64 {
		if len(hist) == 1 {
			return chartW / 2
		}
		return chartPad + float64(i)*float64(chartW-2*chartPad)/float64(len(hist)-1)
	}
	y := func(v int64) float64 { return chartH - chartPad - float64(v)*float64(chartH-2*chartPad)/float64(top) }
	line := func(get func(inspect.Minute) int64) string {
		var b strings.Builder
		for i, m := range hist {
			fmt.Fprintf(&b, "%.1f,%.1f ", x(i), y(get(m)))
		}
		return strings.TrimSpace(b.String())
	}
	c.Processed = line(func(m inspect.Minute) int64 { return m.Processed })
	c.Failed = line(func(m inspect.Minute) int64 { return m.Failed })
	c.Dead = line(func(m inspect.Minute) int64 { return m.DeadLettered })
	c.Lag, c.LagMax, c.HasLag = lagPath(hist, x)
	last := ""
	for i, m := range hist {
		if m.Script == "" {
			continue
		}
		if last != "" && m.Script != last {
			c.Marks = append(c.Marks, mark{X: x(i), Hash: m.Script[:min(12, len(m.Script))]})
		}
		last = m.Script
	}
	return c
}

// lagPath draws the lag on its own scale, 0 to its largest value; a
// minute without a sample breaks the line rather than drawing a zero.
func lagPath(hist []inspect.Minute, x func(int) float64) (d string, top int64, has bool) {
	for _, m := range hist {
		if m.Lag != nil {
			top, has = max(top, *m.Lag), true
		}
	}
	scale := max(top, 1)
	var b strings.Builder
	move := true
	for i, m := range hist {
		if m.Lag == nil {
			move = true
			continue
		}
		cmd := "L"
		if move {
			cmd, move = "M", false
		}
		y := chartH - chartPad - float64(*m.Lag)*float64(chartH-2*chartPad)/float64(scale)
		fmt.Fprintf(&b, "%s%.1f,%.1f ", cmd, x(i), y)
		if cmd == "M" && (i+1 == len(hist) || hist[i+1].Lag == nil) {
			b.WriteString("l0,0 ") // a sample alone: a dot (the line's round cap)
		}
	}
	return strings.TrimSpace(b.String()), top, has
}
