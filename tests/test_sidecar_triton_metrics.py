"""Triton's metrics page -> load figures: the parser and the estimator, table-driven, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from scaler.demo.triton_standin import ModelFigures, TrtFigures, exposition
from sidecar.selection import ModelConfig, select
from sidecar.triton_metrics import Load, LoadEstimator, MetricsError, parse_exposition

# A TensorRT-LLM page as the backend's README shows it (labels in Triton's order), trimmed
# and with the model named `trtllm` to fit the line.
TRT_LLM_README_PAGE = """\
# HELP nv_trt_llm_request_metrics TRT LLM request metrics
# TYPE nv_trt_llm_request_metrics gauge
nv_trt_llm_request_metrics{model="trtllm",request_type="waiting",version="1"} 1
nv_trt_llm_request_metrics{model="trtllm",request_type="context",version="1"} 1
nv_trt_llm_request_metrics{model="trtllm",request_type="scheduled",version="1"} 1
nv_trt_llm_request_metrics{model="trtllm",request_type="max",version="1"} 512
nv_trt_llm_request_metrics{model="trtllm",request_type="active",version="1"} 3
# HELP nv_trt_llm_kv_cache_block_metrics TRT LLM KV cache block metrics
# TYPE nv_trt_llm_kv_cache_block_metrics gauge
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction",model="trtllm",version="1"} 0.4875
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="tokens_per",model="trtllm",version="1"} 64
# HELP nv_trt_llm_general_metrics General TRT LLM metrics
# TYPE nv_trt_llm_general_metrics gauge
nv_trt_llm_general_metrics{general_type="iteration_counter",model="trtllm",version="1"} 7
# HELP nv_inference_pending_request_count Instantaneous number of pending requests
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="trtllm",version="1"} 2
# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-1"} 0.9
"""


def trt(**figures: float | None) -> ModelFigures:
    return ModelFigures(trt=TrtFigures(**figures))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Case:
    id: str
    page: str
    expected: Load
    models: tuple[str, ...] = ()


ENSEMBLE = {
    "ensemble": ModelFigures(),
    "preprocessing": ModelFigures(pending=2),
    "tensorrt_llm": ModelFigures(
        pending=1, trt=TrtFigures(active=6, waiting=3, max=64, kv_used=250, kv_max=1000)
    ),
    "postprocessing": ModelFigures(pending=1),
}

CASES = [
    Case(
        "trtllm-readme-page-waiting-and-fraction",
        TRT_LLM_README_PAGE,
        # in flight = active (scheduled/context are subsets of it); waiting = engine
        # queue 1 + Triton's pending 2; kv from `fraction` (no used/max on the page).
        Load(inflight=3, waiting=3, capacity=512, kv_cache_utilization=0.4875),
    ),
    Case(
        "trtllm-older-backend-no-waiting-no-fraction",
        exposition(
            {
                "tensorrt_llm": ModelFigures(
                    pending=4, trt=TrtFigures(active=5, max=8, kv_used=300, kv_max=1200)
                )
            }
        ),
        Load(inflight=5, waiting=4, capacity=8, kv_cache_utilization=0.25),
    ),
    Case(
        "trtllm-used-over-max-wins-over-fraction",
        exposition({"tensorrt_llm": trt(active=1, kv_used=500, kv_max=1000, kv_fraction=0.9)}),
        Load(inflight=1, waiting=0, capacity=256, kv_cache_utilization=0.5),
    ),
    Case(
        "trtllm-ensemble-counts-pending-of-every-model",
        exposition(ENSEMBLE),
        Load(inflight=6, waiting=3 + 2 + 1 + 1, capacity=64, kv_cache_utilization=0.25),
    ),
    Case(
        "trtllm-ensemble-model-filter",
        exposition(ENSEMBLE),
        Load(inflight=6, waiting=3 + 1, capacity=64, kv_cache_utilization=0.25),
        models=("tensorrt_llm",),
    ),
    Case(
        "trtllm-two-engines-add-up",
        exposition(
            {
                "llama": trt(active=2, max=8, kv_used=10, kv_max=100),
                "mistral": trt(active=3, max=16, kv_used=70, kv_max=100),
            }
        ),
        Load(inflight=5, waiting=0, capacity=24, kv_cache_utilization=0.4),
    ),
    Case(
        "trtllm-versions-add-up",
        exposition(
            {"llama": ModelFigures(pending=1, versions=("1", "2"), trt=TrtFigures(active=2, max=8))}
        ),
        Load(inflight=4, waiting=2, capacity=16, kv_cache_utilization=0.0),
    ),
    Case(
        "trtllm-kv-without-blocks-is-unknown",
        exposition({"llama": trt(active=1, kv_used=None, kv_max=None)}),
        Load(inflight=1, waiting=0, capacity=256, kv_cache_utilization=None),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_trt_llm_page_gives_the_engine_figures(case: Case) -> None:
    sample = parse_exposition(case.page, case.models)
    assert LoadEstimator().observe(sample, now=0.0) == case.expected


BROKEN = [
    (
        "garbage-value",
        'nv_inference_pending_request_count{model="a"} lots\n',
        (),
        "not a Prometheus",
    ),
    (
        "html-page",
        "<html><body>Not Found</body></html>\n",
        (),
        "no nv_inference_pending_request_count",
    ),
    ("gpu-metrics-only", exposition({}), (), "no nv_inference_pending_request_count"),
    (
        "filtered-model-missing",
        exposition({"llama": ModelFigures()}),
        ("llama", "mistral"),
        "model(s) mistral not in",
    ),
]


@pytest.mark.parametrize(
    ("page", "models", "message"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN]
)
def test_a_page_that_does_not_tell_the_load_is_an_error_not_zero(
    page: str, models: tuple[str, ...], message: str
) -> None:
    with pytest.raises(MetricsError) as err:
        parse_exposition(page, models)
    assert message in str(err.value)


def plain(success: float, request_us: float, queue_us: float = 0, pending: float = 0) -> str:
    figures = ModelFigures(
        pending, request_duration_us=request_us, queue_duration_us=queue_us, success=success
    )
    return exposition({"resnet": figures})


def test_plain_triton_in_flight_from_completions_and_waiting_from_pending() -> None:
    """The worked example of sidecar.completions, through the page: 8 requests of 8 s
    (plus 1 s queued each, which is waiting, not in flight) end together at t = 8."""
    estimator = LoadEstimator()
    pages = [(t / 2, plain(0, 0, pending=3 if t == 4 else 0)) for t in range(16)]
    pages += [(8.0, plain(8, 72e6, 8e6))] + [(t / 2, plain(8, 72e6, 8e6)) for t in range(17, 34)]
    loads = [estimator.observe(parse_exposition(page), now) for now, page in pages]
    assert loads[:4] == [None] * 4  # nothing measured yet: no figure rather than zero
    assert loads[4] == Load(inflight=0.0, waiting=3, capacity=None, kv_cache_utilization=None)
    last = loads[-1]
    # The window [0; 8.25] holds the 8 requests, ended at 7.75 (the middle of the poll
    # interval in which the counters moved): 8 x 7.75 / 8.25.
    assert last is not None and last.inflight == pytest.approx(8 * 7.75 / 8.25)


def test_an_ensembles_step_queue_is_a_floor_under_its_counters_never_added() -> None:
    """Requests waiting in a step's queue are inside the ensemble's duration (arrival to
    last response): its rebuilt figure counts them already. 4 requests always
    in the system, each 4 s end to end, 2 of them waiting in the step's queue."""
    configs = {"llm": ModelConfig("llm", ("step",)), "step": ModelConfig("step", instances=2)}
    estimator = LoadEstimator(select(("llm",), configs, {}))

    def page(done: float, pending: float) -> str:
        ensemble = ModelFigures(0, request_duration_us=done * 4e6, success=done)
        return exposition({"llm": ensemble, "step": ModelFigures(pending)})

    loads = [
        estimator.observe(parse_exposition(page(int(t / 2 // 4) * 4, 2)), t / 2) for t in range(60)
    ]
    steady = loads[-1]
    assert steady is not None and steady.inflight + steady.waiting == pytest.approx(4, rel=0.1)
    # Overload: 10 wait in the step now, and its 2 instances are busy: shown at once.
    overloaded = estimator.observe(parse_exposition(page(28, 10)), 30.0)
    assert overloaded is not None and (overloaded.inflight, overloaded.waiting) == (2, 10)


def engine(active: float, waiting: float, iterations: float) -> str:
    figures = TrtFigures(active=active, waiting=waiting, iteration_counter=iterations)
    return exposition({"tensorrt_llm": ModelFigures(pending=1, trt=figures)})


def test_trt_llm_gauges_frozen_after_the_last_request_are_not_phantom_load() -> None:
    """The backend updates its gauges only when the engine iterates; after the last
    request the final iteration's `active 1` stays on the page for ever."""
    estimator = LoadEstimator(idle_after_s=1.0)

    def inflight_waiting(now: float, page: str) -> tuple[float, float]:
        load = estimator.observe(parse_exposition(page), now)
        assert load is not None
        return load.inflight, load.waiting

    assert inflight_waiting(0.0, engine(1, 2, iterations=100)) == (1, 3)
    assert inflight_waiting(0.5, engine(1, 2, iterations=100)) == (1, 3)  # may be a long step
    # Triton's own pending count still counts: it is not the engine's gauge.
    assert inflight_waiting(1.0, engine(1, 2, iterations=100)) == (0, 1)
    assert inflight_waiting(1.25, engine(4, 0, iterations=101)) == (4, 1)  # iterating again


def test_only_the_families_read_are_parsed_from_a_large_page() -> None:
    page = exposition({"tensorrt_llm": trt(active=2)}, gpus=64)
    assert parse_exposition(page).trt[("tensorrt_llm", "1")].active == 2
