"""A Triton someone else controls: Triton's real gRPC API and a metrics page in Triton's format.

Used by the sidecar tests and by the local demo's simulated pods (`scaler.demo.pod`),
which set its load from the requests they serve.

The gRPC side is tritonclient's own generated servicer
(`service_pb2_grpc.GRPCInferenceServiceServicer`) on a real server on loopback,
answering ServerLive / ServerReady / ModelReady / ModelConfig / ServerMetadata from the state the
test sets; anything else answers UNIMPLEMENTED, as the base class does. The HTTP
side answers the same readiness as Triton's HTTP API does (`/v2/health/ready`,
`/v2/models/<m>/ready`: 200 or 400), each model's configuration
(`/v2/models/<m>/config`), and serves `exposition(...)` text at `/metrics`
(one port for both, where Triton has 8000 and 8002), laid out the way
Triton prints it (HELP/TYPE lines, labels in alphabetical order, counters without
`_total`, GPU families the sidecar must skip). Both run in threads, so sync and
asyncio tests can use them alike, and `stop`/`start` keep the ports, as a
restarted Triton container would.

`serve_infer` makes the HTTP side execute a model as well: KServe v2
`POST /v2/models/<m>[/versions/<v>]/infer` with JSON tensors, as tritonclient's HTTP
client sends it. Each request is held for the model's service time (a function of its
inputs) in its own thread, at most `slots` at once (the rest wait, as in the engine's own
queue); the count executing and waiting is published as TensorRT-LLM's `active` and
`waiting` gauges, and Triton's success and duration counters move as each completes.
The answer carries two FP64 outputs: `started_at` (unix seconds the execution began) and
`service_s` (how long it was held). A model not ready answers 400, as Triton does.

`serve_batcher` makes a model a TensorRT-LLM engine with an in-flight batcher, emulated
(what a real server cannot show without a GPU): a request (input `OUTPUT_TOKENS`) joins
the batch, at most `max_active` at once (the rest wait); each iteration gives one token
to every sequence in the batch and takes `step_s(sequences)`, a known curve
(`h200_step_s`: the H200 measurement at 1,024 tokens of context, slowed by a factor so
the sleeps stay precise on a loaded machine); a request is answered after its last
token. The iterations keep to a schedule (each ends `step_s` after the previous one's
planned end), so a late wake-up shortens the next sleep and the mean step is the
curve's. Its gauges are published as the backend publishes them: the latest iteration's
stats copied at most every STATS_PERIOD_S: `iteration_counter`, `timestamp`
(microseconds since the epoch), `active`, `generation_requests`, `waiting`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from scaler.local_redis import free_port
from scaler.simulator.presets import H200 as H200_PROFILE
from scaler.simulator.profile import load as load_profile
from sidecar.worker_engine import flat_data


@dataclass
class TrtFigures:
    """The TensorRT-LLM backend's gauges for one model. None: not published (older backend)."""

    active: float = 0
    max: float = 256
    scheduled: float = 0
    context: float = 0
    waiting: float | None = None
    kv_max: float | None = 1000
    kv_used: float | None = 0
    kv_fraction: float | None = None
    # None: in the stand-in, the engine's own counter, moving on each scrape while it has
    # work, as a real engine iterates every few ms; a number pins it (None in `exposition`:
    # not published, as by older backends).
    iteration_counter: float | None = None
    kv_tokens_per: float | None = 64
    # The latest iteration's time stamp, microseconds since the epoch, and its requests in
    # the generation phase (the in-flight batcher's family). None: not published.
    timestamp: float | None = None
    generation: float | None = None

    @property
    def kv_free(self) -> float | None:
        if self.kv_max is None or self.kv_used is None:
            return None
        return self.kv_max - self.kv_used


