# Telegauge. `make run` starts a server with a demo fleet on
# http://127.0.0.1:8080; `make test` runs every test.

GO      ?= go
BIN     ?= bin/telegauge
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
DEMO    ?= 20

.PHONY: all build run test test-short bench fuzz lint clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/telegauge

run: build
	$(BIN) serve --demo $(DEMO)

# Every test: unit, fuzz seed corpora, full-stack integration. Race
# detector on.
test: lint
	$(GO) test -race -count=1 -tags integration -timeout 12m ./...

# The quick loop while editing: no integration tests, no race detector.
test-short:
	$(GO) test ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Run each fuzzer for FUZZTIME (seeds always run as part of `make test`).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./ingest/
	$(GO) test -run '^$$' -fuzz '^FuzzTopic$$' -fuzztime $(FUZZTIME) ./ingest/
	$(GO) test -run '^$$' -fuzz '^FuzzRollup$$' -fuzztime $(FUZZTIME) ./ingest/rollup/

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin
