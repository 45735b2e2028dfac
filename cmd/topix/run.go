package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/topix-dev/topix"
	"github.com/topix-dev/topix/engine"
	"github.com/topix-dev/topix/starlib"
)

func (a *app) runCommand() *cobra.Command {
	var stream string
	cmd := &cobra.Command{
		Use:   "run SCRIPT.star[:FUNC] [JSON ...]",
		Short: "Run a consumer function on entries given as JSON, without Redis",
		Long: `Run FUNC (default: consumer) of SCRIPT.star on each JSON object given, or on
each line of stdin when none is given, as if they were entries of a stream:
the objects' values become strings as with topix emit. Nothing talks to Redis.

The script's logs go to stderr. What the calls emit is printed on stdout, one
line per entry: "emit STREAM FIELDS", FIELDS as a JSON object. A call that
fails prints its backtrace; topix run then goes on with the next entry and
exits with code 1 at the end.`,
		Example: `  topix run scripts/router.star '{"type": "order", "payload": "{\"id\": 7}"}'
  topix run app.star:consumer < entries.jsonl`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 {
				return usagef("run needs a script, SCRIPT.star[:FUNC], and entries as JSON or on stdin; see 'topix run --help'")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runScript(cmd, args[0], args[1:], stream)
		},
	}
	cmd.Flags().StringVar(&stream, "stream", "run", "the stream name the function sees in msg.stream")
	addScriptFlags(cmd)
	return cmd
}

func (a *app) runScript(cmd *cobra.Command, target string, inputs []string, stream string) error {
	cfg, log, err := a.load(cmd)
	if err != nil {
		return err
	}
	script, env, err := loadScript(target, cfg, log)
	if err != nil {
		return err
	}

	// Entries come from the arguments, or else from stdin, one per line.
	var entries [][]topix.Field
	for i, in := range inputs {
		fields, err := topix.ParseJSON([]byte(in))
		if err != nil {
			return usagef("entry %d: %s", i+1, err)
		}
		entries = append(entries, fields)
	}
	if len(inputs) == 0 {
		if f, ok := a.stdin.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			return usagef("no entries: give them as JSON arguments, or one JSON object per line on stdin")
		}
		if entries, err = readEntries(a.stdin); err != nil {
			return err
		}
	}

	h, _ := starlib.NewRuntime(script, env).NewHandler(0)
	out := bufio.NewWriter(a.stdout)
	defer out.Flush()
	failed := 0
	for i, fields := range entries {
		msg := &engine.Message{
			ID: "0-" + strconv.Itoa(i+1), Stream: stream, Group: "run", Consumer: "run", Attempt: 1, Fields: fields,
		}
		res := h.Handle(cmd.Context(), msg)
		if res.Err != nil {
			failed++
			attrs := append([]any{"id", msg.ID}, engine.ErrorAttrs(res.Err)...)
			if errors.Is(res.Err, engine.ErrDeadLetter) {
				log.Warn("entry rejected: a consumer would send it to the dead-letter stream", attrs...)
			} else {
				log.Error("entry failed", attrs...)
			}
			continue
		}
		for _, e := range res.Emits {
			fmt.Fprintf(out, "emit %s %s\n", e.Stream, fieldsJSON(e.Fields))
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d %s failed", failed, len(entries), plural(len(entries), "entry", "entries"))
	}
	return nil
}

func readEntries(r io.Reader) ([][]topix.Field, error) {
	var entries [][]topix.Field
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 512<<20)
	for n := 1; sc.Scan(); n++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		fields, err := topix.ParseJSON(sc.Bytes())
		if err != nil {
			return nil, usagef("line %d: %s", n, err)
		}
		entries = append(entries, fields)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read stdin: %w", err)
	}
	return entries, nil
}

// fieldsJSON shows fields as a JSON object, in their order.
func fieldsJSON(fields []topix.Field) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			b.WriteString(", ")
		}
		name, _ := json.Marshal(f.Name)
		value, _ := json.Marshal(f.Value)
		b.Write(name)
		b.WriteString(": ")
		b.Write(value)
	}
	b.WriteByte('}')
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func (a *app) checkCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check SCRIPT.star[:FUNC]",
		Short: "Compile a script and check its function, for editors and CI",
		Long: `Compile SCRIPT.star and the modules it loads, run its top level, and check
that FUNC (default: consumer) takes (data) or (data, msg). Prints "ok" and
exits 0, or prints the first error as file:line:col: message and exits 2.
Code that compiles but fails when it runs is warned about on stderr (a
function that calls itself: Starlark has no recursion). Nothing talks to
Redis.`,
		Example: `  topix check app.star
  topix check scripts/router.star:consumer`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("check needs one script, SCRIPT.star[:FUNC], got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, log, err := a.load(cmd)
			if err != nil {
				return err
			}
			script, _, err := loadScript(args[0], cfg, log)
			if err != nil {
				return err
			}
			params := "data"
			if script.Arity() == 2 {
				params = "data, msg"
			}
			for _, w := range script.Warnings {
				fmt.Fprintf(a.stderr, "warning: %s\n", w)
			}
			fmt.Fprintf(a.stdout, "ok: %s: %s(%s), %d %s\n", script.Path, script.Func, params, len(script.Files), plural(len(script.Files), "file", "files"))
			return nil
		},
	}
	addScriptFlags(cmd)
	return cmd
}
