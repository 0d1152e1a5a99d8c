"""The decision, pure: scenarios stepped on an injected clock, no Redis, no gRPC."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from scaler.policy import PolicyState, Reason, decide
from scaler.signals import Signals
from scaler.target_config import TargetConfig, parse_target_config


def config(**metadata: str) -> TargetConfig:
    return parse_target_config("ns", "llama", {"targetConcurrency": "8", **metadata}).config


def signals(demand: float, ready: int = 0, starting: int = 0) -> Signals:
    return Signals(
        queue_depth=demand,
        inflight=0,
        waiting=0,
        pods_reported=ready + starting,
        pods_ready=ready,
        capacity_ready=8.0 * ready,
        capacity_starting=8.0 * starting,
    )


@dataclass(frozen=True)
class Step:
    at: float  # seconds since the scenario began
    demand: float
    metric: float
    active: bool
    reason: Reason
    ready: int = 0
    starting: int = 0


def run(cfg: TargetConfig, steps: list[Step], start: float = 1_000_000.0) -> None:
    state = PolicyState()
    for step in steps:
        d = decide(signals(step.demand, step.ready, step.starting), state, cfg, start + step.at)
        assert (d.metric_value, d.active, d.reason) == (step.metric, step.active, step.reason), (
            f"at t={step.at}: {d.detail}"
        )
        state = d.new_state


F, S, B = Reason.FOLLOWING, Reason.SCALE_DOWN_HELD, Reason.BURST_HOLD
Z, IDLE, L = Reason.ZERO_DELAY_HOLD, Reason.IDLE, Reason.BELOW_ACTIVATION

SCENARIOS = {
    "zero-first-request-active-at-once": (
        {},
        [Step(0, 0, 0, False, IDLE), Step(15, 1, 1, True, F), Step(30, 9, 9, True, F)],
    ),
    "scale-up-within-one-poll": (
        {},
        [Step(0, 4, 4, True, F), Step(1, 40, 40, True, F), Step(2, 90, 90, True, F)],
    ),
    "burst-then-quiet-held-for-the-delay": (
        {"scaleDownDelaySeconds": "120"},
        [
            Step(0, 40, 40, True, F),
            Step(10, 5, 40, True, S),
            Step(119, 5, 40, True, S),
            Step(124, 5, 5, True, F),  # 40's bucket [0; 2) left the window [4; 124]
        ],
    ),
    "no-delay-follows-demand-down": (
        {"scaleDownDelaySeconds": "0"},
        [Step(0, 40, 40, True, F), Step(1, 5, 5, True, F)],
    ),
    "quiet-inactive-only-after-zero-delay": (
        {"scaleDownDelaySeconds": "60", "scaleToZeroDelaySeconds": "300"},
        [
            Step(0, 3, 3, True, F),  # the last sample with demand
            Step(10, 0, 3, True, Z),
            Step(100, 0, 0, True, Z),
            Step(299, 0, 0, True, Z),
            Step(300, 0, 0, False, IDLE),
        ],
    ),
    "low-demand-is-not-zero-demand": (
        {"activationThreshold": "5", "scaleToZeroDelaySeconds": "300"},
        [
            Step(0, 3, 3, False, L),  # too little to wake the target
            Step(10, 6, 6, True, F),  # woken
            *[Step(t, 1, 6, True, S) for t in range(30, 130, 30)],  # low, not zero: active
            *[Step(t, 1, 1, True, F) for t in range(150, 900, 30)],
            Step(900, 0, 1, True, Z),
            Step(1169, 0, 0, True, Z),  # 300 s after the last demand, seen at t=870
            Step(1170, 0, 0, False, IDLE),
        ],
    ),
    "burst-peak-held-while-the-burst-lasts": (
        {"scaleDownDelaySeconds": "60", "burstThreshold": "2"},
        [
            # 2 ready pods = 16 slots; 40 > 2 x 16 is a burst.
            Step(0, 40, 40, True, F, ready=2),
            Step(30, 35, 40, True, S, ready=2),
            Step(60, 35, 40, True, S, ready=2),
            Step(90, 34, 40, True, B, ready=2),  # the window alone would say 35
            Step(120, 33, 40, True, B, ready=2),
            Step(150, 10, 40, True, B, ready=2),  # no burst now: held until 120 + 60
            Step(180, 10, 33, True, S, ready=2),  # the window still holds 33 (t=120)
            Step(182, 10, 10, True, F, ready=2),
        ],
    ),
}


@pytest.mark.parametrize(("metadata", "steps"), SCENARIOS.values(), ids=SCENARIOS.keys())
def test_scenario(metadata: dict[str, str], steps: list[Step]) -> None:
    run(config(**metadata), steps)


def test_sawtooth_traffic_does_not_flap() -> None:
    cfg = config(scaleDownDelaySeconds="120")
    state = PolicyState()
    replicas = []
    for second in range(0, 1200, 15):  # KEDA/HPA cadence; demand swings 24 <-> 4 each minute
        demand = 24 if (second // 30) % 2 == 0 else 4
        d = decide(signals(demand, ready=3), state, cfg, 5_000.0 + second)
        state = d.new_state
        replicas.append(math.ceil(d.metric_value / cfg.replica_target))
    assert set(replicas) == {4}  # ceil(24 / 6.4): never released between the teeth


def test_capacity_on_its_way_keeps_a_cold_start_backlog_from_latching_a_burst() -> None:
    # 1 pod ready, 3 more ordered and starting for 150 s (longer than the 60 s delay).
    # The backlog peaks at 30 at once, then settles at 22-24 while they start.
    cfg = config(scaleDownDelaySeconds="60", burstThreshold="2")
    timeline = [(0, 30), (30, 24), (60, 24), (90, 22), (120, 22)]

    def metric_at_end(count_starting: bool) -> float:
        state, metric = PolicyState(), 0.0
        for t, demand in timeline:
            s = signals(demand, ready=1, starting=3 if count_starting else 0)
            d = decide(s, state, cfg, 10_000.0 + t)
            state, metric = d.new_state, d.metric_value
        return metric

    # Committed capacity 4 x 8 = 32: no burst; the 60 s window holds 24 -> 4 replicas.
    assert metric_at_end(count_starting=True) == 24
    # Counting the ready pod alone (8), 22 > 2 x 8 is a burst all along, and the
    # peak of 30 stays latched -> ceil(30 / 6.4) = 5 replicas for a backlog of 22.
    assert metric_at_end(count_starting=False) == 30


def test_without_pod_reports_demand_never_counts_as_a_burst() -> None:
    # Queue-only targets (no sidecar): no capacity is known, so no burst hold.
    run(
        config(scaleDownDelaySeconds="30"),
        [Step(0, 50, 50, True, F), Step(40, 10, 10, True, F)],
    )


def test_a_changed_delay_keeps_the_old_window_maximum() -> None:
    state = decide(signals(40), PolicyState(), config(scaleDownDelaySeconds="120"), 100.0).new_state
    d = decide(signals(5), state, config(scaleDownDelaySeconds="600"), 110.0)
    assert d.metric_value == 40  # rebucketed, not forgotten


def test_the_window_costs_a_bounded_number_of_buckets() -> None:
    cfg = config(scaleDownDelaySeconds="120")
    state = PolicyState()
    for tick in range(5000):  # 5000 samples, 10 per second
        state = decide(signals(tick % 17), state, cfg, 50_000.0 + tick / 10).new_state
    assert len(state.buckets) <= 62  # 60 per window, +1 partial at each end


def test_the_decision_is_a_pure_function() -> None:
    cfg, state = config(), PolicyState(active_until=1_000.0, buckets=((40, 7.0),))
    first = decide(signals(3, ready=1), state, cfg, 90.0)
    assert decide(signals(3, ready=1), state, cfg, 90.0) == first
