# Remora: an Istio-compatible sidecar injector.
# Every target has a "## help" comment; `make help` lists them.

GO          ?= go
BIN         := $(CURDIR)/bin
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.1.0-dev)
LDFLAGS     := -s -w -X github.com/remora-mesh/remora/pkg/version.Version=$(VERSION)
GOLANGCI_LINT_VERSION := v2.15.0

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the static injector binary into ./bin/injector
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='$(LDFLAGS)' -o $(BIN)/injector ./cmd/injector

.PHONY: fmt
fmt: ## Format the Go code
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet
	$(GO) vet ./...

.PHONY: test-unit
test-unit: ## Run the unit, golden and conformance tests
	$(GO) test -count=1 ./pkg/... ./cmd/... ./test/conformance/...

.PHONY: conformance
conformance: ## Run Istio's injection corpus and print how many cases match
	$(GO) test -count=1 -v -run TestIstioConformance ./test/conformance/ | grep -E 'conformance:|DIFF|EXTRA'

FUZZTIME ?= 20s
.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 20s)
	$(GO) test -run '^$$' -fuzz '^FuzzParsePortList$$' -fuzztime $(FUZZTIME) ./pkg/inject/
	$(GO) test -run '^$$' -fuzz '^FuzzParseCIDRList$$' -fuzztime $(FUZZTIME) ./pkg/inject/
	$(GO) test -run '^$$' -fuzz '^FuzzAnnotations$$' -fuzztime $(FUZZTIME) ./pkg/inject/

.PHONY: test
.PHONY: test-netns
test-netns: ## Run the traffic-capture test in real network namespaces (root)
	$(GO) test -count=1 ./test/e2e/netns/...

.PHONY: test
test: vet test-unit test-netns ## Run every test CI runs (unit, golden, conformance, e2e)

.PHONY: bench
bench: ## Run the benchmarks with allocation counts
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./pkg/...

$(BIN)/golangci-lint:
	GOBIN=$(BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

.PHONY: lint
lint: $(BIN)/golangci-lint ## Run golangci-lint (pinned, installed into ./bin)
	$(BIN)/golangci-lint run ./...
