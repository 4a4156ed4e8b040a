# Remora: an Istio-compatible sidecar injector.
# Every target has a "## help" comment; `make help` lists them.

GO          ?= go
# Every Go build here is static: the injector and the test images (they run from scratch images), the suites'
# builds, the tools and the control plane (upstream builds every Kubernetes binary, kubelet included since
# 1.36, with CGO_ENABLED=0). One build configuration means a cold machine compiles each package once: with
# cgo on by default, the suites that build static binaries compiled all of client-go and controller-runtime a
# second time.
export CGO_ENABLED ?= 0
BIN         := $(CURDIR)/bin
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.1.0-dev)
LDFLAGS     := -s -w -X github.com/remora-mesh/remora/pkg/version.Version=$(VERSION)
GOLANGCI_LINT_VERSION := v2.15.0
HELM_VERSION          ?= v3.22.0
# hack/suite.sh runs a suite and records whether it passed and which tests it skipped, and why.
SUITE       := hack/suite.sh
# What `make test` runs, in order; it ends with hack/suite-summary.sh's report of each.
SUITES      := vet lint test-unit test-netns test-e2e test-e2e-node test-e2e-realpods test-e2e-install fuzz
SUITE_DIR   := $(BIN)/suites

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
	$(SUITE) vet $(GO) vet ./...

.PHONY: test-unit
test-unit: envtest-bins helm ## Run the unit, golden, conformance and chart tests (some start a real kube-apiserver)
	KUBEBUILDER_ASSETS=$(K8SBINS_DIR) $(SUITE) test-unit $(GO) test -count=1 ./pkg/... ./cmd/... ./internal/... ./hack/mkimage/... ./test/images/... ./test/conformance/... ./test/chart/...

.PHONY: conformance
conformance: ## Run Istio's injection corpus field for field: the count, kept differences, extras and any diff
	$(GO) test -count=1 -v -run 'TestIstioConformance|TestKeptDifferencesAreProven' ./test/conformance/ | grep -vE '^(=== RUN|--- PASS)'

FUZZTIME ?= 20
.PHONY: fuzz
fuzz: ## Run every fuzz target of the module for FUZZTIME seconds each (default 20); fails on a finding
	$(SUITE) fuzz hack/fuzz.sh $(FUZZTIME)

.PHONY: test-netns
test-netns: ## Run the traffic-capture test in real network namespaces (root)
	$(SUITE) test-netns $(GO) test -count=1 ./test/e2e/netns/...

.PHONY: test-e2e
test-e2e: envtest-bins ## Run the webhook end-to-end tests against a real control plane (15-60 s)
	KUBEBUILDER_ASSETS=$(K8SBINS_DIR) $(SUITE) test-e2e $(GO) test -count=1 -v ./test/e2e/ ./test/e2e/framework/

.PHONY: test-e2e-node
test-e2e-node: envtest-bins ## Run the real-pod e2e tests on a one-node cluster (root; containerd, runc, CNI plugins)
	REMORA_NODE_E2E=1 KUBEBUILDER_ASSETS=$(K8SBINS_DIR) $(SUITE) test-e2e-node $(GO) test -count=1 -v -timeout 20m ./test/e2e/node/

.PHONY: test-e2e-realpods
test-e2e-realpods: envtest-bins ## Run the webhook's six scenarios and the start-latency measurement on real pods (root; 2.5-5 min)
	REMORA_NODE_E2E=1 KUBEBUILDER_ASSETS=$(K8SBINS_DIR) $(SUITE) test-e2e-realpods $(GO) test -count=1 -v -timeout 30m ./test/e2e/realpods/

.PHONY: test-e2e-install
test-e2e-install: envtest-bins helm cert-manager ## The user's install journey on the one-node cluster: cert-manager, helm install, upgrade, failover, renewal, uninstall (root; 8-15 min)
	REMORA_NODE_E2E=1 KUBEBUILDER_ASSETS=$(K8SBINS_DIR) $(SUITE) test-e2e-install $(GO) test -count=1 -v -timeout 40m ./test/e2e/install/

.PHONY: node-up
node-up: envtest-bins ## Start the one-node e2e cluster for manual work until Ctrl-C (root)
	$(GO) run ./test/e2e/node/nodeup

.PHONY: local-cluster
local-cluster: envtest-bins ## Run a local control plane with the injector and examples/ injected (Ctrl-C stops it)
	KUBEBUILDER_ASSETS=$(K8SBINS_DIR) hack/local-cluster.sh

.PHONY: test
test: ## Run every test CI runs (lint, unit, golden, conformance, chart, netns, e2e, real pods, the install journey, 10 s of each fuzzer); ends with which suites ran, were skipped and why
	@rm -rf $(SUITE_DIR) && mkdir -p $(SUITE_DIR)
	@REMORA_SUITE_DIR=$(SUITE_DIR) $(MAKE) --no-print-directory -k $(SUITES) FUZZTIME=10; rc=$$?; \
	    hack/suite-summary.sh $(SUITE_DIR) $(SUITES) || rc=1; exit $$rc

.PHONY: bench
bench: ## Run the benchmarks with allocation counts (engine, patch, admission side by side with the floor)
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./pkg/inject/ ./internal/patch/ ./internal/webhook/

