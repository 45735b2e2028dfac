package web

import (
	"html/template"
	"net/url"
	"time"

	"github.com/topix-dev/topix/inspect"
)

var funcs = template.FuncMap{
	"age":      inspect.FormatAge,
	"rate":     inspect.FormatRate,
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
		return inspect.FormatAge(time.Since(*t).Seconds()) + " ago"
	},
}
