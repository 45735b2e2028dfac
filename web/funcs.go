package web

import (
	"fmt"
	"html/template"
	"net/url"
	"strconv"
	"time"
)

var funcs = template.FuncMap{
	"age":      age,
	"rate":     rate,
	"short":    func(s string) string { return s[:min(12, len(s))] },
	"groupURL": groupURL,
	"apiURL": func(stream, group string) string {
		return "/api/report?" + url.Values{"stream": {stream}, "group": {group}}.Encode()
	},
	"deadURL": func(stream, group, id string) string {
		return "/dead?" + url.Values{"stream": {stream}, "group": {group}, "id": {id}}.Encode()
	},
	"ago": func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return age(time.Since(*t).Seconds()) + " ago"
	},
}

// age formats seconds as a short duration; "-" for none.
func age(s float64) string {
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

// rate formats a rate per second with the digits that matter.
func rate(r float64) string {
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
