"""Per-ScaledObject series are bounded: they go when KEDA stops asking, and there are at most N.

The collector is driven with a stepped clock; the limit is also shown end to end, through
the real scaler's gRPC and a real scrape of its /metrics.
"""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from scaler.local_redis import LocalRedis
from scaler.settings import SettingsError, settings_from_env
from scaler.target_series import Target, TargetSeries, TargetValues
from scaler.telemetry import ScalerMetrics
from tests.harness import FakeClock, RunningScaler, ref, scaler_settings

IDLE_S = 60.0


def values(target_name: str = "llama", demand: float = 3) -> TargetValues:
    return TargetValues(
        demand=demand,
        queue_depth=0,
        pods_reported=1,
        pods_ready=1,
        metric_value=demand,
        active=True,
        reason="following",
        invalid_reports=0,
        target_name=target_name,
    )


def scrape(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def series_of(text: str, scaled_object: str) -> list[str]:
    return [line for line in text.splitlines() if f'scaled_object="{scaled_object}"' in line]


def test_series_go_once_not_decided_on_for_the_idle_time() -> None:
    registry, clock = CollectorRegistry(), FakeClock(1000.0)
    evicted: list[Target] = []
    series = TargetSeries(registry, IDLE_S, 100, lambda t, v: evicted.append(t), clock)
    series.record(("ns", "kept"), values(), 0)
    series.record(("ns", "deleted"), values(), 0)
    assert len(series_of(scrape(registry), "deleted")) == 10  # every per-target family

    clock.advance(IDLE_S / 2)
    series.record(("ns", "kept"), values(demand=5), 0)  # KEDA still asks about this one
    clock.advance(IDLE_S / 2 + 1)
    text = scrape(registry)

    assert series_of(text, "deleted") == []
    assert 'llm_scaler_demand_requests{namespace="ns",scaled_object="kept"} 5.0' in text
    assert 'llm_scaler_target_series_evicted_total{cause="idle"} 1.0' in text
    assert "llm_scaler_target_series 1.0" in text
    assert evicted == [("ns", "deleted")]


def test_at_most_max_targets_the_least_recently_decided_go_first() -> None:
    registry, clock = CollectorRegistry(), FakeClock(0.0)
    series = TargetSeries(registry, IDLE_S, 3, monotonic=clock)
    for name in ("a", "b", "c"):
        series.record(("ns", name), values(), 0)
    series.record(("ns", "a"), values(), 0)  # now the most recent
    series.record(("ns", "d"), values(), 0)
    series.record(("ns", "e"), values(), 0)

    text = scrape(registry)
    assert [n for n in "abcde" if series_of(text, n)] == ["a", "d", "e"]
    assert 'llm_scaler_target_series_evicted_total{cause="limit"} 2.0' in text
    assert 'llm_scaler_target_series_evicted_total{cause="idle"} 0.0' in text


def test_reason_and_stale_counter_per_target() -> None:
    registry, clock = CollectorRegistry(), FakeClock(0.0)
    series = TargetSeries(registry, IDLE_S, 10, monotonic=clock)
    series.record(("ns", "llama"), values(), 2)
    held = values()
    held.reason = "backlog"
    series.record(("ns", "llama"), held, 3)
    text = scrape(registry)
    reasons = [line for line in series_of(text, "llama") if "decision_reason" in line]
    assert reasons == [
        'llm_scaler_decision_reason{namespace="ns",reason="backlog",scaled_object="llama"} 1.0'
    ]
    assert registry.get_sample_value(
        "llm_scaler_stale_reports_dropped_total", {"namespace": "ns", "scaled_object": "llama"}
    ) == pytest.approx(5)


def test_cold_starts_live_and_go_with_the_target_series() -> None:
    registry, clock = CollectorRegistry(), FakeClock(0.0)
    metrics = ScalerMetrics(registry, series_idle_s=IDLE_S, monotonic=clock)
    cold = "llm_scaler_cold_start_seconds_count"
    metrics.observe_cold_start("ns", "llama", 40)  # a target no ScaledObject asks about
    assert registry.get_sample_value(cold, {"namespace": "ns", "target": "llama"}) is None

    metrics.targets.record(("ns", "llama-a"), values("llama"), 0)
    metrics.targets.record(("ns", "llama-b"), values("llama"), 0)  # same pods, same target
    metrics.observe_cold_start("ns", "llama", 40)
    assert registry.get_sample_value(cold, {"namespace": "ns", "target": "llama"}) == 1

    clock.advance(IDLE_S / 2 + 1)
    metrics.targets.record(("ns", "llama-b"), values("llama"), 0)
    clock.advance(IDLE_S / 2 + 1)
    scrape(registry)  # llama-a goes; llama-b still reports under "llama"
    assert registry.get_sample_value(cold, {"namespace": "ns", "target": "llama"}) == 1
    clock.advance(IDLE_S)
    scrape(registry)
    assert registry.get_sample_value(cold, {"namespace": "ns", "target": "llama"}) is None


def test_the_scaler_keeps_max_target_series_end_to_end(
    redis_server: LocalRedis, clock: FakeClock
) -> None:
    running = RunningScaler(scaler_settings(redis_server.url, max_target_series=2), clock)
    try:
        for name in ("first", "second", "third"):
            running.keda.poll(ref(name))
        with urllib.request.urlopen(running.metrics_url, timeout=5) as answer:
            text = answer.read().decode()
    finally:
        running.stop()
    assert [n for n in ("first", "second", "third") if series_of(text, n)] == ["second", "third"]
    assert 'llm_scaler_target_series_evicted_total{cause="limit"} 1.0' in text


def test_series_settings_have_defaults_and_are_checked() -> None:
    settings = settings_from_env({})
    assert (settings.series_idle_s, settings.max_target_series) == (300.0, 10_000)
    cases = [
        ({"SERIES_IDLE_SECONDS": "0"}, "SERIES_IDLE_SECONDS = '0'"),
        ({"SERIES_IDLE_SECONDS": "soon"}, "SERIES_IDLE_SECONDS = 'soon'"),
        (
            {"SERIES_IDLE_SECONDS": "15", "STREAM_INTERVAL_SECONDS": "10"},
            "SERIES_IDLE_SECONDS = 15, must be at least twice STREAM_INTERVAL_SECONDS (10)",
        ),
        ({"MAX_TARGET_SERIES": "0"}, "MAX_TARGET_SERIES = '0', must be an integer in [1; 1000000]"),
    ]
    for env, message in cases:
        with pytest.raises(SettingsError) as err:
            settings_from_env(env)
        assert message in str(err.value), env
