"""The token curve in Redis: the write script keeps the `:tokens` hash by TokenCurve.add's rule
(on one Redis, Sentinel and Cluster), the read script hands it to the decision in the same
round trip, and a hash that does not parse is reported, never fatal; the service says when
pods never measure token time."""

from __future__ import annotations

import asyncio
import logging
import math
import urllib.request

import pytest
import redis
from prometheus_client import CollectorRegistry

from scaler.policy import Decision, PolicyState, Reason
from scaler.redis_connect import RedisLink
from scaler.report_writer import WRITE_REPORT_LUA, write_call
from scaler.reports import ReportKeys, report_keys
from scaler.service import NO_TOKEN_TIME_WARN_S
from scaler.service_record import Served
from scaler.signals import Signals
from scaler.store import TargetStore
from scaler.target_config import TargetConfig, parse_target_config
from scaler.telemetry import ScalerMetrics
from scaler.token_curve import (
    BINS_PER_DOUBLING,
    CURVE_FLOOR_STEPS,
    CURVE_TTL_S,
    MAX_AGE,
    MAX_BIN,
    MAX_GAP_S,
    NOTHING_MEASURED,
    TOKEN_MEMORY_S,
    Decoded,
    TokenCurve,
    bin_index,
    replica_concurrency,
)
from tests.conftest import EVERY_DEPLOYMENT
from tests.harness import NAMESPACE, FakeClock, ReportPublisher, RunningScaler, pod_report, ref
from tests.redis_deployments import Deployment

every_deployment = pytest.mark.parametrize("deployment", EVERY_DEPLOYMENT, indirect=True)

T0 = 1_700_000_000.0
# Sequences on the bins' rounding boundaries, 2^((k + 0.5) / BINS_PER_DOUBLING), and next to them.
BOUNDARIES = [2 ** ((k + 0.5) / BINS_PER_DOUBLING) for k in range(0, 40, 3)]
NEAR = [math.nextafter(b, side) for b in BOUNDARIES for side in (0.0, math.inf)]

# Each case: writes as (seconds after T0, Decoded), in order.
CASES: dict[str, list[tuple[float, Decoded]]] = {
    "one write": [(0.0, Decoded(8, 100, 0.63))],
    "one bin, decayed by the gaps": [
        (0.0, Decoded(8, 100, 0.63)),
        (1.0, Decoded(8.2, 150, 0.97)),
        (3.5, Decoded(7.9, 120, 0.75)),
    ],
    "one bin's spread, at one concurrency and across its width": [
        (0.0, Decoded(64, 100, 0.85)),
        (1.0, Decoded(64, 100, 0.95)),
        (2.0, Decoded(60.5, 120, 0.99)),
        (2.5, Decoded(70.1, 80, 0.72)),
    ],
    "a long gap forgets MAX_GAP_S, no more": [
        (0.0, Decoded(32, 400, 2.9)),
        (4000.0, Decoded(32, 10, 0.073)),
        (4000.0 + MAX_GAP_S / 2, Decoded(64, 300, 2.55)),
    ],
    "writes that measure nothing change nothing": [
        (0.0, Decoded(16, 200, 1.3)),
        (1.0, Decoded(0.4, 100, 0.6)),  # fewer than half a sequence
        (2.0, Decoded(16, 0, 0.0)),  # no step
        (3.0, Decoded(16, 10, 0.0)),  # no time
        (30.0, Decoded(16, 50, 0.33)),
    ],
    "an earlier stamp forgets nothing": [
        (10.0, Decoded(4, 100, 0.6)),
        (9.0, Decoded(4, 100, 0.61)),
    ],
    "every bin, fractional steps, past the last bin": [
        (0.1 * i, Decoded(s, 0.5 + i, 0.001 * (1 + i)))
        for i, s in enumerate([0.5, 1, 1.5, 2, 3, 5.7, 8, 16, 33, 64, 128, 256, 5000, 1e6])
    ],
    "the rounding boundaries and their neighbours": [
        (0.2 * i, Decoded(s, 10, 0.07)) for i, s in enumerate(BOUNDARIES + NEAR)
    ],
    # Past MAX_AGE time constants the curve is renormalised: 1e-3 steps fade below the
    # floor and go, a million steps stay; then the exponent grows again from 0.
    "renormalised past MAX_AGE, the faded bins deleted": [
        (0.0, Decoded(300, 1e-3, 1e-5)),
        (0.0, Decoded(64, 1e6, 8500.0)),
        *[(MAX_GAP_S * i, Decoded(1 + i % 40, 100 + i, 0.7 + i / 100)) for i in range(1, 260)],
    ],
}


