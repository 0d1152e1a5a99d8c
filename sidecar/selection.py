"""Which models' figures make this pod's load, each request counted once. Pure: no I/O.

The user names models (TRITON_MODELS) or none (every model on the metrics page).
What a name means depends on the model, read from Triton's model configuration
(`GET /v2/models/<m>/config`) and from what it publishes on the metrics page:

- An engine that publishes its own gauges (TensorRT-LLM's `nv_trt_llm_request_metrics`,
  the vLLM backend's `vllm:num_requests_running`): those gauges, exact.
- An ensemble (`platform: ensemble`): a request to it passes through its steps
  (`ensemble_scheduling.step[].model_name`, nested ensembles expanded). When a
  step is an engine with gauges, the engine's gauges count the request, once;
  otherwise the ensemble's own completion counters do (they run from the request's
  arrival to its last response, also over decoupled steps). Its steps are not
  counted again on their own, and their Triton queues (the pending count, one
  request in one queue at a time) add to waiting.
- A plain model: its completion counters (sidecar.completions), an estimate
  that lags. A decoupled model (`model_transaction_policy.decoupled`) without
  gauges cannot be measured at all: Triton counts its requests done when
  `execute` returns, before their responses are sent (seen on Triton 2.51), so
  its counters say nothing of how long they run. A selection with such a model
  is refused rather than reported short.

Which models' completion counters tell the service time (`Selection.served`,
sidecar.served), each user request once: the named models that requests arrive at,
and only those whose counters end when the request does. A named ensemble: its own
counters (arrival to last response, also over decoupled steps), never its steps', which
would count the request again per step (and a decoupled engine's counters end before
its responses). A named model that is a step of a named ensemble: not again. A plain
model: its own. A decoupled model: none, its counters stop when `execute` returns,
so a vLLM or streaming TensorRT-LLM engine named alone teaches no service time
(name the ensemble over it to learn one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

TRT_LLM = "nv_trt_llm_request_metrics"
VLLM = "vllm:num_requests_running"
ENGINE_GAUGES = (TRT_LLM, VLLM)


class SelectionError(ValueError):
    """The models selected cannot give a load figure; the message says which publish what."""


@dataclass(frozen=True)
class Selection:
    """Models by the role their figures play in the pod's load."""

    engines: frozenset[str]  # their own in-flight gauges (TensorRT-LLM, vLLM)
    counted: frozenset[str]  # in flight from their completion counters
    queued: frozenset[str]  # Triton's pending count adds to waiting
    served: frozenset[str] = frozenset()  # their completions tell the service time
    # Of `queued`: the queues whose requests a counted model's completions already count
    # (the counted model's own, its ensemble steps'). Their live pending count is a floor
    # under the rebuilt figure, never added to it (sidecar.completions).
    behind_counted: frozenset[str] = frozenset()
    # Requests a model surely executes while any waits in its queue: its instances (each
    # takes a request or a batch when free); 0 where that does not hold (decoupled).
    busy_while_queued: Mapping[str, int] = field(default_factory=dict, compare=False)

    @property
    def models(self) -> frozenset[str]:
        return self.engines | self.counted | self.queued | self.served


@dataclass(frozen=True)
class ModelConfig:
    """What the sidecar reads from a model's configuration."""

    name: str
    ensemble_steps: tuple[str, ...] = ()
    decoupled: bool = False
    instances: int = 0  # instance_group: count x GPUs, summed; 0 when not said

    @property
    def is_ensemble(self) -> bool:
        return bool(self.ensemble_steps)

    @staticmethod
    def from_json(name: str, config: Mapping[str, Any]) -> ModelConfig:
        """From Triton's JSON model configuration; a shape Triton never sends is a ValueError."""
        if not isinstance(config, Mapping):
            raise ValueError(f"model {name}: configuration is not a JSON object")
        steps: tuple[str, ...] = ()
        if config.get("platform") == "ensemble":
            scheduling = config.get("ensemble_scheduling") or {}
            raw = scheduling.get("step") if isinstance(scheduling, Mapping) else None
            if not isinstance(raw, list) or not raw:
                raise ValueError(f"model {name}: an ensemble without ensemble_scheduling.step")
            steps = tuple(str(step.get("model_name", "")) for step in raw)
            if not all(steps):
                raise ValueError(f"model {name}: an ensemble step without model_name")
        policy = config.get("model_transaction_policy") or {}
        decoupled = bool(policy.get("decoupled")) if isinstance(policy, Mapping) else False
        return ModelConfig(name, tuple(dict.fromkeys(steps)), decoupled, _instances(config))


