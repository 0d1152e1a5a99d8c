"""Which models count for what (sidecar.selection): table-driven, no I/O.

The TensorRT-LLM ensemble is the main case: clients call `ensemble`, the user names
it, and the engine's exact gauges must count, not the ensemble's counters.
"""

from __future__ import annotations

import pytest

from scaler.demo.triton_standin import ensemble_config
from sidecar.selection import TRT_LLM, VLLM, ModelConfig, Selection, SelectionError, select

TRT_ENSEMBLE = {
    "ensemble": ModelConfig.from_json(
        "ensemble", ensemble_config("preprocessing", "tensorrt_llm", "postprocessing")
    ),
    "preprocessing": ModelConfig("preprocessing"),
    "tensorrt_llm": ModelConfig("tensorrt_llm", decoupled=True),
    "postprocessing": ModelConfig("postprocessing"),
}
TRT_GAUGES = {"tensorrt_llm": TRT_LLM}
STAGES = frozenset({"preprocessing", "tensorrt_llm", "postprocessing"})


def roles(
    engines: set[str],
    counted: set[str],
    queued: set[str],
    served: set[str],
    behind: frozenset[str] = frozenset(),  # queues a counted model's completions count
) -> Selection:
    return Selection(
        frozenset(engines), frozenset(counted), frozenset(queued), frozenset(served), behind
    )


CASES = [
    (
        "ensemble-named-counts-through-its-engine",
        ("ensemble",),
        TRT_ENSEMBLE,
        TRT_GAUGES,
        roles({"tensorrt_llm"}, set(), set(STAGES), {"ensemble"}),
    ),
    (
        "every-model-of-the-ensemble-each-request-once",
        ("ensemble", "preprocessing", "tensorrt_llm", "postprocessing"),
        TRT_ENSEMBLE,
        TRT_GAUGES,
        roles({"tensorrt_llm"}, set(), set(STAGES), {"ensemble"}),
    ),
    (
        # Decoupled (streaming): its counters end before its responses, no service time.
        "engine-named-alone",
        ("tensorrt_llm",),
        TRT_ENSEMBLE,
        TRT_GAUGES,
        roles({"tensorrt_llm"}, set(), {"tensorrt_llm"}, set()),
    ),
    (
        "engine-not-decoupled-named-alone-serves-by-its-counters",
        ("tensorrt_llm",),
        {"tensorrt_llm": ModelConfig("tensorrt_llm")},
        TRT_GAUGES,
        roles({"tensorrt_llm"}, set(), {"tensorrt_llm"}, {"tensorrt_llm"}),
    ),
    (
        "ensemble-over-plain-models-counts-its-own-completions",
        ("pipeline",),
        {
            "pipeline": ModelConfig("pipeline", ("resnet",)),
            "resnet": ModelConfig("resnet"),
        },
        {},
        roles(set(), {"pipeline"}, {"resnet"}, {"pipeline"}, frozenset({"resnet"})),
    ),
    (
        "ensemble-over-a-decoupled-model-counts-its-own-completions",
        ("llm",),
        {"llm": ModelConfig("llm", ("streamer",)), "streamer": ModelConfig("streamer", (), True)},
        {},
        roles(set(), {"llm"}, {"streamer"}, {"llm"}, frozenset({"streamer"})),
    ),
    (
        "nested-ensembles-reach-the-engine",
        ("outer",),
        {
            "outer": ModelConfig("outer", ("inner",)),
            "inner": ModelConfig("inner", ("vllm_model",)),
            "vllm_model": ModelConfig("vllm_model", decoupled=True),
        },
        {"vllm_model": VLLM},
        roles({"vllm_model"}, set(), {"vllm_model"}, {"outer"}),
    ),
    (
        "plain-models-by-their-counters",
        ("resnet", "bert"),
        {"resnet": ModelConfig("resnet"), "bert": ModelConfig("bert")},
        {},
        roles(
            set(),
            {"resnet", "bert"},
            {"resnet", "bert"},
            {"resnet", "bert"},
            frozenset({"resnet", "bert"}),
        ),
    ),
]


@pytest.mark.parametrize(
    ("names", "configs", "gauges", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_request_is_counted_once_by_the_best_figure(
    names: tuple[str, ...],
    configs: dict[str, ModelConfig],
    gauges: dict[str, str],
    expected: Selection,
) -> None:
    assert select(names, configs, gauges) == expected


def test_a_decoupled_model_without_gauges_is_refused_saying_what_each_model_offers() -> None:
    configs = {**TRT_ENSEMBLE, "streamer": ModelConfig("streamer", decoupled=True)}
    with pytest.raises(SelectionError) as refused:
        select(("streamer",), configs, TRT_GAUGES)
    message = str(refused.value)
    assert message.startswith("cannot measure the load of streamer: decoupled")
    assert "ensemble: ensemble over preprocessing, tensorrt_llm, postprocessing" in message
    assert f"tensorrt_llm: {TRT_LLM} (exact in-flight)" in message
    assert "preprocessing: completion counters (estimated in-flight)" in message
    assert "streamer: decoupled, no gauge (cannot be measured)" in message


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"platform": "", "backend": "python"}, ModelConfig("m")),
        ({"model_transaction_policy": {"decoupled": True}}, ModelConfig("m", decoupled=True)),
        (ensemble_config("a", "b", "a"), ModelConfig("m", ("a", "b"))),
    ],
    ids=["plain", "decoupled", "ensemble-steps-once"],
)
def test_model_config_from_tritons_json(config: dict[str, object], expected: ModelConfig) -> None:
    assert ModelConfig.from_json("m", config) == expected


@pytest.mark.parametrize(
    "config",
    [[], {"platform": "ensemble"}, {"platform": "ensemble", "ensemble_scheduling": {"step": [{}]}}],
    ids=["not-an-object", "ensemble-without-steps", "step-without-model-name"],
)
def test_a_config_triton_never_sends_is_an_error(config: object) -> None:
    with pytest.raises(ValueError, match="model m"):
        ModelConfig.from_json("m", config)  # type: ignore[arg-type]


def test_instances_and_the_queues_behind_counted_models() -> None:
    """A plain model's instances, as Triton 2.51 serves its configuration: each executes
    while any request waits in its queue, the live floor under its rebuilt load."""
    served = {
        "name": "b1",
        "backend": "python",
        "max_batch_size": 8,
        "dynamic_batching": {"preferred_batch_size": [8], "max_queue_delay_microseconds": 0},
        "instance_group": [{"name": "b1_0", "kind": "KIND_CPU", "count": 2, "gpus": []}],
    }
    configs = {
        "b1": ModelConfig.from_json("b1", served),
        "llm": ModelConfig("llm", ("streamer",)),
        "streamer": ModelConfig("streamer", (), True, instances=1),
    }
    assert configs["b1"].instances == 2
    selection = select(("b1", "llm"), configs, {})
    assert selection.behind_counted == {"b1", "streamer"}
    # A decoupled model's instance returns from execute at once: it bounds nothing.
    assert selection.busy_while_queued == {"b1": 2}
