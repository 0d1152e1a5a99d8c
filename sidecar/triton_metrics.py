"""Triton's Prometheus exposition -> this pod's load figures. Pure: no I/O, no clock reads.

`parse_exposition` turns one scrape into a `TritonSample` (the figures of the
selected models); `LoadEstimator` turns successive samples, with the time each was taken,
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
  `nv_trt_llm_general_metrics{general_type=iteration_counter|timestamp}`,
  `nv_trt_llm_inflight_batcher_metrics{inflight_batcher_specific_metric=generation_requests}`
  (the counter, the time stamp and generation_requests give the token time,
  sidecar.token_time).
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

vLLM backend (a selected engine publishes `vllm:num_requests_running`; Triton's
vLLM backend `src/utils/metrics.py`, labels model/version):
  (and, for the token time, the histogram vllm:time_per_output_token_seconds: its _sum
  and _count; sidecar.token_time)
  inflight = vllm:num_requests_running, waiting = vllm:num_requests_waiting +
      Triton's pending count, kv = vllm:gpu_cache_usage_perc (0-1; newer vLLM
      names it vllm:kv_cache_usage_perc), capacity = None (not published).

Plain Triton (no engine gauges): in flight and waiting rebuilt together for one
  past window by sidecar.completions, from the completion counters
  `nv_inference_request_success`, `nv_inference_request_duration_us`,
  `nv_inference_queue_duration_us` and the pending count (queued, not executing:
  checked on Triton 2.51) recorded at each poll, with a lag of one to two request
  durations. The pending count of now (with the instances it keeps busy) is a
  floor under that figure, never added to it; capacity = None (the caller uses its
  configured capacity).

Which model counts for what (an ensemble over an engine, say) is a
sidecar.selection.Selection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from sidecar.completions import CompletionTimeline, Counters, Frame, with_live_floor
from sidecar.selection import TRT_LLM, VLLM, Selection

PENDING = "nv_inference_pending_request_count"
REQUEST_SUCCESS = "nv_inference_request_success"
REQUEST_DURATION = "nv_inference_request_duration_us"
QUEUE_DURATION = "nv_inference_queue_duration_us"
TRT_REQUESTS = TRT_LLM
TRT_KV_BLOCKS = "nv_trt_llm_kv_cache_block_metrics"
TRT_GENERAL = "nv_trt_llm_general_metrics"
TRT_BATCHER = "nv_trt_llm_inflight_batcher_metrics"
VLLM_RUNNING = VLLM
VLLM_WAITING = "vllm:num_requests_waiting"
VLLM_KV = ("vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc")  # old name, new name
VLLM_TOKEN_TIME = "vllm:time_per_output_token_seconds"  # a histogram: its _sum and _count
VLLM_TOKEN_SUM, VLLM_TOKEN_COUNT = f"{VLLM_TOKEN_TIME}_sum", f"{VLLM_TOKEN_TIME}_count"
_COUNTERS = (REQUEST_SUCCESS, REQUEST_DURATION, QUEUE_DURATION)
_VLLM = (VLLM_RUNNING, VLLM_WAITING, *VLLM_KV)
# The histogram's series as a histogram family, or as two families of their own (an
# exporter that publishes _sum and _count as counters).
_VLLM_TOKEN_TIME = (VLLM_TOKEN_TIME, VLLM_TOKEN_SUM, VLLM_TOKEN_COUNT)

# Families this module reads; every other family of a scrape is skipped unread.
_FAMILIES = frozenset(
    {PENDING, *_COUNTERS, TRT_REQUESTS, TRT_KV_BLOCKS, TRT_GENERAL, TRT_BATCHER, *_VLLM}
    | {*_VLLM_TOKEN_TIME}
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
    # The iteration's time stamp (general_type="timestamp"): microseconds since the epoch,
    # whole seconds from backends before 2024's microsecond change (sidecar.token_time).
    timestamp: float | None = None
    # Requests in their generation phase in the iteration (the in-flight batcher's
    # generation_requests); None: not published (a V1, static-batching model).
    generation: float | None = None


@dataclass(frozen=True)
class VllmModel:
    """The vLLM backend's scheduler gauges for one model version, and its token-time
    histogram's sum (seconds) and count (inter-token intervals) when published."""

    running: float
    waiting: float = 0.0
    kv_fraction: float | None = None
    token_seconds: float | None = None
    token_intervals: float | None = None


