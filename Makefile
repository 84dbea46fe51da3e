# nudge: common tasks. `make run` starts the whole local stack, `make test` runs the tests.

GO            ?= go
STATICCHECK   ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
BENCH         ?= .
BENCHTIME     ?= 3s
.PHONY: run test bench lint build clean

## run: the whole local stack in one process (cmd/devstack): embedded Redis (or NUDGE_REDIS_URL),
## api on :8080 with the console, dispatcher, push emulators, a news room and 1,000 simulated devices
run:
	$(GO) run ./cmd/devstack

## test: vet, then every test with the race detector (needs redis-server on PATH)
test:
	$(GO) vet ./...
	$(GO) test -race -timeout 30m ./...

## bench: benchmarks (results go to docs/BENCHMARKS.md by hand)
bench:
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -timeout 60m ./...

## lint: go vet plus staticcheck (skipped with a note when it cannot be fetched)
lint:
	$(GO) vet ./...
	@if $(GO) run $(STATICCHECK) -version >/dev/null 2>&1; then \
		$(GO) run $(STATICCHECK) ./...; \
	else \
		echo "lint: staticcheck unavailable (no module proxy?); ran go vet only"; \
	fi

## build: build the binaries into bin/
build:
	mkdir -p bin
	$(GO) build -o bin/ ./cmd/...

clean:
	rm -rf bin