LOAD_DURATION ?= 20s
LOAD_SOAK     ?= 60s
LOAD_PODS     ?= 300
LOAD_ARGS     ?=
.PHONY: loadtest
loadtest: envtest-bins ## Drive injector serve and the floor over HTTPS at c=1 and c=16 (latency, CPU per admission, RSS), create pods with and without the webhook, then a soak; more flags in LOAD_ARGS (go run ./test/load -h)
	KUBEBUILDER_ASSETS=$(K8SBINS_DIR) $(GO) run ./test/load -duration $(LOAD_DURATION) -concurrency 1,16 -pods $(LOAD_PODS) -soak $(LOAD_SOAK) $(LOAD_ARGS)

N    ?= 20000
ARGS ?=
.PHONY: bench-controller
bench-controller: envtest-bins ## Scale benchmark of the upgrade controller: N injected pods (default 20000) on a real control plane; more flags in ARGS (go run ./test/scale -h)
	KUBEBUILDER_ASSETS=$(K8SBINS_DIR) $(GO) run ./test/scale -pods $(N) $(ARGS)

# --- a real control plane for tests (kube-apiserver, kube-controller-manager, etcd), kubectl, and a node
# (kube-scheduler, kubelet), all built from the Go module proxy (hack/k8sbins; 17 min in the last cold run, 2 s warm)
K8SBINS_DIR := $(CURDIR)/bin/k8s
K8SBINS     := $(K8SBINS_DIR)/kube-apiserver $(K8SBINS_DIR)/kube-controller-manager $(K8SBINS_DIR)/etcd $(K8SBINS_DIR)/kubectl \
               $(K8SBINS_DIR)/kube-scheduler $(K8SBINS_DIR)/kubelet
GOBUILD_P   ?= 2
# stamp the version, or the binaries report v0.0.0-master (discovery, kubectl skew checks, version-gated features)
K8S_LDFLAGS := -s -w -X k8s.io/component-base/version.gitVersion=v1.37.2 \
               -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 \
               -X k8s.io/component-base/version.gitTreeState=clean

.PHONY: envtest-bins
envtest-bins: $(K8SBINS) ## Build kube-apiserver, etcd, kube-controller-manager, kubectl, kube-scheduler, kubelet into ./bin/k8s

# one go build for all six: shared packages compile once; the stamp keeps make from relinking
$(K8SBINS) &: hack/k8sbins/go.mod hack/k8sbins/go.sum hack/k8sbins/etcd/main.go
	mkdir -p $(K8SBINS_DIR)
	cd hack/k8sbins && $(GO) build -p $(GOBUILD_P) -ldflags='$(K8S_LDFLAGS)' -o $(K8SBINS_DIR)/ \
	    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
	    k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet ./etcd
	touch $(K8SBINS)

# --- cert-manager's controller and CA injector for the install journey, built from the Go module proxy
# (hack/certmanager: a module of its own, so the product's go.mod stays lean; about 7-10 min cold, seconds warm),
# with the CRDs of the same module version copied beside it.
CERTMANAGER      := $(BIN)/cert-manager
CERTMANAGER_CRDS := $(BIN)/cert-manager-crds

$(CERTMANAGER) &: hack/certmanager/go.mod hack/certmanager/go.sum hack/certmanager/main.go
	cd hack/certmanager && $(GO) build -p $(GOBUILD_P) -ldflags='-s -w' -o $(CERTMANAGER) .
	rm -rf $(CERTMANAGER_CRDS) && mkdir -p $(CERTMANAGER_CRDS)
	cp "$$(cd hack/certmanager && $(GO) list -m -f '{{.Dir}}' github.com/cert-manager/cert-manager)"/deploy/crds/*.yaml $(CERTMANAGER_CRDS)/
	chmod 0644 $(CERTMANAGER_CRDS)/*.yaml
	touch $(CERTMANAGER)

.PHONY: cert-manager
cert-manager: $(CERTMANAGER) ## Build cert-manager (hack/certmanager) into ./bin/cert-manager, its CRDs into ./bin/cert-manager-crds

$(BIN)/helm:
	GOBIN=$(BIN) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

.PHONY: helm
helm: $(BIN)/helm ## Install the pinned helm into ./bin (only when missing)

.PHONY: helm-lint
helm-lint: $(BIN)/helm ## Lint the chart (default, HA, self-managed) and run the chart tests
	$(BIN)/helm lint --strict charts/remora
	$(BIN)/helm lint --strict charts/remora -f charts/remora/values-ha.yaml
	$(BIN)/helm lint --strict charts/remora --set certManager.enabled=false
	KUBEBUILDER_ASSETS=$(K8SBINS_DIR) $(GO) test -count=1 ./test/chart/

$(BIN)/golangci-lint:
	GOBIN=$(BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

.PHONY: lint
lint: $(BIN)/golangci-lint ## Run golangci-lint (pinned, installed into ./bin)
	@# --allow-parallel-runners: golangci-lint otherwise refuses to run beside another instance on the
	@# machine (a lock in /tmp), failing the suite when two checkouts are tested at once.
	$(SUITE) lint $(BIN)/golangci-lint run --allow-parallel-runners --timeout 10m ./...
