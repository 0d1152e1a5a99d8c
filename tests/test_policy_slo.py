"""The SLO-aware hold of the decision, pure: burst sizes held over the horizon, on an
injected clock."""

from __future__ import annotations

import pytest

from scaler.policy import PolicyState, Reason, decide
from scaler.signals import Signals
from scaler.state_codec import state_ttl_s
from scaler.target_config import MetadataError, TargetConfig, parse_target_config

SLO = {"sloWaitSeconds": "2", "serviceSeconds": "5", "coldStartSeconds": "60"}
START = 1_000_000.0  # a multiple of every bucket width used here


def config(**metadata: str) -> TargetConfig:
    return parse_target_config("ns", "llama", {"targetConcurrency": "8", **metadata}).config


def signals(inflight: float, queued: float = 0.0, ready: int = 0) -> Signals:
    return Signals(queued, inflight, 0, ready, ready, 8.0 * ready, 0.0)


def quiet(cfg: TargetConfig, ready: int) -> PolicyState:
    state = PolicyState()
    for t in range(-300, 0, 15):
        state = decide(signals(0, ready=ready), state, cfg, START + t).new_state
    return state


def _burst(cfg: TargetConfig, state: PolicyState, at: float) -> PolicyState:
    """70 requests at once on 2 quiet replicas: 16 start, 54 wait."""
    return decide(signals(16, 54, ready=2), state, cfg, START + at).new_state


def test_a_lone_burst_is_not_held() -> None:
    # A surge that never comes back: a hold set after it serves nothing, so it sets none.
    cfg = config(**SLO)
    state = _burst(cfg, quiet(cfg, 2), 0)
    d = decide(signals(2, ready=2), state, cfg, START + 200)
    assert d.metric_value < 6.4 and d.reason is not Reason.SLO_HOLD


def test_a_burst_keeps_its_warm_slots_up_to_a_cold_start_then_only_if_it_recurs() -> None:
    # Rent or buy: the 70 keep 50 warm slots (metric 40) while their bucket (60 s wide)
    # began less than a cold start (60 s) ago, then, not seen again, nothing.
    cfg = config(**SLO)
    state = _burst(cfg, quiet(cfg, 2), 0)
    d = decide(signals(2, ready=2), state, cfg, START + 1)
    assert (d.metric_value, d.reason) == (pytest.approx(40.0), Reason.SLO_HOLD)
    assert "bursts up to 70, recurring or under 60 s old" in d.detail
    d = decide(signals(2, ready=2), d.new_state, cfg, START + 61)
    assert d.metric_value < 20 and d.reason is not Reason.SLO_HOLD  # the need's own


def test_a_burst_that_recurs_is_held_for_the_horizon_by_the_formula() -> None:
    # The same 70 again 5 minutes later: it recurred, so the hold keeps
    # 70 / (1 + 2 / 5) = 50 warm slots (metric 50 x 0.8 = 40: 7 replicas), awake all along
    # (2 in flight), while the first is in the hour's horizon; then it lets go.
    cfg = config(**SLO)
    state = _burst(cfg, quiet(cfg, 2), 0)
    for t in range(15, 300, 15):
        state = decide(signals(2, ready=2), state, cfg, START + t).new_state
    state = _burst(cfg, state, 300)
    for t in (500, 3500):
        d = decide(signals(2, ready=2), state, cfg, START + t)
        assert (d.metric_value, d.reason, d.active) == (pytest.approx(40.0), Reason.SLO_HOLD, True)
        assert "bursts up to 70, recurring" in d.detail and "50 warm slots" in d.detail
        assert "within 2 s" in d.detail
    d = decide(signals(2, ready=2), state, cfg, START + 3700)
    assert d.metric_value < 6.4 and d.reason is not Reason.SLO_HOLD


def test_with_no_demand_the_target_sleeps_after_fifteen_cold_starts_and_wakes_warm() -> None:
    # The burst twice, then nothing at all: the target stays awake 15 cold starts (900 s),
    # not the whole hour. Woken again within the hour, it asks at once for the slots the
    # bursts needed: the level is remembered, so the cold start is paid once, not per burst.
    cfg = config(**SLO)
    state = _burst(cfg, _burst(cfg, quiet(cfg, 2), -120), 0)
    for t in range(15, 900, 15):
        d = decide(signals(0, ready=2), state, cfg, START + t)
        state = d.new_state
        assert d.active and d.reason is Reason.ZERO_DELAY_HOLD
    d = decide(signals(0, ready=2), state, cfg, START + 915)
    state = d.new_state
    assert not d.active and d.metric_value == 0
    woken = decide(signals(0, 3, ready=0), state, cfg, START + 2000)
    assert woken.active and woken.metric_value == pytest.approx(40.0)


