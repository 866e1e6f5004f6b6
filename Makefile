# impound: make run (a whole drill against the simulated account), make test.
GO      ?= go
BIN     := bin/impound
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
DIRTY   := $(shell test -z "$$(git status --porcelain 2>/dev/null)" && echo false || echo true)
PKG     := github.com/impound-ir/impound/internal/buildinfo
LDFLAGS := -X $(PKG).Version=$(VERSION) -X $(PKG).Commit=$(COMMIT) -X $(PKG).Modified=$(DIRTY)

.PHONY: build lambda run test test-short bench lint

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/impound

# The GuardDuty Lambda's deployment package (provided.al2023, arm64):
# bin/impound-guardduty.zip holding bootstrap; see deploy/cloudformation.
lambda:
	mkdir -p bin/lambda
	GOOS=linux GOARCH=arm64 CGO_ENABLED=0 $(GO) build -trimpath -tags lambda.norpc -ldflags "$(LDFLAGS)" -o bin/lambda/bootstrap ./cmd/impound-guardduty
	cd bin/lambda && rm -f ../impound-guardduty.zip && zip -q ../impound-guardduty.zip bootstrap

# The main job on the embedded default: a drill against the simulated
# member and forensics accounts, into a local vault.
run: build
	./$(BIN) drill

# Everything, with MinIO and moto started (and stopped) by scripts/testenv.
test:
	scripts/testenv $(GO) test -count=1 -timeout 45m ./...

# Unit tests only: no servers, integration tests skip.
test-short:
	$(GO) test -short ./...

# Benchmarks, and impound side by side with the peer tools on the same data.
bench: build
	scripts/bench

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