def _write(
    client: redis.Redis,
    keys: ReportKeys,
    at: float | None,
    decoded: Decoded | None,
    served: Served | None = None,
) -> float:
    """One pod's write through the contract's write script; `at` None: Redis TIME."""
    script = client.register_script(WRITE_REPORT_LUA)
    stamp = "" if at is None else f"{at:.6f}"
    call_keys, args = write_call(keys, pod_report("p"), 600, stamp, served, decoded)
    return float(script(keys=call_keys, args=args))


def _stored(client: redis.Redis, keys: ReportKeys) -> TokenCurve:
    return TokenCurve.from_fields(client.hgetall(keys.tokens))


PARTS = ("weight", "sequences_sum", "ms_sum", "ms_squares", "sequences_squares", "cross_sum")


def _assert_agree(stored: TokenCurve, expected: TokenCurve, case: str) -> None:
    """The same bins (the same deleted below the floor), each equal to 1e-9 relative."""
    assert sorted(stored.bins) == sorted(expected.bins), case
    for k, b in expected.bins.items():
        got = stored.bins[k]
        for part in PARTS:
            assert getattr(got, part) == pytest.approx(getattr(b, part), rel=1e-9), (case, k, part)
    assert stored.updated_at == expected.updated_at, case
    assert stored.age == pytest.approx(expected.age, rel=1e-9, abs=1e-12), case


@every_deployment
def test_the_write_script_keeps_the_curve_by_the_python_rule(redis_client: redis.Redis) -> None:
    renormalised = 0
    for n, (case, writes) in enumerate(CASES.items()):
        keys = report_keys(NAMESPACE, f"case-{n}")
        expected = NOTHING_MEASURED
        for offset, decoded in writes:
            stamped = _write(redis_client, keys, T0 + offset, decoded)
            aged = expected.age
            expected = expected.add(decoded, stamped)
            renormalised += expected.age < aged
            _assert_agree(_stored(redis_client, keys), expected, case)
    assert renormalised == 2  # 259 writes 10 s apart: past MAX_AGE twice


def test_a_write_reads_and_writes_one_bin_until_it_renormalises(
    redis_client: redis.Redis,
) -> None:
    """O(1) a write: no HGETALL of the curve (Redis's own counts of the calls scripts make)
    but in the one write that renormalises, once per MAX_AGE time constants of traffic."""
    keys = report_keys(NAMESPACE, "cost")
    for k in range(MAX_BIN + 1):
        _write(redis_client, keys, T0, Decoded(2 ** (k / BINS_PER_DOUBLING), 1000, 7.0))
    expected, writes, aged = _stored(redis_client, keys), 0, 0.0
    redis_client.config_resetstat()
    while expected.age >= aged:  # until the write that renormalises
        assert "cmdstat_hgetall" not in redis_client.info("commandstats"), writes
        writes, aged, decoded = writes + 1, expected.age, Decoded(8, 1000, 6.3)
        stamp = _write(redis_client, keys, T0 + MAX_GAP_S * writes, decoded)
        expected = expected.add(decoded, stamp)
    assert abs(writes - MAX_AGE * TOKEN_MEMORY_S / MAX_GAP_S) <= 1
    assert redis_client.info("commandstats")["cmdstat_hgetall"]["calls"] == 1
    _assert_agree(_stored(redis_client, keys), expected, "renormalised")


def test_a_curve_stored_without_age_is_read_and_continued_as_its_true_values(
    redis_client: redis.Redis,
) -> None:
    """A hash of the layout before the decay exponent was kept (the bins' true values, no
    `age`): read as age 0, and the next write carries on from it as TokenCurve.add does."""
    keys = report_keys(NAMESPACE, "old-layout")
    old = {"at": repr(T0), "12:w": "1000.0", "12:b": "8000.0", "12:t": "6300.0"}
    redis_client.hset(keys.tokens, mapping=old)
    expected = TokenCurve.from_fields(old)
    assert [(p.sequences, p.token_ms, p.weight) for p in expected.points()] == [(8, 6.3, 1000)]
    decoded = Decoded(64, 1000, 8.5)
    expected = expected.add(decoded, _write(redis_client, keys, T0 + 6, decoded))
    _assert_agree(_stored(redis_client, keys), expected, "old layout")
    weights = [p.weight for p in _stored(redis_client, keys).points()]
    assert weights == pytest.approx([1000 * math.exp(-6 / TOKEN_MEMORY_S), 1000])