def test_explicit_zero_delays_are_obeyed_with_the_hold_on() -> None:
    # scaleToZeroDelaySeconds and scaleDownDelaySeconds written "0": one request, then
    # nothing: inactive with metric 0 as soon as demand is 0, not 15 cold starts later.
    cfg = config(**SLO, scaleToZeroDelaySeconds="0", scaleDownDelaySeconds="0")
    state = decide(signals(1, ready=1), quiet(cfg, 1), cfg, START).new_state
    d = decide(signals(0, ready=1), state, cfg, START + 1)
    assert (d.active, d.metric_value, d.reason) == (False, 0.0, Reason.IDLE)
    # Absent, the hold's derived delay applies: awake 15 cold starts.
    cfg = config(**SLO)
    state = decide(signals(1, ready=1), quiet(cfg, 1), cfg, START).new_state
    assert decide(signals(0, ready=1), state, cfg, START + 899).active


def test_a_queue_built_over_a_cold_start_is_not_held_as_a_burst() -> None:
    # Waking from zero at 2 requests a second: after 60 s, 120 wait, but only ~20 of them
    # arrived within the 10 s burst window. The hold is sized for those, not the 120.
    cfg = config(**SLO)
    state = quiet(cfg, 0)
    for t in range(0, 61, 5):
        d = decide(signals(0, 2.0 * t, ready=0), state, cfg, START + t)
        state = d.new_state
    assert max(v for _, v in state.peak_buckets) <= 22
    # ... while the same 120 arriving at once are a burst of 120.
    sudden = decide(signals(0, 120, ready=1), quiet(cfg, 1), cfg, START)
    assert max(v for _, v in sudden.new_state.peak_buckets) == 120


def test_a_backlog_drained_by_fresh_replicas_is_not_held_as_a_burst() -> None:
    # 300 wait after a 60 s wake at 5 a second (50-60 within the burst window). 20 replicas
    # come ready and start 160 at once; ten seconds on, 160 in flight make the completions
    # estimate 160 x 10 / 5 = 320, more than fresh starts finish: the system shrank, so
    # that is not taken for a burst of 240.
    cfg = config(**SLO)
    state = quiet(cfg, 0)
    for t in range(0, 61, 5):
        state = decide(signals(0, 5.0 * t, ready=0), state, cfg, START + t).new_state
    state = decide(signals(160, 140, ready=20), state, cfg, START + 65).new_state
    d = decide(signals(160, 80, ready=20), state, cfg, START + 75)
    assert max(v for _, v in d.new_state.peak_buckets) <= 60  # 5 a second, over 10-12 s


def test_off_turns_the_hold_off() -> None:
    cfg = config(**{**SLO, "sloWaitSeconds": "off"})
    assert cfg.slo_wait_s is None
    state = decide(signals(16, 54, ready=2), quiet(cfg, 2), cfg, START).new_state
    d = decide(signals(2, ready=2), state, cfg, START + 400)
    assert d.metric_value < 6.4 and state.peak_buckets == ()


def test_the_window_stays_bounded_over_the_horizon() -> None:
    cfg, state = config(**SLO), PolicyState()
    for tick in range(0, 4000):
        state = decide(signals(tick % 13, ready=2), state, cfg, START + tick).new_state
    assert len(state.needed) <= 62 and len(state.peak_buckets) <= 62


def test_the_stored_state_outlives_the_horizon_and_the_longest_awake_time() -> None:
    assert state_ttl_s(config(**SLO)) >= 15 * 3600  # awake 15 measured cold starts of an hour
    assert state_ttl_s(config(**SLO, sloHorizonSeconds="86400")) >= 86400  # the longest horizon
    assert state_ttl_s(config(sloWaitSeconds="off")) == 300 + 3600  # without the hold


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("sloWaitSeconds", "-1", "sloWaitSeconds = '-1', must be a number in [0; 600], or 'off'"),
        (
            "sloWaitSeconds",
            "soon",
            "sloWaitSeconds = 'soon', must be a number in [0; 600], or 'off'",
        ),
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
    ) == (2.0, 60.0, 5.0, 3600.0, 0.9)
