"""The SLO-aware mode of the decision, pure: keys, formula and hold, on an injected clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from scaler.policy import PolicyState, Reason, decide, slo_horizon_s, slo_level, slo_slots
from scaler.signals import Signals
from scaler.state_codec import state_ttl_s
from scaler.target_config import MetadataError, TargetConfig, parse_target_config

SLO = {"sloWaitSeconds": "2", "serviceSeconds": "5", "coldStartSeconds": "60"}
# 1 + W / s = 2: a level L needs L / 2 warm slots, metric L / 2 x 0.8 = 0.4 L.
SLO2 = {"sloWaitSeconds": "2", "serviceSeconds": "2", "coldStartSeconds": "60"}
START = 1_000_000.0  # a multiple of every bucket width used here


def config(**metadata: str) -> TargetConfig:
    return parse_target_config("ns", "llama", {"targetConcurrency": "8", **metadata}).config


def signals(demand: float, cold_start_s: float = 0.0, queued: float = 0.0) -> Signals:
    """`demand` requests in flight (being served) and `queued` waiting in the queue."""
    return Signals(queued, demand, 0, 0, 0, 0.0, 0.0, cold_start_s=cold_start_s)


@dataclass(frozen=True)
class Step:
    at: float
    demand: float  # in flight
    metric: float
    active: bool
    reason: Reason
    cold_start_s: float = 0.0
    queued: float = 0.0  # waiting: in the system, not served


F, S, H = Reason.FOLLOWING, Reason.SCALE_DOWN_HELD, Reason.SLO_HOLD
Z, IDLE = Reason.ZERO_DELAY_HOLD, Reason.IDLE

# Horizon 20 x 60 s = 1200 s (buckets of 20 s); a peak of 70 needs 70 / (1 + 2/5) = 50
# warm slots, metric 50 x 0.8 = 40 -> ceil(40 / 6.4) = 7 replicas.
SCENARIOS = {
    "burst-capacity-held-for-the-horizon": (
        SLO,
        [
            Step(0, 70, 70, True, F),  # the ordinary rule: ceil(70 / 6.4) = 11 replicas
            Step(10, 5, 70, True, S),  # the 120 s scale-down window still holds 70
            Step(141, 5, 40, True, H),  # 70's bucket [0; 20) left the 120 s window
            Step(1199, 5, 40, True, H),
            Step(1221, 5, 5, True, F),  # ... and the 1200 s horizon
        ],
    ),
    "awake-for-the-horizon-not-just-the-zero-delay": (
        SLO,
        [
            Step(0, 70, 70, True, F),
            Step(10, 0, 70, True, Z),
            Step(400, 0, 40, True, Z),  # scaleToZeroDelaySeconds 300 is over: still awake
            Step(1199, 0, 40, True, Z),
            Step(1200, 0, 0, False, IDLE),  # 1200 s after the last demand (t=0)
        ],
    ),
    "a-longer-measured-cold-start-lengthens-the-horizon": (
        SLO,
        [
            Step(0, 70, 70, True, F, cold_start_s=90),  # horizon 1800 s, buckets of 30 s
            Step(1300, 5, 40, True, H, cold_start_s=90),
            Step(1831, 5, 5, True, F, cold_start_s=90),
        ],
    ),
    "a-shorter-measured-cold-start-does-not-shorten-it": (
        SLO,
        [
            Step(0, 70, 70, True, F, cold_start_s=20),
            Step(1199, 5, 40, True, H, cold_start_s=20),
        ],
    ),
    "explicit-horizon": (
        {**SLO, "sloHorizonSeconds": "300"},
        [
            Step(0, 70, 70, True, F),
            Step(200, 5, 40, True, H),
            Step(306, 5, 5, True, F),  # buckets of 5 s
        ],
    ),
    "zero-wait-holds-one-slot-per-request": (
        {**SLO, "sloWaitSeconds": "0", "targetUtilization": "1"},
        [Step(0, 70, 70, True, F), Step(200, 5, 70, True, H)],
    ),
    "off-by-default": (
        {"serviceSeconds": "5", "coldStartSeconds": "60"},
        [Step(0, 70, 70, True, F), Step(124, 5, 5, True, F)],
    ),
    # A backlog is the SLO formula's, not the reactive rule's: 16 served + 54 waiting
    # = 70 in the system -> 50 warm slots (metric 40, 7 replicas), where sizing the
    # backlog at 6.4 per replica would order 11 for a queue gone before they are ready.
    "a-backlog-is-sized-by-the-slo-formula": (
        SLO,
        [
            Step(0, 16, 40, True, H, queued=54),
            Step(10, 16, 40, True, H),  # the queue drained; its peak is held
            Step(141, 30, 40, True, H),
            Step(1221, 30, 30, True, F),
        ],
    ),
    "served-load-above-the-hold-is-followed-and-smoothed": (
        SLO,
        [
            Step(0, 60, 60, True, F, queued=10),  # 70 in the system: hold 40 < 60 served
            Step(60, 20, 60, True, S),  # the 120 s window holds the 60 served
            Step(141, 20, 40, True, H),
        ],
    ),
    "without-the-mode-a-backlog-is-demand": (
        {"serviceSeconds": "5", "coldStartSeconds": "60"},
        [Step(0, 16, 70, True, F, queued=54), Step(10, 16, 70, True, S)],
    ),
    # sloTarget: peaks 100, 60, 40 and 0 (at t=200) in four 20 s buckets, 200 in all.
    # q 1 holds the largest (100 -> 50 slots -> metric 40); q 0.9 lets 10 % of the
    # requests (20) miss: L = 80 -> metric 32; q 0.8: L = 60 -> 24.
    "slo-target-1-holds-the-largest-peak": (
        SLO2,
        [
            Step(0, 100, 100, True, F),
            Step(20, 60, 100, True, S),
            Step(40, 40, 100, True, S),
            Step(200, 0, 40, True, Z),
        ],
    ),
    "slo-target-0.9-lets-a-tenth-of-the-requests-miss": (
        {**SLO2, "sloTarget": "0.9"},
        [
            Step(0, 100, 100, True, F),
            Step(20, 60, 100, True, S),
            Step(40, 40, 100, True, S),
            Step(200, 0, 32, True, Z),
            Step(1000, 10, 31.6, True, H),  # one more peak, 10: A = 21, L = 79
            Step(1221, 10, 19.2, True, H),  # 100 left; 60, 40, 0, 10, 10 now: L = 60 - 12
        ],
    ),
    "slo-target-0.8": (
        {**SLO2, "sloTarget": "0.8"},
        [
            Step(0, 100, 100, True, F),
            Step(20, 60, 100, True, S),
            Step(40, 40, 100, True, S),
            Step(200, 0, 24, True, Z),
        ],
    ),
    "from-zero-the-backlog-alone-wakes-and-sizes-it": (
        SLO,
        [Step(0, 0, 40, True, H, queued=70), Step(30, 0, 40, True, H, queued=70)],
    ),
}


@pytest.mark.parametrize(("metadata", "steps"), SCENARIOS.values(), ids=SCENARIOS.keys())
def test_scenario(metadata: dict[str, str], steps: list[Step]) -> None:
    cfg, state = config(**metadata), PolicyState()
    for step in steps:
        sig = signals(step.demand, step.cold_start_s, step.queued)
        d = decide(sig, state, cfg, START + step.at)
        got = (round(d.metric_value, 9), d.active, d.reason)
        assert got == (step.metric, step.active, step.reason), f"at t={step.at}: {d.detail}"
        state = d.new_state


def test_the_formula_on_worked_numbers() -> None:
    cfg = config(**SLO)
    assert slo_slots(cfg, 70) == pytest.approx(50.0)  # 70 / (1 + 2 / 5)
    assert slo_horizon_s(cfg, 60.0) == 1200.0
    # Never shorter than the scale-down delay.
    assert slo_horizon_s(config(**SLO, sloHorizonSeconds="10"), 60.0) == 120.0


@pytest.mark.parametrize(
    ("target", "peaks", "level"),
    [
        (1.0, [40, 100, 60, 0], 100),  # every request: the largest peak
        (0.9, [40, 100, 60, 0], 80),  # A = 20: the 100-burst misses 20
        (0.8, [40, 100, 60, 0], 60),  # A = 40: it misses 40
        (0.5, [40, 100, 60, 0], 100 / 3),  # A = 100, shared by the three above L (k = 3)
        (0.9, [50, 50], 45),  # A = 10, shared: 5 each
        (0.99, [], 0),  # nothing seen
        (0.9, [0, 0, 0], 0),
    ],
    ids=lambda v: str(v),
)
def test_slo_level(target: float, peaks: list[float], level: float) -> None:
    cfg = config(**SLO, sloTarget=f"{target:g}")
    assert slo_level(peaks, cfg) == pytest.approx(level)
    # the share of the peaks' requests above the level is what the target allows
    if peaks and sum(peaks):
        missed = sum(max(0.0, p - level) for p in peaks)
        assert missed <= (1 - target) * sum(peaks) + 1e-9


def test_the_hold_explains_itself() -> None:
    cfg = config(**SLO)
    state = decide(signals(70), PolicyState(), cfg, START).new_state
    d = decide(signals(5), state, cfg, START + 200)
    assert d.reason is Reason.SLO_HOLD
    assert "peak 70" in d.detail and "50 warm slots" in d.detail and "within 2 s" in d.detail


def test_the_window_stays_bounded_over_the_horizon() -> None:
    cfg, state = config(**SLO), PolicyState()
    for tick in range(0, 4000):
        state = decide(signals(tick % 13), state, cfg, START + tick).new_state
    assert len(state.buckets) <= 62 and len(state.peak_buckets) <= 62


def test_the_stored_state_outlives_the_longest_horizon() -> None:
    assert state_ttl_s(config(**SLO)) >= 20 * 3600  # a measured cold start of up to an hour
    assert state_ttl_s(config()) == 300 + 3600  # unchanged when the mode is off


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("sloWaitSeconds", "-1", "sloWaitSeconds = '-1', must be a number in [0; 600]"),
        ("sloWaitSeconds", "soon", "sloWaitSeconds = 'soon', must be a number in [0; 600]"),
        ("coldStartSeconds", "7200", "coldStartSeconds = '7200', must be a number in [0; 3600]"),
        ("serviceSeconds", "0", "serviceSeconds = '0', must be a number in [0.01; 3600]"),
        ("sloHorizonSeconds", "-5", "sloHorizonSeconds = '-5', must be a number in [0; 86400]"),
        ("sloTarget", "0.3", "sloTarget = '0.3', must be a number in [0.5; 1]"),
        ("sloTarget", "1.01", "sloTarget = '1.01', must be a number in [0.5; 1]"),
    ],
)
def test_bad_values_are_refused_naming_the_key(key: str, value: str, message: str) -> None:
    with pytest.raises(MetadataError) as err:
        config(**{key: value})
    assert str(err.value) == message


def test_defaults() -> None:
    cfg = config()
    assert (
        cfg.slo_wait_s,
        cfg.cold_start_s,
        cfg.service_s,
        cfg.slo_horizon_s,
        cfg.slo_target,
    ) == (None, 60.0, 5.0, None, 1.0)