@pytest.mark.parametrize("age", [None, "0.0", repr(MAX_AGE - 1e-3)])
def test_a_bin_stored_without_its_squares_is_continued_with_spread_unknown(
    redis_client: redis.Redis, age: str | None
) -> None:
    """Bins kept before their squares (`q`, `s`, `x`) were: read as every sample at the bin's
    means (spread 0), and continued from that by the write script as by TokenCurve.add, in
    the bin written, beside it, and through a renormalisation (age just under MAX_AGE)."""
    keys = report_keys(NAMESPACE, f"no-squares-{age}")
    old = {"at": repr(T0), "12:w": "1000.0", "12:b": "8000.0", "12:t": "6300.0"}
    old |= {"24:w": "500.0", "24:b": "32000.0", "24:t": "4250.0"} | ({"age": age} if age else {})
    redis_client.hset(keys.tokens, mapping=old)
    expected = TokenCurve.from_fields(old)
    assert [p.tail_ms for p in expected.points()] == [p.token_ms for p in expected.points()]
    for i, decoded in enumerate([Decoded(8, 1000, 7.3), Decoded(64, 200, 1.9)], start=1):
        expected = expected.add(decoded, _write(redis_client, keys, T0 + i, decoded))
        _assert_agree(_stored(redis_client, keys), expected, f"no squares, write {i}")
        if age == repr(MAX_AGE - 1e-3):
            assert expected.age < 1  # renormalised by the first write
    assert all(f"{k}:q" in redis_client.hkeys(keys.tokens) for k in (12, 24))
    assert _stored(redis_client, keys).decayed()[12].spread_ms() > 0


def test_the_python_and_lua_bins_agree_on_every_boundary(redis_client: redis.Redis) -> None:
    """Each rounding boundary and its neighbours land in the bin bin_index names (Python's
    round() would have sent some halves to the even bin)."""
    for i, sequences in enumerate(BOUNDARIES + NEAR):
        keys = report_keys(NAMESPACE, f"boundary-{i}")
        _write(redis_client, keys, T0, Decoded(sequences, 10, 0.07))
        assert list(_stored(redis_client, keys).bins) == [bin_index(sequences)], sequences
    assert bin_index(2 ** (2.5 / BINS_PER_DOUBLING) * (1 + 1e-12)) == 3


def test_a_write_stamped_by_redis_time_decays_by_that_time(redis_client: redis.Redis) -> None:
    keys = report_keys(NAMESPACE, "redis-time")
    first = _write(redis_client, keys, None, Decoded(8, 100, 0.63))
    second = _write(redis_client, keys, None, Decoded(8, 50, 0.33))
    expected = NOTHING_MEASURED.add(Decoded(8, 100, 0.63), first).add(Decoded(8, 50, 0.33), second)
    _assert_agree(_stored(redis_client, keys), expected, "redis time")
    assert abs(first - redis_client.time()[0]) < 60


def test_the_report_and_the_service_record_are_written_beside_the_curve(
    redis_client: redis.Redis,
) -> None:
    keys = report_keys(NAMESPACE, "all")
    _write(redis_client, keys, T0, Decoded(8, 100, 0.63))  # serves nothing
    assert not redis_client.exists(keys.service)
    _write(redis_client, keys, T0 + 1, Decoded(8, 100, 0.63), Served(3, 12.0))
    assert redis_client.hget(keys.service, "completed") == "3"
    assert redis_client.zscore(keys.seen, "p") == T0 + 1
    assert _stored(redis_client, keys).bins[bin_index(8)].weight > 100


def test_a_write_that_measures_nothing_leaves_no_curve(redis_client: redis.Redis) -> None:
    keys = report_keys(NAMESPACE, "quiet")
    _write(redis_client, keys, T0, None)
    _write(redis_client, keys, T0, Decoded(0, 0, 0.0))
    _write(redis_client, keys, T0, Decoded(0.4, 100, 1.0))
    assert not redis_client.exists(keys.tokens)
    assert redis_client.hexists(keys.reports, "p")


