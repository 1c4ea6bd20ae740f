# Telegauge. `make run` starts a server with a demo fleet on
# http://127.0.0.1:8080; `make test` runs every test.

GO      ?= go
NPM     ?= npm
BIN     ?= bin/telegauge
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
DEMO    ?= 20
UI      := web/ui
# Every input of the dashboard's build.
UI_SRC  := $(shell find $(UI)/src $(UI)/index.html $(UI)/vite.config.ts $(UI)/tsconfig.json -type f 2>/dev/null)

.PHONY: all build ui run test test-go test-ui test-browser test-short bench bench-report fuzz lint clean

all: build

# The dashboard is built first and embedded in the binary.
build: ui
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/telegauge

ui: $(UI)/dist/app/index.html

$(UI)/node_modules/.installed: $(UI)/package.json $(UI)/package-lock.json
	cd $(UI) && $(NPM) ci --no-audit --no-fund
	touch $@

$(UI)/dist/app/index.html: $(UI)/node_modules/.installed $(UI_SRC)
	cd $(UI) && $(NPM) run build

run: build
	$(BIN) serve --demo $(DEMO)

# Every test: Go (unit, fuzz seed corpora, full-stack integration, race
# detector on), the live client's unit tests, and the browser tests in
# Debian's Chromium.
test: lint test-go test-ui test-browser

test-go:
	$(GO) test -race -count=1 -tags integration -timeout 12m ./...

test-ui: $(UI)/node_modules/.installed
	cd $(UI) && $(NPM) run typecheck && $(NPM) test

test-browser: build
	cd $(UI) && TELEGAUGE_BIN=$(abspath $(BIN)) ARTIFACTS=$(abspath test-artifacts) $(NPM) run test:browser

# The quick loop while editing: no integration tests, no race detector.
test-short:
	$(GO) test ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# The benchmark matrix of README's performance section: a server on core 1,
# the load on core 0; writes test-artifacts/bench.json and bench.html.
bench-report: build
	mkdir -p test-artifacts
	taskset -c 0 $(BIN) bench --server-cpus 1 --json test-artifacts/bench.json --html test-artifacts/bench.html

# Run each fuzzer for FUZZTIME (seeds always run as part of `make test`).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./ingest/
	$(GO) test -run '^$$' -fuzz '^FuzzTopic$$' -fuzztime $(FUZZTIME) ./ingest/
	$(GO) test -run '^$$' -fuzz '^FuzzRollup$$' -fuzztime $(FUZZTIME) ./ingest/rollup/
	$(GO) test -run '^$$' -fuzz '^FuzzSSEFrame$$' -fuzztime $(FUZZTIME) ./web/
	$(GO) test -run '^$$' -fuzz '^FuzzJournal$$' -fuzztime $(FUZZTIME) ./ingest/store/
	$(GO) test -run '^$$' -fuzz '^FuzzParsePatterns$$' -fuzztime $(FUZZTIME) ./dashboard/
	$(GO) test -run '^$$' -fuzz '^FuzzCursor$$' -fuzztime $(FUZZTIME) ./dashboard/
	$(GO) test -run '^$$' -fuzz '^FuzzParseTime$$' -fuzztime $(FUZZTIME) ./dashboard/
	$(GO) test -run '^$$' -fuzz '^FuzzParseStep$$' -fuzztime $(FUZZTIME) ./dashboard/
	$(GO) test -run '^$$' -fuzz '^FuzzQuery$$' -fuzztime $(FUZZTIME) ./dashboard/
	$(GO) test -run '^$$' -fuzz '^FuzzNormalizeBoard$$' -fuzztime $(FUZZTIME) ./dashboard/
	$(GO) test -run '^$$' -fuzz '^FuzzQueryParams$$' -fuzztime $(FUZZTIME) ./web/
	$(GO) test -run '^$$' -fuzz '^FuzzExportParams$$' -fuzztime $(FUZZTIME) ./web/
	$(GO) test -run '^$$' -fuzz '^FuzzPollParams$$' -fuzztime $(FUZZTIME) ./web/
	$(GO) test -run '^$$' -fuzz '^FuzzLiveParams$$' -fuzztime $(FUZZTIME) ./web/
	$(GO) test -run '^$$' -fuzz '^FuzzBoardBody$$' -fuzztime $(FUZZTIME) ./web/
	$(GO) test -run '^$$' -fuzz '^FuzzWSMessage$$' -fuzztime $(FUZZTIME) ./web/
	$(GO) test -run '^$$' -fuzz '^FuzzClientIP$$' -fuzztime $(FUZZTIME) ./web/
	$(GO) test -run '^$$' -fuzz '^FuzzSession$$' -fuzztime $(FUZZTIME) ./broker/
	$(GO) test -run '^$$' -fuzz '^FuzzParseSSE$$' -fuzztime $(FUZZTIME) ./simulators/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeLive$$' -fuzztime $(FUZZTIME) ./simulators/

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin test-artifacts $(UI)/dist/app
