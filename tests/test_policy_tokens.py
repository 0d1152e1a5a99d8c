"""The decision sized by a token-latency objective (tokenLatencyMs), pure: no Redis, no gRPC.

With the objective, a replica carries C sequences, the most the measured token curve allows
within it (scaler.token_curve.replica_concurrency); the metric is in units of the HPA's fixed
target (need x targetConcurrency / C); a rise of C waits for the scale-down delay, a fall acts
at once; with nothing measured C is targetConcurrency; without the objective nothing changes.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
import redis

from scaler.policy import PolicyState, decide
from scaler.signals import Signals
from scaler.state_codec import MERGE_STATE_LUA, decode_state, merge_args, merge_states
from scaler.target_config import TargetConfig
from scaler.token_curve import (
    NOTHING_MEASURED,
    TAIL_Z,
    Decoded,
    TokenCurve,
    replica_concurrency,
)
from tests.test_policy import START, config


def curve(*points: tuple[float, float]) -> TokenCurve:
    """A curve that measured `ms` a token at `sequences`, enough steps to be known."""
    learned = NOTHING_MEASURED
    for sequences, ms in points:
        learned = learned.add(Decoded(sequences, 1000.0, ms), START)
    return learned


# The H200 profile at context 1,024: 8.46 ms at 64 sequences, 12.03 ms at 128.
H200 = curve((32.0, 7.34), (64.0, 8.46), (128.0, 12.03))
C_H200 = 64 + 64 * (10 - 8.46) / (12.03 - 8.46)  # 91.6 sequences within 10 ms


def signals(
    inflight: float, ready: int, tokens: TokenCurve = NOTHING_MEASURED, slots: float = 256.0
) -> Signals:
    return Signals(
        queue_depth=0.0,
        inflight=inflight,
        waiting=0,
        pods_reported=ready,
        pods_ready=ready,
        capacity_ready=slots * ready,
        capacity_starting=0.0,
        token_curve=tokens,
    )


def replicas(metric: float, cfg: TargetConfig) -> int:
    """What the HPA makes of the metric: its target is fixed at targetConcurrency x
    targetUtilization."""
    return math.ceil(round(metric / cfg.replica_target, 9))


def steady(cfg: TargetConfig, sig: Signals, seconds: float = 300.0) -> tuple[float, PolicyState]:
    """Decisions every 15 s on the same signals; the last metric and state."""
    state, metric = PolicyState(), 0.0
    for k in range(int(seconds // 15) + 1):
        d = decide(sig, state, cfg, START + 15 * k)
        state, metric = d.new_state, d.metric_value
    return metric, state


def test_the_metric_is_in_units_of_the_fixed_target() -> None:
    cfg = config(tokenLatencyMs="10")
    sig = signals(inflight=300.0, ready=5, tokens=H200)
    metric, _ = steady(cfg, sig)
    d = decide(sig, steady(cfg, sig)[1], cfg, START + 315)
    assert math.isclose(d.replica_concurrency, C_H200, rel_tol=1e-6)
    assert d.concurrency_learned
    # need 300 slots: metric = 300 x 8 / C, and the HPA's ceil(metric / 6.4) = ceil(300 / 0.8 C)
    assert math.isclose(metric, 300 * 8 / C_H200, rel_tol=1e-6)
    assert replicas(metric, cfg) == math.ceil(300 / (0.8 * C_H200)) == 5
    assert f"{C_H200:.3g} sequences a replica within 10 ms" in d.detail


def test_a_spread_token_time_sizes_more_replicas_for_the_same_mean() -> None:
    """The same mean times as H200, but at 64 and 128 sequences the pods' writes spread 0.4 ms
    either side (contexts longer and shorter than the mean): C is where the mean plus TAIL_Z
    standard deviations meets 10 ms, so the same need asks more replicas."""
    cfg = config(tokenLatencyMs="10")
    spread = NOTHING_MEASURED
    for sequences, ms, jitter in ((32.0, 7.34, 0.0), (64.0, 8.46, 0.4), (128.0, 12.03, 0.4)):
        for t in (ms - jitter, ms + jitter):
            spread = spread.add(Decoded(sequences, 500.0, t / 2), START)
    t64, t128 = 8.46 + TAIL_Z * 0.4, 12.03 + TAIL_Z * 0.4
    c_tail = 64 + 64 * (10 - t64) / (t128 - t64)
    d = decide(signals(inflight=300.0, ready=5, tokens=spread), PolicyState(), cfg, START)
    assert math.isclose(d.replica_concurrency, c_tail, rel_tol=1e-6)
    assert c_tail < 0.85 * C_H200
    assert replicas(d.metric_value, cfg) == math.ceil(300 / (0.8 * c_tail)) == 6
    assert d.admit_concurrency == pytest.approx(c_tail)


def test_nothing_measured_sizes_by_target_concurrency_and_says_so() -> None:
    cfg = config(tokenLatencyMs="10")
    plain = config()
    sig = signals(inflight=30.0, ready=5, slots=8.0)
    d = decide(sig, PolicyState(), cfg, START)
    assert (d.replica_concurrency, d.concurrency_learned) == (8.0, False)
    assert "no token time measured yet" in d.detail
    assert d.metric_value == decide(sig, PolicyState(), plain, START).metric_value


def test_c_is_capped_by_the_slots_a_pod_reports() -> None:
    cfg = config(tokenLatencyMs="10")
    d = decide(signals(inflight=30.0, ready=1, tokens=H200, slots=48.0), PolicyState(), cfg, START)
    assert d.replica_concurrency == 48.0


def test_a_rise_of_c_waits_for_the_scale_down_delay_and_a_fall_acts_at_once() -> None:
    cfg = config(tokenLatencyMs="10", scaleDownDelaySeconds="120")
    long_context = curve((8.0, 7.45), (32.0, 10.2), (64.0, 14.18))  # context 4,096: C ~ 30
    c_long = 8 + 24 * (10 - 7.45) / (10.2 - 7.45)
    sig = signals(inflight=200.0, ready=8, tokens=long_context)
    _, state = steady(cfg, sig)
    now = START + 315
    # The context shortens: C may rise to 91.6, but only once the delay has held it.
    short = replace(sig, token_curve=H200)
    seen = []
    for k in range(12):
        d = decide(short, state, cfg, now + 15 * k)
        state = d.new_state
        seen.append((15 * k, d.replica_concurrency))
        if k == 0:
            assert "the smallest over the 120 s scale-down delay" in d.detail
    held = [c for t, c in seen if t < 120]
    assert all(math.isclose(c, c_long, rel_tol=1e-6) for c in held)
    assert math.isclose(seen[-1][1], C_H200, rel_tol=1e-6)  # t = 165 s: past the delay
    # The context grows again: C falls at once.
    d = decide(sig, state, cfg, now + 180)
    assert math.isclose(d.replica_concurrency, c_long, rel_tol=1e-6)


def test_a_pod_admits_the_c_the_curve_allows_now_not_the_held_one() -> None:
    """Replicas are kept for the held (smallest) C, but a pod may admit what the curve
    allows now: its tokens stay within the objective at that many."""
    cfg = config(tokenLatencyMs="10", scaleDownDelaySeconds="120")
    long_context = curve((8.0, 7.45), (32.0, 10.2), (64.0, 14.18))
    c_long = 8 + 24 * (10 - 7.45) / (10.2 - 7.45)
    sig = signals(inflight=200.0, ready=8, tokens=long_context)
    _, state = steady(cfg, sig)
    d = decide(replace(sig, token_curve=H200), state, cfg, START + 315)
    assert math.isclose(d.replica_concurrency, c_long, rel_tol=1e-6)  # held for replicas
    assert d.admit_concurrency is not None
    assert math.isclose(d.admit_concurrency, C_H200, rel_tol=1e-6)  # admitted now
    # Nothing measured: the starting point, targetConcurrency; capped by the pod's slots.
    assert decide(signals(30.0, 5), PolicyState(), cfg, START).admit_concurrency == 8.0
    capped = decide(signals(30.0, 1, H200, slots=48.0), PolicyState(), cfg, START)
    assert capped.admit_concurrency == 48.0
    # No objective: nothing to admit by, the worker keeps its CAPACITY.
    assert decide(sig, PolicyState(), config(), START).admit_concurrency is None


def test_without_the_objective_the_decision_is_the_one_before() -> None:
    """Random signals and states, with and without a token curve: no objective, no change
    (the curve is not read, the state gains no concurrency window)."""
    rng = random.Random(7)
    cfg = config()
    state = PolicyState()
    for k in range(400):
        sig = signals(inflight=float(rng.randint(0, 200)), ready=rng.randint(0, 12), slots=8.0)
        with_curve = decide(replace(sig, token_curve=H200), state, cfg, START + 7 * k)
        without = decide(sig, state, cfg, START + 7 * k)
        assert with_curve == without
        assert (without.replica_concurrency, without.concurrency_learned) == (8.0, False)
        assert without.new_state.inverse_concurrency == ()
        state = without.new_state


def test_the_concurrency_window_is_stored_merged_by_maximum_and_old_state_reads(
    redis_client: redis.Redis,
) -> None:
    """Two scaler replicas save their 1 / C samples (the c: fields); the stored window keeps
    the larger of each bucket (the smaller C), as merge_states does, and a state stored
    before the field existed reads with an empty window."""
    merge = redis_client.register_script(MERGE_STATE_LUA)
    one = PolicyState(bucket_s=2.0, needed=((10, 5.0),), inverse_concurrency=((10, 1 / 90),))
    two = PolicyState(bucket_s=2.0, inverse_concurrency=((10, 1 / 50), (11, 1 / 80)))
    for state in (one, two):
        merge(keys=["state"], args=merge_args(state, 24.0, ttl_s=60))
    stored = decode_state(redis_client.hgetall("state"))
    assert stored.inverse_concurrency == ((10, 1 / 50), (11, 1 / 80))
    assert stored == merge_states(merge_states(PolicyState(bucket_s=2.0), one), two)
    assert decode_state({"bucket_s": "2.0", "b:10": "5.0"}).inverse_concurrency == ()


def test_past_the_top_the_curve_is_extended_by_its_steeper_last_segment() -> None:
    """The workers admit at most C, so nothing is measured past it and C is where the
    extension lands. The step time is convex in the sequences (the H200 profile at context
    1,024, measured up to 96): the line through every point is shallower than the last
    segment and would overshoot 11 ms; the segment lands where the profile does (12.03 ms
    at 128)."""
    convex = curve((16.0, 6.50), (32.0, 7.34), (64.0, 8.46), (96.0, 10.24))
    top = (10.24 - 8.46) / 32  # ms per sequence over the last segment
    sized = replica_concurrency(convex, 11.0, start=8.0)
    assert sized.concurrency == pytest.approx(96 + (11 - 10.24) / top, rel=1e-6)
    profile_c = 96 + (11 - 10.24) / ((12.03 - 10.24) / 32)
    assert sized.concurrency == pytest.approx(profile_c, rel=0.01)
    assert "10.2 ms at 96 sequences, the most measured, extended" in sized.detail


def test_c_does_not_fall_because_the_bins_above_the_pods_faded() -> None:
    """Pods running below half of C (a quiet spell, replicas the SLO hold keeps) visit only
    low bins; the higher ones fade. That is no evidence of slower tokens: C stays where the
    latest decision set it, rather than falling to twice what is measured now, which would
    add replicas, run each still lower, and spiral down to targetConcurrency."""
    cfg = config(tokenLatencyMs="15")
    busy = signals(inflight=300.0, ready=3, tokens=H200)
    first = decide(busy, PolicyState(), cfg, START)
    c_busy = replica_concurrency(H200, 15.0, 8.0).concurrency  # 178, past the 128 measured
    assert c_busy > 128
    assert first.admit_concurrency == pytest.approx(c_busy, rel=1e-6)
    low_only = curve((16.0, 6.50), (32.0, 6.90))  # its slope alone would reach 356
    quiet = signals(inflight=60.0, ready=3, tokens=low_only)
    d = decide(quiet, first.new_state, cfg, START + 15)
    assert d.admit_concurrency == pytest.approx(c_busy, rel=1e-6)
    # With no decision before it, twice the most measured is the bound (64).
    assert decide(quiet, PolicyState(), cfg, START).admit_concurrency == 64.0
    # Evidence does move it: the same pods now measure 16 ms at 32 sequences.
    slower = signals(inflight=60.0, ready=3, tokens=curve((16.0, 9.0), (32.0, 16.0)))
    fallen = decide(slower, d.new_state, cfg, START + 30)
    assert fallen.admit_concurrency is not None and fallen.admit_concurrency < 32.0