def _instances(config: Mapping[str, Any]) -> int:
    """Instances Triton runs: each group's `count`, once per GPU it lists (Triton fills
    the list in the configuration it serves). Anything else unreadable counts 0."""
    groups = config.get("instance_group")
    total = 0
    for group in groups if isinstance(groups, list) else ():
        count = group.get("count", 1) if isinstance(group, Mapping) else 0
        gpus = group.get("gpus") if isinstance(group, Mapping) else None
        if isinstance(count, int) and count > 0:
            total += count * max(1, len(gpus) if isinstance(gpus, list) else 0)
    return total


def steps_of(model: str, configs: Mapping[str, ModelConfig]) -> tuple[str, ...]:
    """Every model a request to `model` passes through, nested ensembles expanded."""
    found: dict[str, None] = {}
    todo = list(configs[model].ensemble_steps) if model in configs else []
    while todo:
        step = todo.pop(0)
        if step in found or step == model:
            continue
        found[step] = None
        config = configs.get(step)
        if config is not None and config.is_ensemble:
            todo.extend(config.ensemble_steps)
    return tuple(found)


def select(
    names: Iterable[str],
    configs: Mapping[str, ModelConfig],
    gauges: Mapping[str, str],
    *,
    counted_elsewhere: bool = False,
) -> Selection:
    """The roles of the named models and of the steps of the named ensembles.

    `configs`: every named model's configuration and its steps'; `gauges`: the
    engine gauge each model publishes on the metrics page (ENGINE_GAUGES), if any;
    `counted_elsewhere`: in-flight is counted outside Triton (the in-pod worker), so a
    decoupled model without gauges is no longer refused: only its queue is read.
    Raises SelectionError when some named model's load cannot be measured."""
    names = tuple(dict.fromkeys(names))
    covered = {s for m in names if configs[m].is_ensemble for s in steps_of(m, configs)}
    engines: set[str] = set()
    counted: set[str] = set()
    queued: set[str] = set()
    served: set[str] = set()
    behind: set[str] = set()
    refused: list[str] = []
    for model in names:
        config = configs[model]
        if model not in covered and (config.is_ensemble or not config.decoupled):
            served.add(model)
        if model in gauges:
            engines.add(model)
            queued.add(model)
        elif config.is_ensemble:
            steps = [s for s in steps_of(model, configs) if not configs[s].is_ensemble]
            inner = [s for s in steps if s in gauges]
            engines.update(inner)
            queued.update(steps)
            if not inner:
                counted.add(model)
                behind.update(steps)  # its duration runs from arrival: their queues too
        elif model in covered:
            queued.add(model)  # its requests are counted through its ensemble
        elif config.decoupled:
            if counted_elsewhere:
                queued.add(model)
            else:
                refused.append(model)
        else:
            counted.add(model)
            queued.add(model)
            behind.add(model)
    if refused:
        raise SelectionError(
            f"cannot measure the load of {', '.join(refused)}: decoupled, and no in-flight "
            f"gauge ({' or '.join(ENGINE_GAUGES)}); Triton counts a decoupled model's "
            "requests done when execute returns, before their responses are sent. "
            "Name the ensemble or engine that publishes the gauges instead. "
            f"What each model offers: {describe(configs, gauges)}"
        )
    busy = {
        m: configs[m].instances
        for m in behind
        if m in configs and not configs[m].decoupled and not configs[m].is_ensemble
    }
    return Selection(
        frozenset(engines),
        frozenset(counted),
        frozenset(queued),
        frozenset(served),
        frozenset(behind),
        busy,
    )


def describe(configs: Mapping[str, ModelConfig], gauges: Mapping[str, str]) -> str:
    """One clause per model: what its figures can tell."""
    parts = []
    for name in sorted(configs):
        config = configs[name]
        if name in gauges:
            what = f"{gauges[name]} (exact in-flight)"
        elif config.is_ensemble:
            what = f"ensemble over {', '.join(config.ensemble_steps)}"
        elif config.decoupled:
            what = "decoupled, no gauge (cannot be measured)"
        else:
            what = "completion counters (estimated in-flight)"
        parts.append(f"{name}: {what}")
    return "; ".join(parts)
