# nexus-operator — every target has a one-line description; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help venv tools test test-unit test-integration test-e2e lint manifests manifests-install proto run bench kind clean \
	image chart deploy helm-test

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml testkit/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -e ./testkit
	@# xds-protos ships an older copy of opentelemetry/proto/*; whichever wheel pip installs last wins,
	@# so put opentelemetry-proto's own files back (the OTLP exporter needs them; Envoy's stubs don't).
	$(PY) -m pip install --quiet --no-deps --force-reinstall \
	  "opentelemetry-proto==$$($(PY) -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
	@touch $(STAMP)

venv: $(STAMP) ## Create .venv and install the package with its dev dependencies

tools: ## Build (or reuse) kube-apiserver, etcd, helm, grpcurl, ghz and vegeta into ~/.cache/nexus-operator
	@tools/build.sh >/dev/null

test: venv tools ## Run every test (unit, integration and e2e against a real kube-apiserver + etcd)
	NEXUS_BIN_DIR="$$(tools/build.sh 2>/dev/null | tail -1)" $(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv ## Run the unit tests only (no control plane)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: venv tools ## Run the integration tests (real kube-apiserver + etcd)
	NEXUS_BIN_DIR="$$(tools/build.sh 2>/dev/null | tail -1)" $(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: venv tools ## Run the end-to-end tests (helm chart, gRPC endpoint, gateway through Envoy, the README quickstart)
	NEXUS_BIN_DIR="$$(tools/build.sh 2>/dev/null | tail -1)" $(PY) -m pytest tests/e2e tests/endpoint tests/gateway $(PYTEST_ARGS)

lint: venv ## ruff, ruff format --check, mypy --strict (product, testkit, benchmarks, tests) and the import-layer contracts
	$(VENV)/bin/ruff check operator testkit tests benchmarks
	$(VENV)/bin/ruff format --check operator testkit tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy benchmarks
	@# pytest puts each test folder on sys.path, so the three conftest.py are each `conftest`:
	@# mypy checks one group per folder that has its own conftest, with that folder on its path.
	MYPYPATH=tests:tests/unit $(VENV)/bin/mypy $$(find tests -name '*.py' -not -path 'tests/integration/*' -not -path 'tests/e2e/chart/*' -not -path 'tests/gateway/*')
	MYPYPATH=tests:tests/integration $(VENV)/bin/mypy tests/integration
	MYPYPATH=tests:tests/e2e/chart $(VENV)/bin/mypy tests/e2e/chart
	MYPYPATH=tests $(VENV)/bin/mypy tests/gateway
	$(VENV)/bin/lint-imports

proto: venv ## Regenerate the gRPC stubs in operator/nexus_operator/serving/proto from proto/
	$(PY) tools/protogen.py

manifests: venv ## Regenerate crds/ and docs/crd-reference.md from the API models
	$(VENV)/bin/nexus-operator crds --output-dir crds --reference docs/crd-reference.md

run: venv tools ## Start the local control plane, install CRDs and examples, run the operator with gRPC on localhost
	NEXUS_BIN_DIR="$$(tools/build.sh 2>/dev/null | tail -1)" $(PY) -m nexus_testkit.demo

clean: ## Remove the venv and caches in the work tree (not the ~/.cache binaries)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

bench: venv tools ## Run every benchmark, write benchmarks/results/*.json and BENCHMARKS.md
	$(PY) benchmarks/bench_pipeline.py
	NEXUS_BIN_DIR="$$(tools/build.sh 2>/dev/null | tail -1)" $(PY) benchmarks/bench_grpc.py
	NEXUS_BIN_DIR="$$(tools/build.sh 2>/dev/null | tail -1)" $(PY) benchmarks/bench_gil_isolation.py
	NEXUS_BIN_DIR="$$(tools/build.sh 2>/dev/null | tail -1)" $(PY) benchmarks/bench_operator.py
	NEXUS_BIN_DIR="$$(tools/build.sh 2>/dev/null | tail -1)" $(PY) benchmarks/bench_budgets.py
	NEXUS_BIN_DIR="$$(tools/build.sh 2>/dev/null | tail -1)" $(PY) benchmarks/bench_fleet.py
	NEXUS_BIN_DIR="$$(tools/build.sh 2>/dev/null | tail -1)" $(PY) benchmarks/bench_gateway.py
	$(PY) benchmarks/report.py >/dev/null
	@echo "wrote BENCHMARKS.md"

manifests-install: manifests tools ## Regenerate crds/, copy them into the chart and render manifests/install.yaml
	NEXUS_BIN_DIR="$$(tools/build.sh 2>/dev/null | tail -1)" tools/render-manifests.sh

# Release and install on a cluster. VERSION defaults to the git tag without its "v"
# (v0.2.0 -> 0.2.0); the chart is packaged with it as version and appVersion, so the chart's
# default image tag is the image `make image` pushed for the same tag.
VERSION      ?= $(shell git describe --tags --match 'v*' 2>/dev/null | sed 's/^v//' || true)
IMAGE        ?= nexus-operator:dev
PLATFORMS    ?= linux/amd64
IMAGE_OUTPUT ?= --load
HELM         ?= $(or $(shell command -v helm 2>/dev/null),$(shell tools/build.sh 2>/dev/null | tail -1)/helm)
RELEASE      ?= nexus-operator
NAMESPACE    ?= nexus-system
HELM_ARGS    ?=
DIST         ?= dist

image: ## Build the image with docker buildx: IMAGE=<ref>, PLATFORMS=linux/amd64,linux/arm64, IMAGE_OUTPUT=--push
	docker buildx build --platform '$(PLATFORMS)' --tag '$(IMAGE)' $(IMAGE_OUTPUT) .

chart: ## Package the chart into DIST (dist/) with VERSION as its version and appVersion (VERSION=0.2.0)
	@test -n '$(VERSION)' || { echo "make chart: set VERSION (no v* git tag found)" >&2; exit 2; }
	'$(HELM)' package charts/nexus-operator --version '$(VERSION)' --app-version '$(VERSION)' --destination '$(DIST)'

deploy: ## helm upgrade --install into the current kubectl context; labels NAMESPACE Pod Security restricted first
	kubectl create namespace '$(NAMESPACE)' --dry-run=client -o yaml | kubectl apply -f -
	kubectl label namespace '$(NAMESPACE)' --overwrite \
	  pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version=latest
	'$(HELM)' upgrade --install '$(RELEASE)' charts/nexus-operator --namespace '$(NAMESPACE)' --wait $(HELM_ARGS)

helm-test: ## helm test RELEASE in NAMESPACE (the gRPC health check of the Service; needs running pods)
	'$(HELM)' test '$(RELEASE)' --namespace '$(NAMESPACE)' --logs

KIND_CLUSTER ?= nexus
KIND_IMAGE   ?= nexus-operator:dev
kind: ## Needs Docker + kind (untested here): kind cluster, build+load image, install chart, apply examples
	kind get clusters | grep -qx '$(KIND_CLUSTER)' || kind create cluster --name '$(KIND_CLUSTER)'
	$(MAKE) image IMAGE='$(KIND_IMAGE)'
	kind load docker-image '$(KIND_IMAGE)' --name '$(KIND_CLUSTER)'
	$(MAKE) deploy HELM_ARGS="--set image.repository='$(firstword $(subst :, ,$(KIND_IMAGE)))' \
	  --set image.tag='$(lastword $(subst :, ,$(KIND_IMAGE)))' --set image.pullPolicy=Never $(HELM_ARGS)"
	kubectl apply -R -f examples/
	$(MAKE) helm-test
