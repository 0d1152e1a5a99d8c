"""The pod report contract: what a valid report is, and the error when one is not."""

from __future__ import annotations

import json

import pytest
import redis

from scaler.reports import SUM_REPORTS_LUA, PodReport, ReportError
from tests.harness import pod_report


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