@dataclass
class ModelFigures:
    pending: float = 0
    request_duration_us: float = 0
    queue_duration_us: float = 0
    compute_infer_duration_us: float = 0
    success: float = 0
    trt: TrtFigures | None = None
    versions: tuple[str, ...] = ("1",)
    # Triton's model configuration as its HTTP API answers it (JSON); None: a plain
    # model of the tensorrtllm backend when `trt` is set, else of the python backend.
    config: dict[str, Any] | None = None

    def config_json(self, name: str) -> dict[str, Any]:
        if self.config is not None:
            return {"name": name, **self.config}
        return {"name": name, "platform": "", "backend": "tensorrtllm" if self.trt else "python"}


def ensemble_config(*steps: str) -> dict[str, Any]:
    """The configuration of an ensemble calling `steps` in turn."""
    return {
        "platform": "ensemble",
        "ensemble_scheduling": {"step": [{"model_name": s, "model_version": -1} for s in steps]},
    }


# (family, TYPE, HELP, ModelFigures attribute), in the order Triton prints them.
_MODEL_FAMILIES = (
    ("nv_inference_request_success", "counter",
     "Number of successful inference requests, all batch sizes", "success"),
    ("nv_inference_request_duration_us", "counter",
     "Cumulative inference request duration in microseconds (includes cached requests)",
     "request_duration_us"),
    ("nv_inference_queue_duration_us", "counter",
     "Cumulative inference queuing duration in microseconds (includes cached requests)",
     "queue_duration_us"),
    ("nv_inference_compute_infer_duration_us", "counter",
     "Cumulative compute inference duration in microseconds (does not include cached requests)",
     "compute_infer_duration_us"),
    ("nv_inference_pending_request_count", "gauge",
     "Instantaneous number of pending requests awaiting execution per-model.", "pending"),
)  # fmt: skip
# (family, HELP, category label, {label value: TrtFigures attribute}), as the backend names them.
_TRT_FAMILIES = (
    ("nv_trt_llm_request_metrics", "TRT LLM request metrics", "request_type",
     {"waiting": "waiting", "context": "context", "scheduled": "scheduled", "max": "max",
      "active": "active"}),
    ("nv_trt_llm_kv_cache_block_metrics", "TRT LLM KV cache block metrics", "kv_cache_block_type",
     {"fraction": "kv_fraction", "tokens_per": "kv_tokens_per", "used": "kv_used",
      "free": "kv_free", "max": "kv_max"}),
    ("nv_trt_llm_inflight_batcher_metrics", "TRT LLM inflight_batcher-specific metrics",
     "inflight_batcher_specific_metric", {"generation_requests": "generation"}),
    ("nv_trt_llm_general_metrics", "General TRT LLM metrics", "general_type",
     {"timestamp": "timestamp", "iteration_counter": "iteration_counter"}),
)  # fmt: skip

Rows = list[tuple[dict[str, str], float]]