@dataclass(frozen=True)
class TritonSample:
    """One scrape, restricted to the models asked for, per model version."""

    pending: dict[ModelKey, float] = field(default_factory=dict)
    counters: dict[ModelKey, Counters] = field(default_factory=dict)
    trt: dict[ModelKey, TrtModel] = field(default_factory=dict)
    vllm: dict[ModelKey, VllmModel] = field(default_factory=dict)

    def model_names(self) -> frozenset[str]:
        keys = self.pending.keys() | self.counters.keys() | self.trt.keys() | self.vllm.keys()
        return frozenset(model for model, _ in keys)

    def engine_gauges(self) -> dict[str, str]:
        """The engine gauge family each model publishes (selection.ENGINE_GAUGES)."""
        found = {model: TRT_REQUESTS for model, _ in self.trt}
        found.update({model: VLLM_RUNNING for model, _ in self.vllm})
        return found


@dataclass(frozen=True)
class Load:
    inflight: float
    waiting: float
    capacity: float | None  # None: the engine does not say
    kv_cache_utilization: float | None


def parse_exposition(text: str, models: Iterable[str] = ()) -> TritonSample:
    """The figures of `models` in one scrape; `models` empty selects every model.

    Raises MetricsError when `text` is not Prometheus text, carries no Triton
    inference metrics at all, or lacks a selected model."""
    wanted = frozenset(models)
    seen_models: set[str] = set()
    pending: dict[ModelKey, float] = {}
    counters: dict[str, dict[ModelKey, float]] = {name: {} for name in _COUNTERS}
    trt: dict[ModelKey, dict[str, float]] = {}
    vllm: dict[ModelKey, dict[str, float]] = {}
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
                pending[key] = sample.value
            elif family.name in counters:
                # A counter's sample is named `<family>_total` by the parser.
                if sample.name in (family.name, f"{family.name}_total"):
                    counters[family.name][key] = sample.value
            elif family.name in _VLLM:
                vllm.setdefault(key, {})[family.name] = sample.value
            elif family.name in _VLLM_TOKEN_TIME:
                name = sample.name.removesuffix("_total")  # as counters: `<family>_total`
                if name in (VLLM_TOKEN_SUM, VLLM_TOKEN_COUNT):
                    vllm.setdefault(key, {})[name] = sample.value
            elif family.name == TRT_REQUESTS:
                kind = sample.labels.get("request_type", "")
                trt.setdefault(key, {})[f"req_{kind}"] = sample.value
            elif family.name == TRT_KV_BLOCKS:
                kind = sample.labels.get("kv_cache_block_type", "")
                trt.setdefault(key, {})[f"kv_{kind}"] = sample.value
            elif family.name == TRT_BATCHER:
                if sample.labels.get("inflight_batcher_specific_metric") == "generation_requests":
                    trt.setdefault(key, {})["generation"] = sample.value
            elif sample.labels.get("general_type") in ("iteration_counter", "timestamp"):
                trt.setdefault(key, {})[sample.labels["general_type"]] = sample.value
    missing = sorted(wanted - seen_models)
    if missing:
        raise MetricsError(f"model(s) {', '.join(missing)} not in Triton's metrics")
    trt_models = {key: _trt_model(v) for key, v in trt.items() if "req_active" in v}
    vllm_models = {key: _vllm_model(v) for key, v in vllm.items() if VLLM_RUNNING in v}
    if not pending and not trt_models and not vllm_models:
        raise MetricsError(
            f"no {PENDING}, {TRT_REQUESTS} or {VLLM_RUNNING} samples: is this Triton's "
            "metrics endpoint, with --allow-metrics on and the models loaded?"
        )
    success, requests, queued = (counters[name] for name in _COUNTERS)
    completed = {
        key: Counters(success[key], requests[key] - queued.get(key, 0.0), queued.get(key, 0.0))
        for key in success.keys() & requests.keys()
    }
    return TritonSample(pending, completed, trt_models, vllm_models)


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
        timestamp=values.get("timestamp"),
        generation=values.get("generation"),
    )


def _vllm_model(values: dict[str, float]) -> VllmModel:
    kv = next((values[name] for name in reversed(VLLM_KV) if name in values), None)
    return VllmModel(
        values[VLLM_RUNNING],
        values.get(VLLM_WAITING, 0.0),
        kv,
        values.get(VLLM_TOKEN_SUM),
        values.get(VLLM_TOKEN_COUNT),
    )


def page_selection(sample: TritonSample) -> Selection:
    """Roles read from the page alone (no model configurations): the engines' gauges
    when any model publishes them, else every model's completion counters. None serves
    as a service time: whether a model's counters end with its requests (not decoupled,
    not a step of an ensemble) is in the configurations only."""
    engines = frozenset(sample.engine_gauges())
    names = sample.model_names()
    counted = frozenset() if engines else names
    return Selection(engines, counted, names, behind_counted=counted)


