"""Triton's Prometheus exposition -> this pod's load figures. Pure: no I/O, no clock reads.

`parse_exposition` turns one scrape into a `TritonSample` (sums over the selected
models); `LoadEstimator` turns successive samples, with the time each was taken,
into a `Load` (in flight, waiting, capacity, KV-cache utilisation) or None when a
figure cannot be known this time. Missing data is never turned into zero.

Metric names relied on, as published by:
- Triton Inference Server (user guide "Metrics", releases 23.x-25.x):
  `nv_inference_pending_request_count` (gauge, per model/version, since 22.09),
  `nv_inference_request_duration_us`, `nv_inference_queue_duration_us` (cumulative
  counters of microseconds, updated when a request completes).
- TensorRT-LLM backend, `inflight_batcher_llm/src/custom_metrics_reporter` (Triton
  23.11+): `nv_trt_llm_request_metrics{request_type=active|max|scheduled|context}`,
  `nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=max|free|used|tokens_per}`,
  `nv_trt_llm_general_metrics{general_type=iteration_counter|timestamp}`.
  Newer backends (the code moved to TensorRT-LLM's `triton_backend/`, documented in
  the tensorrtllm_backend README with the 25.x containers) add
  `request_type="waiting"` and `kv_cache_block_type="fraction"`; both are used
  when present and not required.

What the figures mean, and why:

TensorRT-LLM (any selected model publishes `nv_trt_llm_request_metrics`):
  inflight = active. "Active Request Count" is the executor's numActiveRequests:
      every request the batcher holds, scheduled this iteration or not;
      `scheduled` and `context` are subsets of it (context = in prefill), so
      subtracting them would hide requests that hold a slot.
  waiting  = waiting (numQueuedRequests: handed to the executor, not yet taken into
      the batch; 0 when not published) + Triton's pending count (received by
      Triton, not yet handed to the backend). The two are successive stages of one
      request, never the same request twice, so they add up.
  capacity = max (maxNumActiveRequests, the most the batcher holds at once).
  kv       = used / max blocks, summed over models (`fraction` when `used` is not
      published).
  The backend refreshes these gauges only when the engine iterates, and an engine
  with work iterates every few milliseconds. After the last request finishes the
  gauges keep the values of the final iteration (active 1, say) for ever; so when
  `iteration_counter` has not moved for `idle_after_s`, the engine is idle and
  active/waiting are taken as 0 (Triton's pending count still counts).

Plain Triton (no `nv_trt_llm_*`):
  waiting  = pending count.
  inflight = no gauge exists, so it is derived from the cumulative counters by
      Little's law: the average number of requests executing over a window is the
      execution time they accumulated in it divided by its length. Execution time
      per request = request duration - queue duration (input, infer and output).
      Worked example: over a 1.0 s window request_duration_us grew by 3_500_000 and
      queue_duration_us by 500_000: 3.0 s of execution in 1.0 s -> 3.0 in flight.
      The counters grow when a request completes, so a long request shows up when
      it ends; the window is the last `window_s` of samples.
      A counter that went down means Triton restarted: no figure until a new
      window has been measured, never a negative one.
  capacity = None (the caller uses its configured capacity).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

PENDING = "nv_inference_pending_request_count"
REQUEST_DURATION = "nv_inference_request_duration_us"
QUEUE_DURATION = "nv_inference_queue_duration_us"
TRT_REQUESTS = "nv_trt_llm_request_metrics"
TRT_KV_BLOCKS = "nv_trt_llm_kv_cache_block_metrics"
TRT_GENERAL = "nv_trt_llm_general_metrics"

# Families this module reads; every other family of a scrape is skipped unread.
_FAMILIES = frozenset(
    {PENDING, REQUEST_DURATION, QUEUE_DURATION, TRT_REQUESTS, TRT_KV_BLOCKS, TRT_GENERAL}
)

ModelKey = tuple[str, str]  # (model, version)


class MetricsError(ValueError):
    """A scrape that does not tell the load: not an exposition, or no Triton metrics in it."""


@dataclass(frozen=True)
class TrtModel:
    """One TensorRT-LLM model's gauges (one version)."""

    active: float = 0.0
    max: float | None = None
    waiting: float | None = None
    kv_used: float | None = None
    kv_max: float | None = None
    kv_fraction: float | None = None
    iteration_counter: float | None = None


@dataclass(frozen=True)
class TritonSample:
    """One scrape, restricted to the selected models."""

    pending: float
    # Cumulative execution microseconds (request - queue duration) per model version.
    busy_us: dict[ModelKey, float] = field(default_factory=dict)
    trt: dict[ModelKey, TrtModel] = field(default_factory=dict)

    @property
    def is_trt_llm(self) -> bool:
        return bool(self.trt)


@dataclass(frozen=True)
class Load:
    inflight: float
    waiting: float
    capacity: float | None  # None: the engine does not say
    kv_cache_utilization: float | None


