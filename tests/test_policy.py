"""The decision, pure: scenarios stepped on an injected clock, no Redis, no gRPC.

Reactive cases turn the SLO-aware hold off (`sloWaitSeconds: off`) so that what
they show is the cold-start-aware rule alone; tests/test_policy_slo.py has the hold.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pytest

from scaler.policy import PolicyState, Reason, decide
from scaler.signals import Signals
from scaler.target_config import TargetConfig, parse_target_config

REACTIVE = {"sloWaitSeconds": "off", "serviceSeconds": "5", "coldStartSeconds": "60"}
START = 1_000_000.0


def config(**metadata: str) -> TargetConfig:
    return parse_target_config(
        "ns", "llama", {"targetConcurrency": "8", **REACTIVE, **metadata}
    ).config


def signals(inflight: float, queued: float = 0.0, ready: int = 0, starting: int = 0) -> Signals:
    return Signals(
        queue_depth=queued,
        inflight=inflight,
        waiting=0,
        pods_reported=ready + starting,
        pods_ready=ready,
        capacity_ready=8.0 * ready,
        capacity_starting=8.0 * starting,
    )


def replicas(metric: float, cfg: TargetConfig) -> int:
    """What the HPA makes of the metric (AverageValue)."""
    return math.ceil(round(metric / cfg.replica_target, 9))


@dataclass(frozen=True)
class Step:
    at: float  # seconds since the scenario began
    inflight: float
    queued: float
    ready: int
    replicas: int  # what the HPA would ask for
    active: bool
    reason: Reason


F, S, BL = Reason.FOLLOWING, Reason.SCALE_DOWN_HELD, Reason.BACKLOG
Z, IDLE, L = Reason.ZERO_DELAY_HOLD, Reason.IDLE, Reason.BELOW_ACTIVATION


def run(cfg: TargetConfig, steps: list[Step], state: PolicyState | None = None) -> PolicyState:
    state = state or PolicyState()
    for step in steps:
        sig = signals(step.inflight, step.queued, step.ready)
        d = decide(sig, state, cfg, START + step.at)
        got = (replicas(d.metric_value, cfg), d.active, d.reason)
        assert got == (step.replicas, step.active, step.reason), f"at t={step.at}: {d.detail}"
        state = d.new_state
    return state


def idle_for(cfg: TargetConfig, seconds: int, ready: int = 1, inflight: float = 0) -> PolicyState:
    """The state after `seconds` of KEDA polls (every 15 s) finding `inflight` requests
    in flight and nothing waiting."""
    state = PolicyState()
    for t in range(-seconds, 0, 15):
        state = decide(signals(inflight, ready=ready), state, cfg, START + t).new_state
    return state


SCENARIOS = {  # name: (in flight before, ready replicas before, steps)
    # One ready replica (8 slots), quiet for minutes: 40 requests arrive at once. It
    # drains them in 32 x 5 / 8 = 20 s, long before a replica ordered now (60 s): the
    # metric never asks for a second one.
    "short-burst-drained-within-the-cold-start-orders-nothing": (
        0,
        1,
        [
            Step(1, 8, 32, 1, 1, True, F),
            Step(10, 8, 16, 1, 1, True, S),
            Step(20, 8, 0, 1, 1, True, S),
            Step(30, 0, 0, 1, 1, True, Z),
        ],
    ),
    # Steady 20 in flight on 4 replicas, then arrivals triple (12 a second, offered 60)
    # and stay: the queue grows by 5.6 a second. The first poll after the rise orders
    # more, and each poll more again while the queue grows (the replicas are not ready
    # yet: here they never come).
    "sustained-rise-orders-at-once": (
        20,
        4,
        [
            Step(0, 20, 0, 4, 4, True, F),
            Step(15, 32, 84, 4, 5, True, BL),
            Step(30, 32, 168, 4, 10, True, BL),
            Step(45, 32, 252, 4, 14, True, BL),
        ],
    ),
}


@pytest.mark.parametrize(("before", "ready", "steps"), SCENARIOS.values(), ids=SCENARIOS.keys())
def test_scenario(before: float, ready: int, steps: list[Step]) -> None:
    cfg = config()
    run(cfg, steps, idle_for(cfg, 180, ready=ready, inflight=before))


def test_a_wake_from_zero_does_not_latch_the_first_cold_starts_backlog() -> None:
    # 2 requests a second from t=0 on a target at zero replicas; the replicas the HPA
    # asks for come ready 60 s after they were asked for. The queue that builds during
    # the first cold start (~120) is sized to be cleared within a cold start of new
    # capacity (10 + (120 x 5 + 10 x 60) / 60 = 30 slots: 5 replicas; sized as demand,
    # ceil(130 / 6.4) = 21), then forgotten: once it is gone and the scale-down delay has
    # passed, the metric is the offered load (2 / s x 5 s = 10: 2 replicas).
    cfg = config(scaleDownDelaySeconds="120")
    state, asked, ready_at = idle_for(cfg, 120, ready=0), 0, []
    queue, inflight, peak = 0.0, 0.0, 0
    for t in range(0, 600, 5):
        ready = sum(1 for r in ready_at if r <= t)
        capacity = 8 * ready
        arrivals = 10.0
        served = inflight / 5.0 * 5  # each slot finishes a 5 s request every 5 s
        queue = queue + arrivals
        inflight = max(0.0, inflight - served)
        start = min(queue, capacity - inflight)
        queue, inflight = queue - start, inflight + start
        d = decide(signals(inflight, queue, ready), state, cfg, START + t)
        state = d.new_state
        want = replicas(d.metric_value, cfg)
        peak = max(peak, want)
        if want > asked:
            ready_at += [t + 60] * (want - asked)
        asked = max(asked, want) if t < 300 else want
    assert queue == 0
    assert replicas(d.metric_value, cfg) == 2 and d.reason is F
    assert peak <= 5


def test_a_wake_orders_on_its_first_seconds_but_revises_a_burst() -> None:
    # At zero replicas, quiet (the last empty sample at t=0). A burst of 56 comes within
    # 5 s and nothing after; a stream brings 14 every 5 s. While nothing is ready the need
    # measures the rate over the traffic's age and clears, within that age of capacity
    # coming ready, the queue and what arrives during the cold start. As the burst's age
    # grows with no arrivals its need falls (at t=40: 7.4 offered, 26 slots, 5 replicas),
    # and the window holds only the need over a whole cold start, silence included
    # (56 x 5 / 60 = 4.7 offered, 4.7 x 3 = 14 slots); the stream's stays at twice its
    # rate and more (at t=40: 14.7 offered, 53 slots, 9 replicas).
    cfg = config(scaleDownDelaySeconds="120")
    wanted, held = {}, {}
    for name, arrivals in (("burst", [56] + [0] * 7), ("stream", [14] * 8)):
        state = decide(signals(0, ready=0), idle_for(cfg, 120, ready=0), cfg, START).new_state
        queue, wants = 0.0, []
        for step, arrived in enumerate(arrivals):
            queue += arrived
            d = decide(signals(0, queue, ready=0), state, cfg, START + 5 * (step + 1))
            state, wants = d.new_state, [*wants, replicas(d.metric_value, cfg)]
        wanted[name], held[name] = wants, max(v for _, v in state.needed)
    assert wanted["burst"] == sorted(wanted["burst"], reverse=True) and wanted["burst"][-1] == 5
    assert held["burst"] == pytest.approx(14.0)
    assert wanted["stream"][-1] == 9


@pytest.mark.parametrize(
    ("ready", "starting", "inflight", "queued", "want", "reason"),
    [
        # A wake's first pod is ready and 170 wait: the need (offered 14.8 + 14.2 + 6.8 =
        # 35.8 slots, 6 replicas) would release two pods still starting; they are kept.
        (1, 7, 8, 170, 8, Reason.STARTING_KEPT),
        (1, 7, 8, 0, 1, F),  # nothing waits: the need alone (offered 8 x 5 / 60 = 0.7)
        # Nothing starting: the ready pods are the need's to size. They drain the 170 in
        # 13 s, so it asks for the offered load (234 x 5 / 60 = 19.5: 4 replicas); a window
        # with a history would hold more.
        (8, 0, 64, 170, 4, F),
    ],
    ids=["requests-wait", "nothing-waits", "nothing-starting"],
)
def test_starting_pods_are_not_released_while_requests_wait(
    ready: int, starting: int, inflight: float, queued: float, want: int, reason: Reason
) -> None:
    cfg = config(scaleDownDelaySeconds="120")
    state = idle_for(cfg, 120, ready=0)
    d = decide(signals(inflight, queued, ready, starting), state, cfg, START)
    assert (replicas(d.metric_value, cfg), d.reason) == (want, reason), d.detail


def test_quiet_inactive_only_after_zero_delay() -> None:
    cfg = config(scaleDownDelaySeconds="60", scaleToZeroDelaySeconds="300")
    run(
        cfg,
        [
            Step(0, 3, 0, 1, 1, True, F),
            Step(10, 0, 0, 1, 1, True, Z),
            Step(299, 0, 0, 1, 0, True, Z),
            Step(300, 0, 0, 1, 0, False, IDLE),
        ],
    )


def test_low_demand_is_not_zero_demand() -> None:
    cfg = config(activationThreshold="5", scaleToZeroDelaySeconds="300")
    run(
        cfg,
        [
            Step(0, 0, 3, 0, 1, False, L),  # too little to wake the target
            # Woken, nothing ready: 3 more in 10 s (1.5 offered) taken as a stream that goes
            # on, the backlog cleared within those 10 s: 1.5 + (6 x 5 + 1.5 x 60) / 10 = 13.5.
            Step(10, 0, 6, 0, 3, True, BL),
            *[Step(t, 1, 0, 1, 1, True, S) for t in range(30, 90, 30)],  # low, not zero
            *[Step(t, 1, 0, 1, 1, True, F) for t in range(90, 900, 30)],
            Step(900, 0, 0, 1, 1, True, Z),
            Step(1169, 0, 0, 1, 0, True, Z),  # 300 s after the last demand, seen at t=870
            Step(1170, 0, 0, 1, 0, False, IDLE),
        ],
    )


def test_the_scale_down_window_holds_the_need_for_the_delay() -> None:
    cfg = config(scaleDownDelaySeconds="120")
    state = idle_for(cfg, 0)
    for t in range(0, 121, 15):  # 30 in flight for two minutes: 5 replicas
        state = decide(signals(30, ready=5), state, cfg, START + t).new_state
    held = decide(signals(6, ready=5), state, cfg, START + 200)
    assert (replicas(held.metric_value, cfg), held.reason) == (5, S)
    state = held.new_state
    for t in range(215, 400, 15):
        d = decide(signals(6, ready=5), state, cfg, START + t)
        state = d.new_state
    assert (replicas(d.metric_value, cfg), d.reason) == (1, F)


def test_sawtooth_traffic_does_not_flap() -> None:
    cfg = config(scaleDownDelaySeconds="120")
    state = PolicyState()
    asked = []
    for second in range(0, 1200, 15):  # KEDA/HPA cadence; load swings 24 <-> 4 each 30 s
        inflight = 24 if (second // 30) % 2 == 0 else 4
        d = decide(signals(inflight, ready=4), state, cfg, START + second)
        state = d.new_state
        asked.append(replicas(d.metric_value, cfg))
    assert len(set(asked[20:])) == 1  # settled: never released between the teeth


def test_a_changed_delay_keeps_the_old_window_maximum() -> None:
    first = config(scaleDownDelaySeconds="120")
    state = decide(signals(40, ready=7), idle_for(first, 0), first, START).new_state
    d = decide(signals(5, ready=7), state, config(scaleDownDelaySeconds="600"), START + 10)
    assert d.metric_value == max(v for _, v in state.needed)  # rebucketed, not forgotten


def test_the_windows_cost_a_bounded_number_of_buckets() -> None:
    cfg = config(scaleDownDelaySeconds="120")
    state = PolicyState()
    for tick in range(5000):  # 5000 samples, 10 per second
        state = decide(signals(tick % 17, ready=2), state, cfg, START + tick / 10).new_state
    assert max(len(state.needed), len(state.in_system), len(state.in_flight)) <= 62


def test_the_decision_is_a_pure_function() -> None:
    cfg, state = config(), PolicyState(active_until=START + 1_000.0, needed=((40, 7.0),))
    first = decide(signals(3, ready=1), state, cfg, START + 90.0)
    assert decide(signals(3, ready=1), state, cfg, START + 90.0) == first


@pytest.mark.parametrize(
    ("written", "learned", "planned"),
    [
        (None, 0.0, 5.0),  # nothing learned: the default serviceSeconds
        (None, 3.0, 5.0),  # shorter than the default: the default is its floor
        (None, 10.0, 10.0),  # longer: the pods' mean
        ("5", 10.0, 5.0),  # serviceSeconds written: obeyed as written, whatever was learned
        ("4", 0.0, 4.0),
    ],
)
def test_the_learned_service_time_sizes_the_backlog_unless_serviceseconds_is_written(
    written: str | None, learned: float, planned: float
) -> None:
    """One ready replica full, 40 waiting, steady for a cold start: the need is the offered
    8 plus the backlog's 40 x s / 60 s, s the service time planned with."""
    metadata = {"targetConcurrency": "8", "sloWaitSeconds": "off", "coldStartSeconds": "60"}
    if written is not None:
        metadata["serviceSeconds"] = written
    cfg = parse_target_config("ns", "llama", metadata).config
    state = PolicyState()
    for at in (0.0, 30.0, 60.0):
        sig = dataclasses.replace(signals(8, 40, ready=1), service_s=learned)
        d = decide(sig, state, cfg, START + at)
        state = d.new_state
    assert d.metric_value == pytest.approx(8 + 40 * planned / 60)
    assert d.reason is BL