@dataclass
class _Iterations:
    counter: float
    changed_at: float


class LoadEstimator:
    """Load from successive samples: the engines' gauges, the completion timelines of
    counted models, and the TensorRT-LLM idle detection.

    `selection`: which model counts for what (sidecar.selection); None: read from
    each page (`page_selection`). `origin_idle`: nothing was in flight when the
    first sample was taken (sidecar.completions). `idle_after_s`: how long a
    TensorRT-LLM iteration counter must stand still for the engine to count as
    idle (the backend polls its stats every 100 ms)."""

    def __init__(
        self,
        selection: Selection | None = None,
        *,
        origin_idle: bool = True,
        idle_after_s: float = 1.0,
    ) -> None:
        self.selection = selection
        self._origin_idle = origin_idle
        self._idle_after_s = idle_after_s
        self._timelines: dict[ModelKey, CompletionTimeline] = {}
        self._iterations: dict[ModelKey, _Iterations] = {}

    def reset(self, selection: Selection | None, *, origin_idle: bool) -> None:
        """Forget every sample: Triton went away (its counters start again), or the
        models it serves are read anew."""
        self.selection = selection
        self._origin_idle = origin_idle
        self._timelines.clear()
        self._iterations.clear()

    def observe(self, sample: TritonSample, now: float) -> Load | None:
        selection = self.selection or page_selection(sample)
        # Queues whose requests the counted models' completions already count: their
        # pending count is part of the rebuilt frame, and only a floor under it now.
        behind = selection.behind_counted if selection.counted else frozenset()
        waiting = sum(v for (m, _), v in sample.pending.items() if m in selection.queued - behind)
        past = self._counted(sample, selection.counted, now)
        if past is None:
            return None
        counted = with_live_floor(past, _live(sample, behind, selection.busy_while_queued))
        inflight = counted.inflight
        waiting += counted.waiting
        capacity: float | None = None
        kv_used = kv_max = 0.0
        fractions: list[float] = []
        for key, trt in sample.trt.items():
            if key[0] not in selection.engines:
                continue
            if not self._idle(key, trt.iteration_counter, now):
                inflight += trt.active
                waiting += trt.waiting or 0.0
            if trt.max is not None:
                capacity = (capacity or 0.0) + trt.max
            if trt.kv_max and trt.kv_used is not None:
                kv_used, kv_max = kv_used + trt.kv_used, kv_max + trt.kv_max
            elif trt.kv_fraction is not None:
                fractions.append(trt.kv_fraction)
        for key, vllm in sample.vllm.items():
            if key[0] in selection.engines:
                inflight += vllm.running
                waiting += vllm.waiting
                if vllm.kv_fraction is not None:
                    fractions.append(vllm.kv_fraction)
        kv = kv_used / kv_max if kv_max else None
        if fractions:
            kv = max([*fractions, *([kv] if kv is not None else [])])
        if kv is not None:
            kv = min(max(kv, 0.0), 1.0)
        return Load(inflight, waiting, capacity, kv)

    def _counted(self, sample: TritonSample, counted: frozenset[str], now: float) -> Frame | None:
        """Sum of the counted models' rebuilt frames; None until each has one."""
        inflight = waiting = 0.0
        complete = True
        for key, counters in sample.counters.items():
            if key[0] not in counted:
                continue
            timeline = self._timelines.get(key)
            if timeline is None:
                timeline = self._timelines[key] = CompletionTimeline(self._origin_idle)
            frame = timeline.observe(counters, now, sample.pending.get(key, 0.0))
            if frame is None:
                complete = False
            else:
                inflight, waiting = inflight + frame.inflight, waiting + frame.waiting
        return Frame(inflight, waiting) if complete else None

    def _idle(self, key: ModelKey, counter: float | None, now: float) -> bool:
        if counter is None:
            return False  # an older backend without the counter: trust the gauges
        seen = self._iterations.get(key)
        if seen is None or seen.counter != counter:
            self._iterations[key] = _Iterations(counter, now)
            return False
        return now - seen.changed_at >= self._idle_after_s


def _live(sample: TritonSample, behind: frozenset[str], busy: Mapping[str, int]) -> Frame:
    """What the counted models' queues show now: requests waiting, and the instances
    they keep busy (a model whose queue holds a request has no instance idle)."""
    waiting = executing = 0.0
    for (model, _), pending in sample.pending.items():
        if model in behind:
            waiting += pending
            executing += busy.get(model, 0) if pending > 0 else 0
    return Frame(executing, waiting)
