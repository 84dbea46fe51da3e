# nudge: common tasks. `make run` starts the whole local stack, `make test`
# runs the tests; `make help` lists every target.

GO            ?= go
STATICCHECK   ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
BENCH         ?= .
BENCHTIME     ?= 3s
FUZZTIME      ?= 1000x
# Fuzz targets as package:Target; `make fuzz` runs each for FUZZTIME (a count, not a duration: a time-boxed run can end in "context deadline exceeded" when an input is mid-run at the deadline).
FUZZ_TARGETS  := ./internal/feeds:FuzzParse ./internal/feeds:FuzzIdentity \
                 ./internal/httpapi:FuzzDecodeRegister ./internal/httpapi:FuzzDecodePatch \
                 ./internal/httpapi:FuzzDecodeFeed ./internal/httpapi:FuzzDecodeReceipt \
                 ./internal/httpapi:FuzzDecodeSync ./internal/httpapi:FuzzDecodeApp
.PHONY: help run test deps fuzz bench bench-1m lint build clean
.DEFAULT_GOAL := help

## help: list the targets with what each does
help:
	@awk -F': ' '/^## [a-z0-9-]+: /{sub(/^## /, ""); printf "  make %-7s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

## run: build and start the whole local stack in one process (cmd/devstack); Ctrl-C stops it
run:
	@echo "building nudge (first run: a few minutes)…"
	@mkdir -p bin
	@$(GO) build -o bin/devstack ./cmd/devstack
	@echo "starting bin/devstack (settings: bin/devstack -help)"
	@bin/devstack

## test: check the tools the tests need (scripts/deps.sh), go vet, 1,000 fuzzed inputs per fuzz target, then every test with -race
test: deps
	$(GO) vet ./...
	@$(MAKE) --no-print-directory fuzz
	@mkdir -p bin
	@$(GO) build -o bin/testprogress ./scripts/testprogress
	@echo "go test -race ./...: one line per package as it finishes (4 minutes on 2 idle cores, up to 14 when they are busy)"
	@bin/testprogress -race -timeout 30m ./...

## fuzz: run each fuzz target on FUZZTIME (1000x: 1,000 new inputs) beyond its seed corpus, which every test run covers
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name ($$pkg, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg >/tmp/nudge-fuzz.$$$$.log 2>&1 \
			|| { cat /tmp/nudge-fuzz.$$$$.log; rm -f /tmp/nudge-fuzz.$$$$.log; exit 1; }; \
		rm -f /tmp/nudge-fuzz.$$$$.log; \
	done

## deps: check redis-server 7+, chromium, gcc and kubectl; install them as root on Debian/Ubuntu
deps:
	@scripts/deps.sh

## bench: run the benchmarks (results go to docs/BENCHMARKS.md by hand)
bench:
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -timeout 60m ./...

## bench-1m: one breaking sync to 1M devices, dispatcher, api and emulator as their own processes (NUDGE_BENCH_DEVICES picks the size)
bench-1m:
	NUDGE_BENCH_DEVICES=$${NUDGE_BENCH_DEVICES:-1000000} $(GO) test -run '^$$' -bench '^BenchmarkFleet$$' -benchtime 1x -timeout 90m -v ./internal/benchfleet/

## lint: go vet plus staticcheck (skipped with a note when it cannot be fetched)
lint:
	$(GO) vet ./...
	@if $(GO) run $(STATICCHECK) -version >/dev/null 2>&1; then \
		$(GO) run $(STATICCHECK) ./... && echo "lint: go vet and staticcheck found nothing"; \
	else \
		echo "lint: staticcheck unavailable (no module proxy?); ran go vet only"; \
	fi

## build: build the binaries into bin/
build:
	mkdir -p bin
	$(GO) build -o bin/ ./cmd/...

## clean: remove bin/
clean:
	rm -rf bin