def test_a_wake_younger_than_a_service_time_counts_its_growth_since_it_began() -> None:
    """9 s requests, 1 queued at the wake and 15 seven seconds later: the waking span is one
    service time (9 s), reaching before the first sample; the traffic began there, so the 14
    that arrived are offered 14 x 9 / 9 = 14 slots, and the queue plus the cold start's
    arrivals are to be cleared within the span (forecast item 3), not read as no growth."""
    cfg = config(serviceSeconds="9")
    first = decide(signals(0, 1), PolicyState(), cfg, START)
    d = decide(signals(0, 15), first.new_state, cfg, START + 7)
    assert d.metric_value == pytest.approx(14 + (15 * 9 + 14 * 60) / 9)
    assert d.reason is BL


def test_a_one_replica_rise_a_small_fleets_tolerance_band_would_swallow_is_lifted_past_it() -> None:
    """2 replicas, 13.5 needed (3 replicas' worth at 6.4 each), within the HPA's 10 % band
    (13.5 / 12.8 = 1.05): the metric goes just past 2 x 6.4 x 1.1 = 14.08, which the HPA turns
    into 3; the need itself is what the window remembers."""
    cfg = config()
    steady = dataclasses.replace(signals(13.5, ready=2), inflight=13.5)
    state = decide(steady, PolicyState(), cfg, START).new_state
    d = decide(steady, state, cfg, START + 15)
    assert d.metric_value == pytest.approx(14.08 * 1.001)
    assert "past the HPA's 0.1 tolerance: 2 -> 3 replicas" in d.detail
    assert max(v for _, v in d.new_state.needed) == pytest.approx(13.5)
