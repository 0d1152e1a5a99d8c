"""The pod report contract: what a valid report is, and the error when one is not."""

from __future__ import annotations

import json

import pytest

from scaler.reports import PodReport, ReportError
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
    ("float-seq", {**VALID, "seq": 1.5}, "seq = 1.5, must be a int"),
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
