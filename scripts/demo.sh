#!/usr/bin/env bash
# The quickstart, run for you by `make demo`: build topix, start the embedded
# dev server on a free port, run scripts/printer.star as a consumer, emit a
# few entries, show what the consumer printed, and stop everything it started.
# Needs Go only: no Redis.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=bin/topix
work=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

# wait_for FILE PATTERN COUNT: until FILE has COUNT lines matching PATTERN (10s).
wait_for() {
	for _ in $(seq 200); do
		if [ "$(grep -c -- "$2" "$1" 2>/dev/null || true)" -ge "$3" ]; then return 0; fi
		sleep 0.05
	done
	echo "demo: timed out waiting for '$2' in $1:" >&2
	cat "$1" >&2
	return 1
}

bold='' plain=''
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then bold=$'\033[1m' plain=$'\033[0m'; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }

step "go build -o $bin ./cmd/topix"
go build -o "$bin" ./cmd/topix

step "$bin dev --addr 127.0.0.1:0      # embedded in-memory server, free port"
"$bin" dev --addr 127.0.0.1:0 >"$work/dev.out" 2>"$work/dev.err" &
pids+=($!)
wait_for "$work/dev.out" '^redis://' 1
export TOPIX_REDIS_URL NO_COLOR=1
TOPIX_REDIS_URL=$(head -1 "$work/dev.out")
echo "listening on $TOPIX_REDIS_URL (data in memory only)"

step "$bin consumer demo printers scripts/printer.star &"
cat scripts/printer.star
"$bin" consumer demo printers scripts/printer.star 2>"$work/consumer.log" &
consumer=$!
pids+=("$consumer")

entries=(
	'{"hello": "world"}'
	'{"sku": "A-1", "qty": 2}'
	'{"user": "ada", "tags": ["admin", "ops"], "active": true}'
)
for e in "${entries[@]}"; do
	step "$bin emit demo '$e'"
	"$bin" emit demo "$e"
done

wait_for "$work/consumer.log" 'script=' "${#entries[@]}"
kill -TERM "$consumer"
wait "$consumer"

step "what the consumer printed (its log, on stderr)"
cat "$work/consumer.log"
printf '\nDone: %d entries emitted, printed and acked. Try it yourself: see README.md.\n' "${#entries[@]}"
