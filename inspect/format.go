package inspect

import (
	"fmt"
	"strconv"
	"time"
)

// FormatAge formats a duration in seconds (the unit of the report's
// durations) as a short text for tables: "850ms", "4.2s", "3m5s", "2d3h";
// "-" for none.
func FormatAge(s float64) string {
	if s <= 0 {
		return "-"
	}
	d := time.Duration(s * float64(time.Second))
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < 24*time.Hour:
		return d.Round(time.Second).String()
	}
	return fmt.Sprintf("%dd%s", d/(24*time.Hour), (d % (24 * time.Hour)).Round(time.Hour))
}

// FormatRate formats a rate per second with the digits that matter.
func FormatRate(r float64) string {
	switch {
	case r == 0:
		return "0"
	case r < 1:
		return strconv.FormatFloat(r, 'f', 2, 64)
	case r < 100:
		return strconv.FormatFloat(r, 'f', 1, 64)
	}
	return strconv.FormatFloat(r, 'f', 0, 64)
}
