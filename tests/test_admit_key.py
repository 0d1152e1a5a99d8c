"""The admit key through the real scaler on a real Redis: with tokenLatencyMs every decision
publishes the sequences one pod may run at once (the C the token curve allows now, not the one
held for the scale-down delay) under `llm-scaler:{<ns>/<target>}:admit`, for the queue workers;
written when it moves by more than 1 % or every 60 s; deleted by the poll's read without the
objective."""

from __future__ import annotations

import pytest
import redis

from scaler.report_writer import WRITE_REPORT_LUA, write_call
from scaler.reports import report_keys
from scaler.service import ADMIT_REWRITE_S
from scaler.store import ADMIT_TTL_S
from scaler.token_curve import (
    MAX_GAP_S,
    NOTHING_MEASURED,
    Decoded,
    TokenCurve,
    replica_concurrency,
)
from tests.conftest import EVERY_DEPLOYMENT
from tests.harness import NAMESPACE, FakeClock, ReportPublisher, RunningScaler, pod_report, ref

every_deployment = pytest.mark.parametrize("deployment", EVERY_DEPLOYMENT, indirect=True)

H200_1K = [(8, 6.3), (32, 7.3), (64, 8.5), (128, 12.0)]  # sequences, ms a token
SLOTS = 256.0  # the engine's max batch, as the sidecar reports it (capacity)


def _decode(
    client: redis.Redis, target: str, at: float, curve: TokenCurve, *points: tuple[float, float]
) -> TokenCurve:
    """The pods' token time written through the write script: 1,000 steps at each point."""
    script = client.register_script(WRITE_REPORT_LUA)
    for sequences, token_ms in points:
        decoded = Decoded(sequences, 1000, token_ms)
        report = pod_report("p", capacity=SLOTS)
        keys, args = write_call(
            report_keys(NAMESPACE, target), report, 600, f"{at:.6f}", None, decoded
        )
        curve = curve.add(decoded, float(script(keys=keys, args=args)))
    return curve


def _admit(client: redis.Redis, target: str) -> float | None:
    value = client.get(report_keys(NAMESPACE, target).admit)
    return None if value is None else float(value)


def _poll(scaler: RunningScaler, publisher: ReportPublisher, clock: FakeClock, target: str) -> None:
    publisher.publish(target, pod_report("p", inflight=4, capacity=SLOTS), at=clock())
    scaler.keda.poll(ref(target, tokenLatencyMs="10"))


@every_deployment
def test_the_admit_key_holds_the_curves_concurrency_and_only_with_an_objective(
    scaler: RunningScaler, publisher: ReportPublisher, redis_client: redis.Redis, clock: FakeClock
) -> None:
    curve = _decode(redis_client, "learning", clock(), NOTHING_MEASURED, *H200_1K)
    _poll(scaler, publisher, clock, "learning")
    learned = replica_concurrency(curve, 10, start=8, cap=SLOTS).concurrency
    assert learned == pytest.approx(64 + 64 * 1.5 / 3.5)
    assert _admit(redis_client, "learning") == pytest.approx(learned, abs=1e-3)
    ttl = redis_client.ttl(report_keys(NAMESPACE, "learning").admit)
    assert ADMIT_TTL_S - 5 <= ttl <= ADMIT_TTL_S
    # Nothing measured: the starting point, targetConcurrency.
    _poll(scaler, publisher, clock, "starting")
    assert _admit(redis_client, "starting") == 8
    # No objective: no key, the workers take by their slots.
    publisher.publish("unasked", pod_report("p", inflight=4, capacity=SLOTS), at=clock())
    scaler.keda.poll(ref("unasked"))
    assert _admit(redis_client, "unasked") is None
    # The objective removed: the key goes with the next decision (by the poll's read).
    publisher.publish("learning", pod_report("p", inflight=4, capacity=SLOTS), at=clock())
    scaler.keda.poll(ref("learning"))
    assert _admit(redis_client, "learning") is None


def test_the_admit_key_follows_the_curve_at_once_both_ways(
    scaler: RunningScaler, publisher: ReportPublisher, redis_client: redis.Redis, clock: FakeClock
) -> None:
    """The context doubles: 64 sequences now take 14.2 ms a token and C falls; the curve
    recovers (once the slow writes have faded: beside them the bin's times spread, and the
    rule plans with their tail) and C rises again. The key follows each at the next
    decision, the rise too (the replicas' C waits for the scale-down delay; what a pod
    admits does not)."""
    curve = _decode(redis_client, "moving", clock(), NOTHING_MEASURED, *H200_1K)
    _poll(scaler, publisher, clock, "moving")
    first = _admit(redis_client, "moving")
    clock.advance(5)
    curve = _decode(redis_client, "moving", clock(), curve, *[(64, 14.2)] * 50)
    _poll(scaler, publisher, clock, "moving")
    fallen = replica_concurrency(curve, 10, start=8, cap=SLOTS).concurrency
    assert first is not None and fallen < 0.7 * first
    assert _admit(redis_client, "moving") == pytest.approx(fallen, abs=1e-3)
    for _ in range(60):  # ten minutes of the first curve: the slow writes fade out of the bin
        clock.advance(MAX_GAP_S)
        curve = _decode(redis_client, "moving", clock(), curve, *H200_1K)
    _poll(scaler, publisher, clock, "moving")
    risen = replica_concurrency(curve, 10, start=8, cap=SLOTS).concurrency
    assert risen > 1.3 * fallen
    assert _admit(redis_client, "moving") == pytest.approx(risen, abs=1e-3)


def test_an_unchanged_value_is_rewritten_every_60_seconds_only(
    scaler: RunningScaler, publisher: ReportPublisher, redis_client: redis.Redis, clock: FakeClock
) -> None:
    """Each poll does not cost a write: the same value is written again only after
    ADMIT_REWRITE_S, which refreshes the TTL and restores a key lost with a flush."""
    _decode(redis_client, "steady", clock(), NOTHING_MEASURED, *H200_1K)
    _poll(scaler, publisher, clock, "steady")
    written = _admit(redis_client, "steady")
    key = report_keys(NAMESPACE, "steady").admit
    redis_client.delete(key)  # a flush, as far as this key goes
    clock.advance(ADMIT_REWRITE_S - 1)
    _poll(scaler, publisher, clock, "steady")
    assert _admit(redis_client, "steady") is None
    clock.advance(1)
    _poll(scaler, publisher, clock, "steady")
    assert _admit(redis_client, "steady") == written
