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

CONTROLLER_GEN ?= $(GO) tool controller-gen
# controller-gen arguments shared by `manifests` and `verify-generated`.
CRD_PATHS := paths="./api/..."
RBAC_PATHS := paths="./controllers/..."

.PHONY: manifests
manifests: ## Generate the CRDs and ClusterRole into config/ and the chart, and docs/api-reference.md.
	$(CONTROLLER_GEN) crd $(CRD_PATHS) output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=manager-role $(RBAC_PATHS) output:rbac:artifacts:config=config/rbac
	$(MAKE) chart-sync
	$(GO) run ./hack/apidocs config/crd/bases > docs/api-reference.md

.PHONY: generate
generate: ## Generate the DeepCopy methods of the API types.
	$(CONTROLLER_GEN) object $(CRD_PATHS)

.PHONY: verify-generated
verify-generated: ## Fail when the committed CRDs, ClusterRole or DeepCopy code are stale.
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	$(CONTROLLER_GEN) crd $(CRD_PATHS) output:crd:artifacts:config="$$tmp/crd"; \
	$(CONTROLLER_GEN) rbac:roleName=manager-role $(RBAC_PATHS) output:rbac:artifacts:config="$$tmp/rbac"; \
	cp api/v1alpha1/zz_generated.deepcopy.go "$$tmp/deepcopy.committed"; \
	$(CONTROLLER_GEN) object $(CRD_PATHS); \
	cp api/v1alpha1/zz_generated.deepcopy.go "$$tmp/deepcopy.generated"; \
	cp "$$tmp/deepcopy.committed" api/v1alpha1/zz_generated.deepcopy.go; \
	stale=0; \
	diff -r config/crd/bases "$$tmp/crd" || stale=1; \
	diff config/rbac/role.yaml "$$tmp/rbac/role.yaml" || stale=1; \
	diff api/v1alpha1/zz_generated.deepcopy.go "$$tmp/deepcopy.generated" || stale=1; \
	$(GO) run ./hack/apidocs config/crd/bases > "$$tmp/api-reference.md"; \
	diff docs/api-reference.md "$$tmp/api-reference.md" || stale=1; \
	if [[ $$stale == 1 ]]; then echo "generated files are stale: run 'make manifests generate' and commit the result" >&2; exit 1; fi

.PHONY: test
test: verify-generated vet ## Run every test (unit, node, envtest) with the race detector.
	KUBEBUILDER_ASSETS="$$(ENVTEST_K8S_VERSION=$(ENVTEST_K8S_VERSION) hack/setup-envtest.sh)" \
		$(GO) test -race -count=1 -timeout 45m ./...

.PHONY: test-e2e
test-e2e: docker-build ## Run the end-to-end scenario on a one-node cluster of real binaries started on this host (root; builds everything offline).
	E2E_BIN_DIR="$$(ENVTEST_K8S_VERSION=$(ENVTEST_K8S_VERSION) hack/e2e-assets.sh)" THINGDB_E2E=1 E2E_IMAGE=$(IMG) \
		$(GO) test -count=1 -timeout 60m ./test/e2e/ -v -args -ginkgo.label-filter=e2e -ginkgo.v

.PHONY: bench-operator
bench-operator: ## Create 200 ThingNodes at once on envtest and print time to converge and writes per ThingNode.
	KUBEBUILDER_ASSETS="$$(ENVTEST_K8S_VERSION=$(ENVTEST_K8S_VERSION) hack/setup-envtest.sh)" THINGDB_BENCH_OPERATOR=1 \
		$(GO) test -count=1 -timeout 30m ./controllers/ -run TestControllers -v -args -ginkgo.v

.PHONY: bench
bench: ## Run the benchmarks and write docs/benchmarks.md.
	hack/bench.sh

.PHONY: bench-node
bench-node: ## Run the node benchmarks (put, import, sync, 5-node mesh) and write their section of docs/benchmarks.md.
	hack/bench-node.sh

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

# Packaging: the image, the Helm chart and the demos.

# Image that docker-build tags, compose-demo runs and kind-demo loads.
IMG ?= thingdb:dev
# local: copy bin/thingdb and bin/manager from `make build` into an empty image
# (pulls nothing). source: compile in the Dockerfile's golang builder stage
# (needs a container registry and the Go module proxy).
DOCKER_BUILD_MODE ?= local
DOCKER ?= docker
CHART_DIR ?= charts/thingdb-operator

.PHONY: docker-build
docker-build: ## Build the image IMG with both binaries (DOCKER_BUILD_MODE=local or source).
	@case "$(DOCKER_BUILD_MODE)" in \
		local) $(MAKE) --no-print-directory build && $(DOCKER) build --target local -t $(IMG) . ;; \
		source) $(DOCKER) build -t $(IMG) . ;; \
		*) echo "invalid DOCKER_BUILD_MODE '$(DOCKER_BUILD_MODE)': use local (binaries from make build, pulls nothing) or source (golang builder stage)" >&2; exit 2 ;; \
	esac

.PHONY: chart-sync
chart-sync: ## Copy the CRDs and RBAC rules from config/ into the Helm chart (after make manifests).
	mkdir -p $(CHART_DIR)/crds $(CHART_DIR)/files
	rm -f $(CHART_DIR)/crds/*.yaml
	cp config/crd/bases/*.yaml $(CHART_DIR)/crds/
	cp config/rbac/role.yaml $(CHART_DIR)/files/manager-role.yaml
	cp config/rbac/leader_election_role.yaml $(CHART_DIR)/files/leader-election-role.yaml

.PHONY: helm-lint
helm-lint: ## Lint the Helm chart and run its render and drift tests.
	$(GO) tool helm lint --strict $(CHART_DIR)
	$(GO) test -count=1 ./charts/...

.PHONY: compose-demo
compose-demo: ## Run two TLS nodes in Docker Compose, push an entry between them, tear down.
	hack/compose-demo.sh

.PHONY: kind-demo
kind-demo: ## Create a kind cluster and install the operator and samples (needs internet).
	hack/kind-demo.sh
