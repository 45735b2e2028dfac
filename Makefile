# topix: run `make demo` to see it work, `make test` to check it.
GO ?= go
SHELL := /bin/bash

.PHONY: all build test browser redis-server chaos bench bench-cluster microbench lint demo clean

all: lint test

build: ## build bin/topix
	$(GO) build -buildvcs=auto -o bin/topix ./cmd/topix

test: redis-server ## the whole test suite, with the race detector
	$(GO) test -race ./...

browser: redis-server ## the web page in headless Chromium (apt-get install -y chromium); screenshots in bin/screenshots
	$(GO) test -tags browser -count=1 -v -timeout 5m -run InABrowser ./web/

redis-server: ## the tests start private redis-servers: install one if missing (as root, with apt-get)
	@command -v redis-server >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update && apt-get install -y redis-server; \
		else \
			echo "the tests need redis-server on PATH: sudo apt-get install -y redis-server (or brew install redis)"; exit 1; \
		fi; }

chaos: redis-server ## the fault suite: the real binary against real redis-server processes, killed and restarted
	@mkdir -p bin
	$(GO) test -tags chaos -count=1 -v -timeout 10m ./internal/faults/ > bin/chaos.log 2>&1; rc=$$?; \
	grep -E '^ *(--- |PASS|FAIL|ok|panic)|^fault suite figures|^  [a-w]\. |_test.go:[0-9]+: ' bin/chaos.log; \
	if [ $$rc != 0 ]; then echo "--- the end of bin/chaos.log:"; tail -200 bin/chaos.log; fi; exit $$rc

bench: build ## drain throughput against a plain go-redis loop, RSS, latency, ingest (docs/benchmarks.md)
	$(GO) run ./cmd/topix-bench -topix bin/topix

bench-cluster: build ## drain three streams from one redis-server and from a 3-master cluster (docs/cluster.md)
	$(GO) run ./cmd/topix-bench -topix bin/topix -cluster

microbench: ## the per-entry path: entry -> Starlark dict -> call -> outcome
	$(GO) test -run '^$$' -bench . -benchmem ./starlib

lint: ## gofmt, go vet and staticcheck
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags chaos ./internal/faults/
	$(GO) vet -tags browser ./web/
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

demo: ## build, start an in-memory server, consume and emit; needs Go only
	./scripts/demo.sh

clean:
	rm -rf bin
