# One image, `llm-keda-scaler`, for every component (they are one Python package):
#   the scaler:   python -m scaler serve   (the default command)
#   the sidecar:  python -m sidecar        (the container command in the inference pod)
#   the gateway:  python -m gateway        (in front of the inference Deployments)
# Built by `make image` as $(IMAGE):$(IMAGE_TAG); the manifests use that name.
#
# Runs as the numeric, non-root UID 10001 and writes nothing: the manifests run it
# with a read-only root filesystem.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: generate the gRPC code (never committed) and build the wheel -------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN pip install "grpcio-tools>=1.62" "setuptools>=77" wheel
COPY pyproject.toml README.md ./
COPY proto/ proto/
COPY scaler/ scaler/
COPY sidecar/ sidecar/
COPY gateway/ gateway/
# As `make gen` does: scaler/_generated/externalscaler_pb2{,_grpc}.py from proto/.
RUN python -m grpc_tools.protoc --proto_path=scaler/_generated=proto \
        --python_out=. --grpc_python_out=. proto/externalscaler.proto \
    && test -f scaler/_generated/externalscaler_pb2_grpc.py \
    && pip wheel --no-deps --wheel-dir /wheels .

# --- runtime: the wheel and its dependencies, no compilers, no build tools -------
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
# pip compiles the bytecode now: at run time nothing can write __pycache__.
# The runtime only: the simulator's matplotlib (the `sim` extra) stays out; numpy comes
# with tritonclient, the worker's client to Triton.
RUN pip install /wheels/*.whl \
    && rm -rf /wheels \
    && python -c "import scaler._generated.externalscaler_pb2_grpc, sidecar.config, gateway.config" \
    && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('matplotlib') is not None)"
USER 10001:10001
# gRPC, scaler metrics, sidecar metrics + /healthz, gateway HTTP, gateway metrics
EXPOSE 9090 9100 9102 8000 9103
CMD ["python", "-m", "scaler", "serve"]