def test_the_curve_expires_a_week_after_its_last_measurement(redis_client: redis.Redis) -> None:
    keys = report_keys(NAMESPACE, "ttl")
    _write(redis_client, keys, T0, Decoded(8, 100, 0.63))
    redis_client.expire(keys.tokens, 5)
    _write(redis_client, keys, T0 + 1, Decoded(0, 0, 0.0))  # measures nothing: no refresh
    assert redis_client.ttl(keys.tokens) <= 5
    _write(redis_client, keys, T0 + 2, Decoded(8, 100, 0.63))
    assert CURVE_TTL_S - 5 <= redis_client.ttl(keys.tokens) <= CURVE_TTL_S


def test_a_bin_nobody_visits_fades_out_of_the_hash(redis_client: redis.Redis) -> None:
    """A bin decays by exp(-MAX_GAP_S / TOKEN_MEMORY_S) per write 10 s apart; once below the
    floor, the next renormalisation (every MAX_AGE time constants) deletes its fields, and the
    hash never holds more than the MAX_BIN + 1 bins whatever the pods decode."""
    keys = report_keys(NAMESPACE, "fading")
    expected = NOTHING_MEASURED.add(Decoded(300, 1, 0.02), T0)
    _write(redis_client, keys, T0, Decoded(300, 1, 0.02))
    faded = bin_index(300)
    gone_at = []
    for i in range(1, 200):
        sequences = 1 + (i * 37) % 2000  # every bin up to 2,000 sequences but the fading one's
        if bin_index(sequences) == faded:
            sequences = 8
        decoded = Decoded(sequences, 1000, 7.0)
        expected = expected.add(decoded, _write(redis_client, keys, T0 + MAX_GAP_S * i, decoded))
        still = faded in expected.bins
        assert redis_client.hexists(keys.tokens, f"{faded}:w") == still, i
        if not still and not gone_at:
            gone_at.append(i)
            assert expected.age == 0  # deleted by the renormalising write
    assert len(gone_at) == 1
    assert abs(gone_at[0] - MAX_AGE * TOKEN_MEMORY_S / MAX_GAP_S) <= 1
    assert math.exp(-MAX_AGE) < CURVE_FLOOR_STEPS  # one step fades below it by then
    _assert_agree(_stored(redis_client, keys), expected, "fading")
    assert redis_client.hlen(keys.tokens) <= 2 + 6 * (MAX_BIN + 1)


def _config(target: str, **metadata: str) -> TargetConfig:
    return parse_target_config(NAMESPACE, target, {"targetConcurrency": "8", **metadata}).config


def _read(deployment: Deployment, config: TargetConfig, now: float = T0) -> Signals:
    """The signals a decision at `now` reads (the reports written up to then are fresh)."""

    async def read() -> Signals:
        link = RedisLink(deployment.url, None, 2.0, deployment.sentinel_password)
        try:
            return (await TargetStore(link, 2.0).read(config, now)).signals
        finally:
            await link.aclose()

    return asyncio.run(read())


@every_deployment
def test_the_read_hands_the_curve_to_the_decision_when_an_objective_is_set(
    redis_client: redis.Redis, deployment: Deployment
) -> None:
    keys = report_keys(NAMESPACE, "llama")
    expected = NOTHING_MEASURED
    for i, sequences in enumerate([8, 8, 32, 64]):
        decoded = Decoded(sequences, 300, 0.3 * (6 + sequences / 16))
        expected = expected.add(decoded, _write(redis_client, keys, T0 + i, decoded))
    signals = _read(deployment, _config("llama", tokenLatencyMs="10", queueKey="q"), T0 + 3)
    _assert_agree(signals.token_curve, expected, "read")
    assert signals.pods_reported == 1
    assert [round(p.sequences) for p in signals.token_curve.points()] == [8, 32, 64]
    # Without an objective nobody needs it: the read does not fetch it.
    assert _read(deployment, _config("llama"), T0 + 3).token_curve == NOTHING_MEASURED