def exposition(models: dict[str, ModelFigures], gpus: int = 2) -> str:
    """Metrics page text for `models`; each version of a model shows the same figures."""
    out: list[str] = []

    def family(name: str, kind: str, doc: str, rows: Rows) -> None:
        out.append(f"# HELP {name} {doc}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in rows:
            text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            out.append(f"{name}{{{text}}} {_number(value)}")

    for name, kind, doc, attr in _MODEL_FAMILIES:
        rows: Rows = [
            ({"model": m, "version": v}, getattr(f, attr))
            for m, f in models.items()
            for v in f.versions
        ]
        family(name, kind, doc, rows)
    trt = {m: f for m, f in models.items() if f.trt is not None}
    for name, doc, label, kinds in _TRT_FAMILIES if trt else ():
        rows = []
        for m, f in trt.items():
            for kind, attr in kinds.items():
                value = getattr(f.trt, attr)
                if value is not None:
                    rows += [({"model": m, "version": v, label: kind}, value) for v in f.versions]
        if rows or name != "nv_trt_llm_inflight_batcher_metrics":
            family(name, "gauge", doc, rows)
    gpu = [({"gpu_uuid": f"GPU-{i:08x}-0000-0000-0000-000000000000"}, 0.5) for i in range(gpus)]
    family("nv_gpu_utilization", "gauge", "GPU utilization rate [0.0 - 1.0)", gpu)
    family("nv_gpu_memory_total_bytes", "gauge", "GPU total memory, in bytes", gpu)
    family("nv_gpu_memory_used_bytes", "gauge", "GPU used memory, in bytes", gpu)
    family("nv_cpu_utilization", "gauge", "CPU utilization rate [0.0 - 1.0]", [({}, 0.1)])
    return "\n".join(out) + "\n"


def _number(value: float) -> str:
    """A sample's value: a whole number in full (a time stamp in microseconds has 16
    digits, as Triton prints it), anything else in short."""
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return f"{value:g}"


# The inputs of one request, by name, as flat lists (KServe v2 data is row-major).
Inputs = Mapping[str, list[Any]]


@dataclass(frozen=True)
class InferModel:
    """A model the stand-in executes. `service_s(inputs)` raises KeyError/ValueError for
    inputs it cannot use; the client gets 400 naming them."""

    slots: int
    service_s: Callable[[Inputs], float]


@dataclass
class _Executing:
    model: InferModel
    gate: threading.Semaphore
    active: int = 0
    waiting: int = 0
    success: int = 0
    request_us: float = 0.0
    queue_us: float = 0.0
    compute_us: float = 0.0


STATS_PERIOD_S = 0.1  # the backend's stats_check_period_ms default


def h200_step_s(factor: float) -> Callable[[float], float]:
    """Seconds a step takes with n sequences decoded together on an H200 at 1,024 tokens of
    context (the simulator's measured profile, scaler/simulator/profiles/), times `factor`."""
    profile = load_profile(H200_PROFILE)
    assert profile is not None  # a measured profile, never `simple`

    def step_s(sequences: float) -> float:
        return factor * profile.step_ms(sequences, 1024.0) / 1000.0

    return step_s


@dataclass(frozen=True)
class BatcherModel:
    """An engine with an in-flight batcher: `step_s(sequences)` a step, at most `max_active`
    sequences in the batch."""

    step_s: Callable[[int], float]
    max_active: int = 256


@dataclass
class _Sequence:
    tokens_left: int
    arrived: float
    started: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Batching:
    """One emulated engine: its queue, its batch, and what it last published."""

    model: BatcherModel
    queue: deque[_Sequence] = field(default_factory=deque)
    batch: list[_Sequence] = field(default_factory=list)
    iterations: int = 0
    published: TrtFigures = field(
        default_factory=lambda: TrtFigures(iteration_counter=0, timestamp=0, generation=0)
    )
    published_at: float = float("-inf")
    success: int = 0
    request_us: float = 0.0
    queue_us: float = 0.0
    compute_us: float = 0.0


@dataclass
class _State:
    server_ready: bool = False
    ready_models: set[str] = field(default_factory=set)
    models: dict[str, ModelFigures] | None = None  # rendered at each scrape
    metrics_text: str = ""  # served as is when `models` is None
    metrics_status: int = 200
    health_status: int | None = None  # forced answer of /v2/health/ready (a proxy's, say)
    iterations: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    executing: dict[str, _Executing] = field(default_factory=dict)
    batching: dict[str, _Batching] = field(default_factory=dict)


def _published(figures: TrtFigures, engine: TrtFigures) -> TrtFigures:
    """`figures` with the gauges an emulated engine publishes laid over them."""
    return replace(
        figures,
        active=engine.active,
        max=engine.max,
        scheduled=engine.scheduled,
        waiting=engine.waiting,
        iteration_counter=engine.iteration_counter,
        timestamp=engine.timestamp,
        generation=engine.generation,
    )


class _Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, state: _State, lock: threading.Lock) -> None:
        self._state = state
        self._lock = lock

    def _count(self, method: str) -> None:
        with self._lock:
            self._state.calls[method] = self._state.calls.get(method, 0) + 1

    def ServerLive(self, request: Any, context: Any) -> Any:
        self._count("ServerLive")
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> Any:
        self._count("ServerReady")
        with self._lock:
            return service_pb2.ServerReadyResponse(ready=self._state.server_ready)

    def ModelReady(self, request: Any, context: Any) -> Any:
        self._count("ModelReady")
        with self._lock:
            ready = self._state.server_ready and request.name in self._state.ready_models
        return service_pb2.ModelReadyResponse(ready=ready)

    def ModelConfig(self, request: Any, context: Any) -> Any:
        self._count("ModelConfig")
        with self._lock:
            figures = (self._state.models or {}).get(request.name)
        if figures is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model '{request.name}'")
            raise AssertionError("abort raises")
        config = json_format.ParseDict(
            figures.config_json(request.name),
            model_config_pb2.ModelConfig(),
            ignore_unknown_fields=True,
        )
        return service_pb2.ModelConfigResponse(config=config)

    def ServerMetadata(self, request: Any, context: Any) -> Any:
        self._count("ServerMetadata")
        return service_pb2.ServerMetadataResponse(name="triton", version="2.52.0")


