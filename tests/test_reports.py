"""The pod report contract: what a valid report is, and the error when one is not."""

from __future__ import annotations

import json
import math
import re

import pytest
import redis

from scaler.report_reader import SUM_REPORTS_LUA
from scaler.reports import PodReport, ReportError, report_keys
from scaler.service_record import SERVICE_MEMORY_REQUESTS, SERVICE_TTL_S, Served, ServiceRecord
from tests.harness import NAMESPACE, ReportPublisher, pod_report


def test_a_report_round_trips_through_json() -> None:
    report = pod_report("p", inflight=3, waiting=1, cold_start_s=42.5, kv_cache_utilization=0.7)
    assert PodReport.from_json(report.to_json()) == report


def test_optional_fields_are_left_out_when_unknown() -> None:
    assert "cold_start_s" not in json.loads(pod_report("p").to_json())


VALID = json.loads(pod_report("p", inflight=1).to_json())
BROKEN = [
    ("not-json", "{", "report is not JSON"),
    ("not-object", "[1, 2]", "must be a JSON object"),
    (
        "missing-inflight",
        {k: v for k, v in VALID.items() if k != "inflight"},
        "inflight is missing",
    ),
    ("negative-waiting", {**VALID, "waiting": -1}, "waiting = -1.0, must be a finite number >= 0"),
    ("text-capacity", {**VALID, "capacity": "8"}, "capacity = '8', must be a number"),
    ("bool-inflight", {**VALID, "inflight": True}, "inflight = True, must be a number"),
    ("number-ready", {**VALID, "ready": 1}, "ready = 1, must be a bool"),
    ("float-seq", {**VALID, "seq": 1.5}, "seq = 1.5, must be an integer"),
    ("negative-seq", {**VALID, "seq": -1}, "seq = -1"),
    ("null-ready", {**VALID, "ready": None}, "ready = None, must be a bool"),
    ("negative-cold-start", {**VALID, "cold_start_s": -2}, "cold_start_s = -2.0"),
    ("empty-pod", {**VALID, "pod": ""}, "pod = ''"),
    ("kv-above-one", {**VALID, "kv_cache_utilization": 1.5}, "kv_cache_utilization = 1.5"),
    ("huge-inflight", {**VALID, "inflight": 1e400}, "inflight = inf"),
]


@pytest.mark.parametrize(
    ("payload", "message"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN]
)
def test_broken_reports_are_refused_naming_the_field(payload: object, message: str) -> None:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    with pytest.raises(ReportError) as err:
        PodReport.from_json(text)
    assert message in str(err.value)


def test_an_integral_seq_written_as_a_float_is_the_same_integer() -> None:
    assert PodReport.from_json(json.dumps({**VALID, "seq": 7.0})).seq == 7


def _lua_verdicts(client: redis.Redis, pods: list[str], payloads: list[str]) -> list[bool]:
    """Which reports the scaler's read script counts, by the contract's Lua twin."""
    script = (
        SUM_REPORTS_LUA
        + """
local n = #ARGV / 2
local pods, payloads = {}, {}
for i = 1, n do pods[i] = ARGV[i]; payloads[i] = ARGV[n + i] end
local verdicts = {}
for i = 1, n do
  local sums = sum_reports({pods[i]}, {payloads[i]})
  verdicts[i] = sums[6]
end
return verdicts
"""
    )
    return [v == 1 for v in client.eval(script, 0, *pods, *payloads)]


def test_the_lua_reader_accepts_exactly_what_the_contract_accepts(
    redis_client: redis.Redis,
) -> None:
    cases = [(name, p if isinstance(p, str) else json.dumps(p)) for name, p, _ in BROKEN]
    cases += [
        ("valid", json.dumps(VALID)),
        ("valid-optional", pod_report("p", cold_start_s=3.0, kv_cache_utilization=1.0).to_json()),
        ("seq-as-float", json.dumps({**VALID, "seq": 7.0})),
        ("other-pod", json.dumps({**VALID, "pod": "q"})),
        ("extra-field", json.dumps({**VALID, "gpu": "h100"})),
        ("cold-start-null", json.dumps({**VALID, "cold_start_s": None})),
        ("cold-start-text", json.dumps({**VALID, "cold_start_s": "60"})),
        ("cold-start-zero", json.dumps({**VALID, "cold_start_s": 0})),
    ]
    payloads = [payload for _, payload in cases]
    lua = _lua_verdicts(redis_client, ["p"] * len(cases), payloads)
    for (name, payload), lua_ok in zip(cases, lua, strict=True):
        try:
            python_ok = PodReport.from_json(payload).pod == "p"
        except ReportError:
            python_ok = False
        assert lua_ok == python_ok, name
    assert sum(lua) == 5


def test_the_service_record_is_a_mean_over_the_recent_completions() -> None:
    record = ServiceRecord().add(Served(100, 500.0))
    assert record.mean_s == pytest.approx(5.0)
    assert record.add(Served(0, 0.0)) == record  # nothing completed: nothing learned
    # A new model version: after as many completions as the memory, the old mean weighs
    # exp(-1) of what it did, and the record has moved most of the way.
    moved = record.add(Served(SERVICE_MEMORY_REQUESTS, 10.0 * SERVICE_MEMORY_REQUESTS))
    old = 100 * math.exp(-1)
    assert moved.mean_s == pytest.approx((old * 5 + SERVICE_MEMORY_REQUESTS * 10) / (old + 1e4))
    assert ServiceRecord().mean_s == 0.0


@pytest.mark.parametrize(
    ("completed", "busy_s", "message"),
    [
        (-1.0, 0.0, "served completed = -1.0, must be a finite number >= 0"),
        (1.0, math.nan, "served busy_s = nan, must be a finite number >= 0"),
    ],
)
def test_a_bad_served_figure_is_refused_naming_it(
    completed: float, busy_s: float, message: str
) -> None:
    with pytest.raises(ReportError, match=re.escape(message)):
        Served(completed, busy_s)


def test_the_write_script_keeps_the_service_record_by_the_python_rule(
    redis_client: redis.Redis,
) -> None:
    publisher = ReportPublisher(redis_client)
    keys = report_keys(NAMESPACE, "svc")
    expected = ServiceRecord()
    for served in (Served(3, 12.0), None, Served(0, 0.0), Served(5000, 40000.0), Served(1, 2.5)):
        publisher.publish("svc", pod_report("p"), at=1000.0, served=served)
        if served is not None:
            expected = expected.add(served)
        stored = [float(v) for v in redis_client.hmget(keys.service, "completed", "busy_s")]
        assert stored == pytest.approx([expected.completed, expected.busy_s], rel=1e-12)
    assert SERVICE_TTL_S - 5 <= redis_client.ttl(keys.service) <= SERVICE_TTL_S


def test_a_write_that_serves_nothing_leaves_no_service_record(redis_client: redis.Redis) -> None:
    ReportPublisher(redis_client).publish("quiet", pod_report("p"), at=1000.0)
    assert not redis_client.exists(report_keys(NAMESPACE, "quiet").service)