def test_a_malformed_curve_is_reported_once_and_what_parses_is_used(
    redis_client: redis.Redis, deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    keys = report_keys(NAMESPACE, "garbled")
    _write(redis_client, keys, T0, Decoded(8, 300, 1.9))
    _write(redis_client, keys, T0 + 1, Decoded(64, 300, 2.6))
    redis_client.hset(keys.tokens, mapping={f"{bin_index(64)}:t": "fast", "at": "-1"})
    config = _config("garbled", tokenLatencyMs="10")
    with caplog.at_level(logging.WARNING, logger="scaler.store"):
        curves = [_read(deployment, config, T0 + 1).token_curve for _ in range(3)]
    assert curves[0] == curves[2]
    assert list(curves[0].bins) == [bin_index(8)]  # the bin whose fields all parse
    assert curves[0].updated_at is None
    (warning,) = [r.getMessage() for r in caplog.records if "token curve" in r.getMessage()]
    assert warning.startswith(f"token curve {keys.tokens}: token curve field ")
    assert warning.endswith("; using the fields that are numbers")
    # The next measurement repairs it: the writer forgets what the reader ignores.
    _write(redis_client, keys, T0 + 2, Decoded(64, 300, 2.6))
    repaired = _read(deployment, config, T0 + 2).token_curve
    decayed = repaired.decayed()
    assert decayed[bin_index(64)].weight == pytest.approx(300)
    assert decayed[bin_index(8)].weight == pytest.approx(300 * math.exp(-1 / TOKEN_MEMORY_S))
    assert repaired.updated_at == T0 + 2


def test_an_age_that_is_not_a_number_is_read_as_nothing_measured_and_started_over(
    redis_client: redis.Redis, deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the decay exponent no bin can be scaled to its true value: the reader plans
    as if nothing were measured, the next write starts the curve afresh."""
    keys = report_keys(NAMESPACE, "ageless")
    _write(redis_client, keys, T0, Decoded(8, 300, 1.9))
    _write(redis_client, keys, T0 + 1, Decoded(64, 300, 2.6))
    redis_client.hset(keys.tokens, "age", "soon")
    config = _config("ageless", tokenLatencyMs="10")
    with caplog.at_level(logging.WARNING, logger="scaler.store"):
        assert _read(deployment, config, T0 + 1).token_curve == NOTHING_MEASURED
    (warning,) = [r.getMessage() for r in caplog.records if "token curve" in r.getMessage()]
    assert warning == (
        f"token curve {keys.tokens}: token curve field age = 'soon', must be a number; "
        "planning as if nothing were measured"
    )
    _write(redis_client, keys, T0 + 2, Decoded(32, 300, 2.2))
    fresh = NOTHING_MEASURED.add(Decoded(32, 300, 2.2), T0 + 2)
    _assert_agree(_read(deployment, config, T0 + 2).token_curve, fresh, "started over")


def test_a_curve_key_of_another_type_is_reported_and_read_as_nothing_measured(
    redis_client: redis.Redis, deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    keys = report_keys(NAMESPACE, "typo")
    redis_client.set(keys.tokens, "not a hash")
    _write(redis_client, keys, T0, Decoded(8, 300, 1.9))  # the report is still written
    with caplog.at_level(logging.WARNING, logger="scaler.store"):
        signals = _read(deployment, _config("typo", tokenLatencyMs="10"))
    assert signals.token_curve == NOTHING_MEASURED
    assert signals.pods_reported == 1
    assert redis_client.get(keys.tokens) == "not a hash"
    (warning,) = [r.getMessage() for r in caplog.records if "token curve" in r.getMessage()]
    assert warning.startswith(f"token curve {keys.tokens}: WRONGTYPE")
    assert warning.endswith("planning as if nothing were measured")


def _token_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if "no pod measures token time" in r.getMessage()
    ]


def test_pods_that_never_measure_token_time_are_reported_once_per_target(
    scaler: RunningScaler,
    publisher: ReportPublisher,
    redis_client: redis.Redis,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Five minutes of reports without token time, on the decisions' clock: a plain Triton
    (nothing to measure), said once; not for a target that measures it, nor one that does not
    ask, nor while no pod reports."""
    caplog.set_level(logging.WARNING, logger="scaler.service")
    objective = {"tokenLatencyMs": "10"}
    polled = {"plain": objective, "measured": objective, "unasked": {}, "empty": objective}

    def poll_all(seconds_later: float) -> None:
        clock.advance(seconds_later)
        for target in ("plain", "measured", "unasked"):
            publisher.publish(target, pod_report("p", inflight=1), at=clock())
        _write(redis_client, report_keys(NAMESPACE, "measured"), clock(), Decoded(8, 100, 0.63))
        for target, metadata in polled.items():
            scaler.keda.poll(ref(target, **metadata))

    poll_all(0)
    poll_all(NO_TOKEN_TIME_WARN_S - 1)
    assert _token_warnings(caplog) == []
    poll_all(1)
    assert _token_warnings(caplog) == [
        f"{NAMESPACE}/plain: tokenLatencyMs set but no pod measures token time (plain Triton? "
        "the sidecar reads TensorRT-LLM or vLLM metrics): targetConcurrency 8 is used"
    ]
    poll_all(NO_TOKEN_TIME_WARN_S)
    assert len(_token_warnings(caplog)) == 1


def test_get_metric_spec_says_the_concurrency_is_learned_from_target_concurrency(
    scaler: RunningScaler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scaler.service")
    scaler.keda.poll(ref("objective", tokenLatencyMs="12.5"))
    scaler.keda.poll(ref("no-objective"))
    lines = [r.getMessage() for r in caplog.records if "derived values" in r.getMessage()]
    (objective,) = [line for line in lines if "/objective:" in line]
    assert (
        "the per-replica concurrency: learned from the pods' token time within tokenLatencyMs "
        "12.5 ms, targetConcurrency 8 as the start until enough is measured"
    ) in objective
    assert not any("token time" in line for line in lines if "/no-objective:" in line)


def _samples(scaler: RunningScaler, name: str, scaled_object: str) -> dict[str, float]:
    """The series of `name` for one ScaledObject, by their source label."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(scaler.metrics_url, timeout=5).read().decode()
    return {
        sample.labels["source"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and sample.labels.get("scaled_object") == scaled_object
    }


@every_deployment
def test_the_concurrency_a_replica_was_sized_for_is_exported_with_its_source(
    scaler: RunningScaler, publisher: ReportPublisher, redis_client: redis.Redis, clock: FakeClock
) -> None:
    keys = report_keys(NAMESPACE, "learning")
    curve = NOTHING_MEASURED
    for sequences, token_ms in [(8, 6.3), (32, 7.3), (64, 8.5), (128, 12.0)]:
        decoded = Decoded(sequences, 1000, token_ms)
        curve = curve.add(decoded, _write(redis_client, keys, clock(), decoded))
    for target in ("learning", "written"):
        publisher.publish(target, pod_report("p", inflight=4, capacity=256), at=clock())
        scaler.keda.poll(ref(target, tokenLatencyMs="10"))
    scaler.keda.poll(ref("unasked"))
    name = "llm_scaler_replica_concurrency"
    learned = replica_concurrency(curve, 10, start=8, cap=256).concurrency
    assert learned == pytest.approx(64 + 64 * 1.5 / 3.5)
    assert _samples(scaler, name, "learning") == {"learned": pytest.approx(learned)}
    assert _samples(scaler, name, "written") == {"targetConcurrency": 8}
    assert _samples(scaler, name, "unasked") == {"targetConcurrency": 8}
    # The curve forgotten: back to targetConcurrency, and the learned series goes.
    redis_client.delete(keys.tokens)
    scaler.keda.poll(ref("learning", tokenLatencyMs="10"))
    assert _samples(scaler, name, "learning") == {"targetConcurrency": 8}


def test_the_concurrency_series_leave_with_the_target_series() -> None:
    monotonic = FakeClock(0.0)
    registry = CollectorRegistry()
    metrics = ScalerMetrics(registry, series_idle_s=300, monotonic=monotonic)
    signals = Signals(0, 1, 0, 1, 1, 8, 0)
    for so, learned in (("a", True), ("b", False)):
        config = parse_target_config(NAMESPACE, so, {"targetConcurrency": "8"}).config
        decision = Decision(1, True, Reason.FOLLOWING, "", PolicyState(), 1, T0, 20, learned)
        metrics.record_decision(config, signals, decision)
    name = "llm_scaler_replica_concurrency"
    assert registry.get_sample_value(name, {**_labels("a"), "source": "learned"}) == 20
    assert registry.get_sample_value(name, {**_labels("b"), "source": "targetConcurrency"}) == 20
    monotonic.advance(301)
    list(registry.collect())  # a scrape evicts the targets idle for SERIES_IDLE_SECONDS
    assert [s for m in registry.collect() if m.name == name for s in m.samples] == []


def _labels(scaled_object: str) -> dict[str, str]:
    return {"namespace": NAMESPACE, "scaled_object": scaled_object}
