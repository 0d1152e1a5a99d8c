"""One comparison: our scaler and the baselines on the same trace and cluster.

`Knobs` is everything a user can turn: the trigger metadata (validated by the
server's own `parse_target_config`), the ScaledObject's KEDA fields, the HPA
behavior, the cluster model and the SLO. Its defaults are the ScaledObject the
README recommends (poll 15 s, cooldown 15 s, HPA scale-down stabilisation 0).

Every adaptive policy starts from zero replicas (or its minReplicaCount floor,
warm, as a deployed target has it), as it does in production after a quiet
night; fixed fleets start warm, and the oracle has its clairvoyant warm fleet.
All draw the same cold-start samples (same seed).

After a quiet night our scaler still has the service record (`scaler.service_record`:
the mean service time the pods' completions taught, kept a week), and nothing
else: `yesterday` serves the same traffic once to fill it. `first-wake` is our
scaler on the day it is deployed, with no record: it plans with serviceSeconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from scaler.service_record import NOTHING_LEARNED, ServiceRecord
from scaler.simulator.cluster import ClusterParams
from scaler.simulator.controllers import (
    Controller,
    FixedController,
    MetricController,
    ScalerController,
    ScheduleController,
    concurrency_metric,
    redis_list_metric,
    slot_utilisation_metric,
)
from scaler.simulator.engine import RunResult, run
from scaler.simulator.keda_hpa import HpaBehavior, KedaHpaConfig
from scaler.simulator.oracle import Floor, clairvoyant_floor
from scaler.simulator.presets import BASELINES, SCALEDOBJECTS
from scaler.simulator.summary import Summary, summarise
from scaler.simulator.trace import Trace
from scaler.target_config import TargetConfig, parse_target_config
from scaler.token_curve import NOTHING_MEASURED, TokenCurve

# (pollingInterval, cooldownPeriod, HPA scale-down stabilisation): the README's ScaledObject.
_RECOMMENDED = SCALEDOBJECTS["recommended"]


@dataclass(frozen=True)
class Knobs:
    metadata: Mapping[str, str] = field(default_factory=lambda: {"targetConcurrency": "8"})
    polling_interval_s: float = _RECOMMENDED[0]
    cooldown_period_s: float = _RECOMMENDED[1]
    min_replicas: int = 0
    max_replicas: int = 100
    behavior: HpaBehavior = field(
        default_factory=lambda: HpaBehavior(scale_down_stabilization_s=_RECOMMENDED[2])
    )
    stream: bool = True  # trigger type external-push (StreamIsActive) rather than external
    cluster: ClusterParams = field(default_factory=ClusterParams)
    slo_wait_s: float = 2.0
    redis_list_length: float = 5.0  # KEDA redis scaler `listLength` default
    # The slo-aware policy: our scaler with the SLO-aware settings of docs/choosing-settings.md
    # on top of `metadata` (coldStartSeconds: the cluster's): plan for half the SLO's wait,
    # the measured mean service time (6.45 s on the conversation trace's pods), 10 %
    # headroom, and warm slots for 95 % of the bursts' requests.
    slo_metadata: Mapping[str, str] = field(
        default_factory=lambda: {
            "sloWaitSeconds": "1",
            "serviceSeconds": "6.5",
            "targetUtilization": "0.9",
            "sloTarget": "0.95",
        }
    )
    hpa_target_utilisation: float = 0.8
    seed: int = 0

    def target_config(self) -> TargetConfig:
        return parse_target_config("simulated", "llm", dict(self.metadata)).config

    def keda(self, target_per_replica: float, min_replicas: int | None = None) -> KedaHpaConfig:
        return KedaHpaConfig(
            target_per_replica=target_per_replica,
            polling_interval_s=self.polling_interval_s,
            cooldown_period_s=self.cooldown_period_s,
            min_replicas=self.min_replicas if min_replicas is None else min_replicas,
            max_replicas=self.max_replicas,
            behavior=self.behavior,
        )

    def slo_config(self) -> TargetConfig:
        metadata = {
            **self.metadata,
            "coldStartSeconds": f"{self.cluster.cold_start.nominal_s:g}",
            **self.slo_metadata,
        }
        return parse_target_config("simulated", "llm", metadata).config

    def with_metadata(self, **values: str) -> Knobs:
        return replace(self, metadata={**self.metadata, **values})


def ours(knobs: Knobs) -> ScalerController:
    config = knobs.target_config()
    return ScalerController(config, knobs.keda(config.replica_target), stream=knobs.stream)


def slo_aware(knobs: Knobs) -> ScalerController:
    config = knobs.slo_config()
    return ScalerController(
        config, knobs.keda(config.replica_target), stream=knobs.stream, name="slo-aware"
    )


def first_wake(knobs: Knobs) -> ScalerController:
    config = knobs.target_config()
    return ScalerController(
        config, knobs.keda(config.replica_target), stream=knobs.stream, name="first-wake"
    )


def keda_defaults(knobs: Knobs) -> MetricController:
    """KEDA and the HPA as they come (poll 30 s, cooldown 300 s, scale-down stabilisation
    300 s, trigger `external`), fed the plain concurrency now, one replica per
    targetConcurrency: what a scaler without smoothing or headroom gets. Its pods sit behind
    the same queue and workers, CAPACITY targetConcurrency: each admits that many."""
    config = knobs.target_config()
    keda = KedaHpaConfig(
        target_per_replica=config.target_concurrency,
        min_replicas=knobs.min_replicas,
        max_replicas=knobs.max_replicas,
    )
    controller = MetricController("keda-defaults", keda, concurrency_metric())
    controller.admission = config.target_concurrency
    return controller


def baseline(name: str, knobs: Knobs, floor: Floor) -> Controller:
    if name == "first-wake":
        return first_wake(knobs)
    if name == "slo-aware":
        return slo_aware(knobs)
    if name == "keda-defaults":
        return keda_defaults(knobs)
    if name == "oracle":
        return ScheduleController(floor.schedule, knobs.cluster.cold_start.nominal_s)
    if name == "fixed-peak":
        return FixedController()
    if name == "redis-list":
        return MetricController(
            "redis-list", knobs.keda(knobs.redis_list_length), redis_list_metric()
        )
    if name == "hpa-utilisation":
        slots = knobs.cluster.slots_per_replica
        return MetricController(
            "hpa-utilisation",
            knobs.keda(knobs.hpa_target_utilisation, min_replicas=max(1, knobs.min_replicas)),
            slot_utilisation_metric(slots),
        )
    raise ValueError(f"baseline = {name!r}, must be one of {', '.join(BASELINES)}")


def floor_of(trace: Trace, knobs: Knobs) -> Floor:
    return clairvoyant_floor(trace, knobs.cluster)


def yesterday(trace: Trace, knobs: Knobs, floor: Floor) -> ServiceRecord:
    """The service record a quiet night leaves: what the pods' completions taught while our
    scaler served the same traffic the day before."""
    return yesterday_run(trace, knobs, floor).served


def yesterday_run(trace: Trace, knobs: Knobs, floor: Floor) -> RunResult:
    """The day before: its service record and (with a pod profile) its token curve are what
    a quiet night leaves in Redis (a night without decoding forgets nothing)."""
    return run_policy(trace, knobs, first_wake(knobs), floor)


def run_policy(
    trace: Trace,
    knobs: Knobs,
    controller: Controller,
    floor: Floor,
    served: ServiceRecord = NOTHING_LEARNED,
    curve: TokenCurve = NOTHING_MEASURED,
) -> RunResult:
    """One run. An adaptive policy starts from zero replicas, or its minReplicaCount floor
    (warm: a deployed target always has it; a plain HPA's is 1); a fixed fleet starts warm;
    the oracle starts from its clairvoyant warm fleet (its own schedule). `served`: the
    service record found at the start (only our scaler reads it); `curve`: the token curve."""
    if isinstance(controller, (FixedController, ScheduleController)):
        # Planned by the oracle at so many requests a replica: its pods admit that many.
        controller.admission = knobs.cluster.planning_slots(trace)
    if isinstance(controller, FixedController):
        initial = floor.peak_replicas if controller.replicas is None else controller.replicas
    elif isinstance(controller, ScheduleController):
        initial = floor.warm_replicas
    elif isinstance(controller, (ScalerController, MetricController)):
        initial = controller.keda.min_replicas  # hpa-utilisation: the HPA's own floor of 1
    else:
        initial = knobs.min_replicas
    return run(
        trace,
        knobs.cluster,
        controller,
        floor.horizon_s,
        initial,
        seed=knobs.seed,
        served=served,
        curve=curve,
    )


def compare(
    trace: Trace,
    knobs: Knobs,
    baselines: tuple[str, ...] = BASELINES,
    fixed_replicas: tuple[int, ...] = (),
) -> tuple[Floor, list[RunResult], list[Summary]]:
    """Our scaler, the baselines, and fixed fleets of `fixed_replicas`, on the same trace."""
    floor = floor_of(trace, knobs)
    before = yesterday_run(trace, knobs, floor)
    controllers = [
        ours(knobs),
        *(baseline(name, knobs, floor) for name in baselines),
        *(FixedController(n) for n in fixed_replicas),
    ]
    results = [
        run_policy(trace, knobs, c, floor)
        if c.name == "first-wake"
        else run_policy(trace, knobs, c, floor, before.served, before.curve)
        for c in controllers
    ]
    summaries = [summarise(r, knobs.slo_wait_s, floor.gpu_hours) for r in results]
    return floor, results, summaries