def parse_exposition(text: str, models: Iterable[str] = ()) -> TritonSample:
    """The selected models' figures in one scrape; `models` empty selects every model.

    Raises MetricsError when `text` is not Prometheus text, carries no Triton
    inference metrics at all, or lacks a selected model."""
    wanted = frozenset(models)
    pending = 0.0
    seen_pending = False
    seen_models: set[str] = set()
    durations: dict[str, dict[ModelKey, float]] = {REQUEST_DURATION: {}, QUEUE_DURATION: {}}
    trt: dict[ModelKey, dict[str, float]] = {}
    try:
        families = list(text_string_to_metric_families(_only_wanted_families(text)))
    except (ValueError, IndexError, KeyError) as exc:
        raise MetricsError(f"not a Prometheus exposition: {exc}") from None
    for family in families:
        if family.name not in _FAMILIES:
            continue
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None or (wanted and model not in wanted):
                continue
            seen_models.add(model)
            key = (model, sample.labels.get("version", ""))
            if family.name == PENDING:
                seen_pending = True
                pending += sample.value
            elif family.name in durations:
                durations[family.name][key] = sample.value
            elif family.name == TRT_REQUESTS:
                kind = sample.labels.get("request_type", "")
                trt.setdefault(key, {})[f"req_{kind}"] = sample.value
            elif family.name == TRT_KV_BLOCKS:
                kind = sample.labels.get("kv_cache_block_type", "")
                trt.setdefault(key, {})[f"kv_{kind}"] = sample.value
            elif sample.labels.get("general_type") == "iteration_counter":
                trt.setdefault(key, {})["iteration_counter"] = sample.value
    missing = sorted(wanted - seen_models)
    if missing:
        raise MetricsError(f"model(s) {', '.join(missing)} not in Triton's metrics")
    trt_models = {key: _trt_model(v) for key, v in trt.items() if "req_active" in v}
    if not seen_pending and not trt_models:
        raise MetricsError(
            f"no {PENDING} or {TRT_REQUESTS} samples: is this Triton's metrics endpoint, "
            "with --allow-metrics on and the models loaded?"
        )
    requests, queued = durations[REQUEST_DURATION], durations[QUEUE_DURATION]
    busy = {k: requests[k] - queued.get(k, 0.0) for k in requests}
    return TritonSample(pending=pending, busy_us=busy, trt=trt_models)


def _only_wanted_families(text: str) -> str:
    """`text` without the families this module never reads (GPU, CPU, cache, ...).

    The parser still reads every line that matters; this only spares it the rest,
    most of a real page, which would otherwise be most of the sidecar's CPU time.
    A metric line starts with its name, up to '{' or a blank; a comment line is
    '# HELP name ...' or '# TYPE name ...'."""
    kept = []
    for line in text.splitlines():
        if line.startswith("#"):
            words = line.split(None, 3)
            if len(words) >= 3 and words[2] in _FAMILIES:
                kept.append(line)
        elif line.split("{", 1)[0].split(" ", 1)[0] in _FAMILIES:
            kept.append(line)
    return "\n".join(kept) + "\n"


def _trt_model(values: dict[str, float]) -> TrtModel:
    return TrtModel(
        active=values["req_active"],
        max=values.get("req_max"),
        waiting=values.get("req_waiting"),
        kv_used=values.get("kv_used"),
        kv_max=values.get("kv_max"),
        kv_fraction=values.get("kv_fraction"),
        iteration_counter=values.get("iteration_counter"),
    )


@dataclass
class _Iterations:
    counter: float
    changed_at: float


class LoadEstimator:
    """Load from successive samples; holds the Little's-law window and idle detection.

    `window_s`: length of the window plain Triton's in-flight average is taken over.
    `idle_after_s`: how long a TensorRT-LLM iteration counter must stand still for
    the engine to count as idle (the backend polls its stats every 100 ms)."""

    def __init__(self, window_s: float = 1.0, idle_after_s: float = 1.0) -> None:
        self._window_s = window_s
        self._idle_after_s = idle_after_s
        self._history: deque[tuple[float, dict[ModelKey, float]]] = deque()
        self._iterations: dict[ModelKey, _Iterations] = {}

    def reset(self) -> None:
        """Forget every sample: Triton went away, its counters start again."""
        self._history.clear()
        self._iterations.clear()

    def observe(self, sample: TritonSample, now: float) -> Load | None:
        if sample.is_trt_llm:
            return self._trt_llm(sample, now)
        inflight = self._littles_law(sample.busy_us, now)
        if inflight is None:
            return None
        return Load(inflight, sample.pending, None, None)

    def _trt_llm(self, sample: TritonSample, now: float) -> Load:
        inflight = waiting = 0.0
        capacity: float | None = None
        kv_used = kv_max = 0.0
        fractions: list[float] = []
        for key, model in sample.trt.items():
            if not self._idle(key, model.iteration_counter, now):
                inflight += model.active
                waiting += model.waiting or 0.0
            if model.max is not None:
                capacity = (capacity or 0.0) + model.max
            if model.kv_max and model.kv_used is not None:
                kv_used, kv_max = kv_used + model.kv_used, kv_max + model.kv_max
            elif model.kv_fraction is not None:
                fractions.append(model.kv_fraction)
        kv = kv_used / kv_max if kv_max else (max(fractions) if fractions else None)
        if kv is not None:
            kv = min(max(kv, 0.0), 1.0)
        return Load(inflight, waiting + sample.pending, capacity, kv)

    def _idle(self, key: ModelKey, counter: float | None, now: float) -> bool:
        if counter is None:
            return False  # an older backend without the counter: trust the gauges
        seen = self._iterations.get(key)
        if seen is None or seen.counter != counter:
            self._iterations[key] = _Iterations(counter, now)
            return False
        return now - seen.changed_at >= self._idle_after_s

    def _littles_law(self, busy_us: dict[ModelKey, float], now: float) -> float | None:
        if self._history:
            _, previous = self._history[-1]
            if any(busy_us[k] < previous[k] for k in busy_us.keys() & previous.keys()):
                self._history.clear()  # a counter went back: Triton restarted
        self._history.append((now, busy_us))
        # Keep the newest sample at least window_s old as the window's start.
        while len(self._history) > 2 and now - self._history[1][0] >= self._window_s:
            self._history.popleft()
        start_at, start = self._history[0]
        elapsed = now - start_at
        if len(self._history) < 2 or elapsed <= 0:
            return None
        busy = sum(busy_us[k] - start[k] for k in busy_us.keys() & start.keys())
        return busy / 1e6 / elapsed