class _Server(ThreadingHTTPServer):
    # A pod that turns ready gets all its slots' requests at once: the default backlog of
    # 5 would drop the rest of those connects, and the client would retry a second later.
    request_queue_size = 128


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class TritonStandIn:
    def __init__(self) -> None:
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self._lock = threading.Lock()
        self._state = _State()
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._stopped = threading.Event()  # ends the batchers' iteration threads

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def set_ready(self, server: bool = True, models: tuple[str, ...] = ()) -> None:
        with self._lock:
            self._state.server_ready = server
            self._state.ready_models = set(models)

    def set_models(self, models: dict[str, ModelFigures]) -> None:
        with self._lock:
            self._state.models = models
            self._state.metrics_status = 200

    def set_metrics_text(self, text: str, status: int = 200) -> None:
        with self._lock:
            self._state.models = None
            self._state.metrics_text = text
            self._state.metrics_status = status

    def _page(self) -> tuple[str, int]:
        with self._lock:
            state = self._state
            if state.models is None:
                return state.metrics_text, state.metrics_status
            models = dict(state.models)
            for name, run in state.executing.items():
                figures = models.get(name)
                if figures is None:
                    continue
                figures = replace(
                    figures,
                    success=run.success,
                    request_duration_us=run.request_us,
                    queue_duration_us=run.queue_us,
                    compute_infer_duration_us=run.compute_us,
                )
                if figures.trt is not None:
                    live = replace(figures.trt, active=run.active, waiting=run.waiting)
                    figures = replace(figures, trt=live)
                models[name] = figures
            for name, engine in state.batching.items():
                figures = models.get(name)
                if figures is None:
                    continue
                models[name] = replace(
                    figures,
                    success=engine.success,
                    request_duration_us=engine.request_us,
                    queue_duration_us=engine.queue_us,
                    compute_infer_duration_us=engine.compute_us,
                    trt=_published(figures.trt or TrtFigures(), engine.published),
                )
            for name, figures in models.items():
                trt = figures.trt
                if trt is not None and trt.iteration_counter is None:
                    busy = 1 if trt.active or trt.waiting else 0
                    state.iterations[name] = state.iterations.get(name, 0) + busy
                    pinned = replace(trt, iteration_counter=state.iterations[name])
                    models[name] = replace(figures, trt=pinned)
            return exposition(models), state.metrics_status

    def set_health_status(self, status: int | None) -> None:
        """Make /v2/health/ready answer `status` whatever the state (None: Triton's own)."""
        with self._lock:
            self._state.health_status = status

    def _health(self, path: str) -> tuple[int, bytes]:
        """Triton's HTTP readiness: 200 when ready, 400 when not (its HTTP server's choice)."""
        parts = path.split("/")  # "", "v2", "models", <name>, "ready"
        with self._lock:
            state = self._state
            if path == "/v2/health/ready" and state.health_status is not None:
                return state.health_status, b"forced\n"
            if path == "/v2/health/ready":
                method, ready = "http:ServerReady", state.server_ready
            elif len(parts) == 5 and parts[2] == "models" and parts[4] == "config":
                figures = (state.models or {}).get(unquote(parts[3]))
                if figures is None or not state.server_ready:
                    return 400, b'{"error":"unknown model"}'
                return 200, json.dumps(figures.config_json(unquote(parts[3]))).encode()
            elif len(parts) == 5 and parts[2] == "models" and parts[4] == "ready":
                method = "http:ModelReady"
                ready = state.server_ready and unquote(parts[3]) in state.ready_models
            else:
                return 404, b"not found\n"
            state.calls[method] = state.calls.get(method, 0) + 1
        return (200, b"") if ready else (400, b"")

    def serve_infer(self, name: str, model: InferModel) -> None:
        """Execute `name` on KServe v2 infer from now on (see the module docstring)."""
        with self._lock:
            self._state.executing[name] = _Executing(model, threading.Semaphore(model.slots))

    def serve_batcher(self, name: str, model: BatcherModel) -> None:
        """Run `name` as an engine with an in-flight batcher from now on (see the module
        docstring); its iterations run on a thread of their own for the process's life."""
        engine = _Batching(model)
        with self._lock:
            self._state.batching[name] = engine
        threading.Thread(target=self._iterate, args=(engine,), daemon=True).start()

    def _iterate(self, engine: _Batching) -> None:
        """The engine's loop: one iteration a step while any sequence is in the batch."""
        planned_end = 0.0
        while not self._stopped.is_set():
            with self._lock:
                while engine.queue and len(engine.batch) < engine.model.max_active:
                    joining = engine.queue.popleft()
                    joining.started = time.monotonic()
                    engine.batch.append(joining)
                sequences = len(engine.batch)
            if sequences == 0:
                self._stopped.wait(0.001)  # idle: the engine does not iterate
                planned_end = 0.0
                continue
            step_s = engine.model.step_s(sequences)
            now = time.monotonic()
            # On schedule: a late wake-up shortens the next sleep; a stall past a whole
            # step starts a new schedule rather than racing to catch up.
            planned_end = now + step_s if now - planned_end > step_s else planned_end + step_s
            time.sleep(max(0.0, planned_end - now))
            self._iterated(engine, sequences)

    def _iterated(self, engine: _Batching, sequences: int) -> None:
        """One iteration ended: a token to each sequence, the finished ones answered, and
        the stats published when the backend's period is over or the batch emptied."""
        ended, stamp = time.monotonic(), time.time()
        with self._lock:
            engine.iterations += 1
            for sequence in engine.batch:
                sequence.tokens_left -= 1
            finished = [s for s in engine.batch if s.tokens_left <= 0]
            engine.batch = [s for s in engine.batch if s.tokens_left > 0]
            for sequence in finished:
                engine.success += 1
                engine.queue_us += (sequence.started - sequence.arrived) * 1e6
                engine.compute_us += (ended - sequence.started) * 1e6
                engine.request_us += (ended - sequence.arrived) * 1e6
                sequence.done.set()
            if ended - engine.published_at >= STATS_PERIOD_S or not engine.batch:
                engine.published_at = ended
                engine.published = TrtFigures(
                    active=sequences,
                    max=engine.model.max_active,
                    scheduled=sequences,
                    waiting=len(engine.queue),
                    iteration_counter=engine.iterations,
                    timestamp=int(stamp * 1e6),
                    generation=sequences,
                )

    def _decode(self, engine: _Batching, inputs: Inputs) -> tuple[int, bytes]:
        """One request to a batcher: queued, decoded token by token, answered when done."""
        try:
            tokens = int(inputs["OUTPUT_TOKENS"][0])
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            return 400, _error(f"input OUTPUT_TOKENS: a whole number of tokens expected ({exc})")
        if tokens < 1:
            return 400, _error(f"input OUTPUT_TOKENS = {tokens}, must be at least 1")
        sequence = _Sequence(tokens, time.monotonic())
        with self._lock:
            engine.queue.append(sequence)
        sequence.done.wait()
        output = {"name": "OUTPUT_TOKENS", "datatype": "INT32", "shape": [1], "data": [tokens]}
        return 200, json.dumps({"outputs": [output]}).encode()

    def _infer(self, path: str, body: bytes, binary: bool) -> tuple[int, bytes]:
        """One KServe v2 infer request, executed on the calling (handler) thread."""
        parts = path.split("?", 1)[0].split("/")  # "", v2, models, m, [versions, v,] infer
        if len(parts) not in (5, 7) or parts[2] != "models" or parts[-1] != "infer":
            return 404, b'{"error":"not found"}'
        name = unquote(parts[3])
        with self._lock:
            run = self._state.executing.get(name)
            engine = self._state.batching.get(name)
            ready = self._state.server_ready and name in self._state.ready_models
        if run is None and engine is None:
            return 400, _error(f"Request for unknown model: '{name}' is not found")
        if not ready:
            return 400, _error(f"Request for unknown model: '{name}' is not ready")
        if binary:
            return 400, _error("the stand-in takes JSON tensors only (no binary extension)")
        try:
            request = json.loads(body)
            inputs = {str(i["name"]): flat_data(i["data"]) for i in request["inputs"]}
            if engine is not None:
                return self._decode(engine, inputs)
            assert run is not None
            service_s = float(run.model.service_s(inputs))
        except (ValueError, KeyError, TypeError) as exc:
            return 400, _error(f"failed to parse the request: {type(exc).__name__}: {exc}")
        arrived = time.monotonic()
        with self._lock:
            run.waiting += 1
        run.gate.acquire()
        started = time.monotonic()
        started_at = time.time()
        with self._lock:
            run.waiting -= 1
            run.active += 1
        try:
            time.sleep(max(0.0, service_s))
        finally:
            done = time.monotonic()
            with self._lock:
                run.active -= 1
                run.success += 1
                run.queue_us += (started - arrived) * 1e6
                run.compute_us += (done - started) * 1e6
                run.request_us += (done - arrived) * 1e6
            run.gate.release()
        answer = {
            "model_name": name,
            "model_version": parts[5] if len(parts) == 7 else "1",
            "outputs": [
                {"name": "started_at", "datatype": "FP64", "shape": [1], "data": [started_at]},
                {"name": "service_s", "datatype": "FP64", "shape": [1], "data": [done - started]},
            ],
        }
        if isinstance(request.get("id"), str):
            answer["id"] = request["id"]
        return 200, json.dumps(answer).encode()

    def calls(self, method: str) -> int:
        with self._lock:
            return self._state.calls.get(method, 0)

    def start(self) -> TritonStandIn:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            _Servicer(self._state, self._lock), server
        )
        if server.add_insecure_port(self.grpc_url) != self.grpc_port:
            raise RuntimeError(f"stand-in could not bind gRPC port {self.grpc_port}")
        server.start()
        self._grpc = server
        self._http = _Server(("127.0.0.1", self.metrics_port), self._handler())
        self._http.daemon_threads = True
        self._http_thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._http_thread.start()
        return self

    def stop(self) -> None:
        """Both endpoints go away at once, as when the Triton container dies."""
        self._stopped.set()
        if self._grpc is not None:
            self._grpc.stop(0).wait(5)
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    text, status = standin._page()
                    body = text.encode()
                else:
                    status, body = standin._health(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                binary = "Inference-Header-Content-Length" in self.headers
                status, body = standin._infer(self.path, self.rfile.read(length), binary)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test's output is for the test

        return Handler
