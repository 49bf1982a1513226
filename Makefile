# ThingDB build, test and generation targets. `make help` lists them.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

GO ?= go
# Kubernetes release of the envtest control plane; matches k8s.io/* in go.mod.
ENVTEST_K8S_VERSION ?= 1.37.2
# Time each fuzz target runs under `make fuzz`.
FUZZTIME ?= 30s
BIN ?= bin

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

.PHONY: fmt
fmt: ## Format the Go code.
	$(GO) fmt ./...

.PHONY: vet
vet: ## Run go vet.
	$(GO) vet ./...

.PHONY: envtest
envtest: ## Build (or reuse) the envtest control plane and print its directory.
	@ENVTEST_K8S_VERSION=$(ENVTEST_K8S_VERSION) hack/setup-envtest.sh

.PHONY: test
test: vet ## Run every test (unit, node, envtest) with the race detector.
	KUBEBUILDER_ASSETS="$$(ENVTEST_K8S_VERSION=$(ENVTEST_K8S_VERSION) hack/setup-envtest.sh)" \
		$(GO) test -race -count=1 -timeout 45m ./...

.PHONY: bench
bench: ## Run the benchmarks and write docs/benchmarks.md.
	hack/bench.sh

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each.
	@for pkg in $$($(GO) list ./...); do \
		for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "fuzz $$pkg $$target for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

.PHONY: build
build: ## Build the thingdb and manager binaries into bin/.
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/thingdb ./cmd/thingdb
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/manager ./cmd/manager
