# topix: run `make demo` to see it work, `make test` to check it.
GO ?= go

.PHONY: all build test lint demo clean

all: lint test

build: ## build bin/topix
	$(GO) build -o bin/topix ./cmd/topix

test: ## the whole test suite, with the race detector (needs redis-server on PATH)
	$(GO) test -race ./...

lint: ## gofmt and go vet
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

demo: ## build, start an in-memory server, consume and emit; needs Go only
	./scripts/demo.sh

clean:
	rm -rf bin
