"""The pod report contract: how a sidecar tells the scaler the load of one pod (its keys,
its JSON fields and their rules, `PodReport`).

One definition, imported by the writer (`scaler.report_writer`: the sidecar, and the tests'
writer) and the reader (`scaler.store`, with the same rules in Lua in
`scaler.report_reader`), so the two cannot drift.

Per target (one inference Deployment) there are these Redis keys; the `{...}` hash
tag keeps them in one Redis Cluster slot so one script can touch them all:

    llm-scaler:{<namespace>/<target>}:reports   HASH  pod name -> report JSON
    llm-scaler:{<namespace>/<target>}:seen      ZSET  pod name -> time of its last report
    llm-scaler:{<namespace>/<target>}:service   HASH  completed, busy_s: the service time
                                                      learned from the pods' completions
    llm-scaler:{<namespace>/<target>}:tokens    HASH  at, age, <k>:w, <k>:b, <k>:t: the
                                                      token time learned from the pods'
                                                      decoding
    llm-scaler:{<namespace>/<target>}:admit     STRING  with tokenLatencyMs, the sequences
                                                      one pod may run at once (written by
                                                      the scaler, read by the queue workers)

The time in `:seen` is Redis's own clock (TIME inside the write script), and the
reader judges staleness against the same clock, so clock skew between pods and
scaler replicas cannot make a live pod look stale or a dead one look fresh.
Both report keys carry a TTL refreshed by every write, so a target nobody reports
for any more leaves nothing behind.

The service record (`scaler.service_record`) is what the pods' completions teach about the
mean service time, kept past the pods themselves; a write may carry it (`Served`).
The token curve (`scaler.token_curve`) is what the pods' decode steps teach about the time
per output token by the number of sequences decoded together, kept the same way; a write
may carry it (`Decoded`).

Report JSON fields (all required unless marked optional):

    pod            str    pod name (also the hash field)
    inflight       float  requests executing in the engine, >= 0
    waiting        float  requests queued inside the inference server, >= 0
    capacity       float  concurrent requests the pod can execute, >= 0 (0: unknown)
    ready          bool   server and models ready to serve
    started_at     float  unix seconds (pod's clock) when the server started
    seq            int    increases with every report of one sidecar run, >= 0
    cold_start_s   float  optional: measured start-to-ready time, once known
    kv_cache_utilization  float  optional: KV-cache blocks in use, in [0; 1]
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

KEY_PREFIX = "llm-scaler:"


class ReportError(ValueError):
    """A report that does not follow the contract; the message names the field."""


@dataclass(frozen=True)
class ReportKeys:
    reports: str
    seen: str
    service: str
    tokens: str
    admit: str


def target_key_base(namespace: str, target: str) -> str:
    """Prefix of every key of one target; the braces are its Redis Cluster hash tag."""
    return f"{KEY_PREFIX}{{{namespace}/{target}}}"


def report_keys(namespace: str, target: str) -> ReportKeys:
    """The keys a target's pods report under: reports, seen, the service record and the token
    curve; and the admission limit the scaler writes for them."""
    base = target_key_base(namespace, target)
    return ReportKeys(
        reports=f"{base}:reports",
        seen=f"{base}:seen",
        service=f"{base}:service",
        tokens=f"{base}:tokens",
        admit=f"{base}:admit",
    )


@dataclass(frozen=True)
class PodReport:
    pod: str
    inflight: float
    waiting: float
    capacity: float
    ready: bool
    started_at: float
    seq: int
    cold_start_s: float | None = None
    kv_cache_utilization: float | None = None

    def __post_init__(self) -> None:
        _check_report(self)

    def to_json(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if v is not None}
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def from_json(cls, payload: str | bytes) -> PodReport:
        try:
            raw = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ReportError(f"report is not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ReportError(f"report must be a JSON object, got {type(raw).__name__}")
        return cls(
            pod=_field(raw, "pod", str),
            inflight=_number(raw, "inflight"),
            waiting=_number(raw, "waiting"),
            capacity=_number(raw, "capacity"),
            ready=_field(raw, "ready", bool),
            started_at=_number(raw, "started_at"),
            seq=_integer(raw, "seq"),
            cold_start_s=_number(raw, "cold_start_s") if "cold_start_s" in raw else None,
            kv_cache_utilization=(
                _number(raw, "kv_cache_utilization") if "kv_cache_utilization" in raw else None
            ),
        )


def _field(raw: dict[str, Any], name: str, kind: type) -> Any:
    if name not in raw:
        raise ReportError(f"report field {name} is missing")
    value = raw[name]
    # bool is a subclass of int: an int field must not accept true/false.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ReportError(f"report field {name} = {value!r}, must be a {kind.__name__}")
    return value


def _integer(raw: dict[str, Any], name: str) -> int:
    """JSON has one number type: 3 and 3.0 are the same integer (the Lua reader agrees)."""
    value = _number(raw, name)
    if not value.is_integer():
        raise ReportError(f"report field {name} = {raw[name]!r}, must be an integer")
    return int(value)


def _number(raw: dict[str, Any], name: str) -> float:
    if name not in raw:
        raise ReportError(f"report field {name} is missing")
    value = raw[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReportError(f"report field {name} = {value!r}, must be a number")
    return float(value)


def _check_report(report: PodReport) -> None:
    if not report.pod:
        raise ReportError("report field pod = '', must be a non-empty pod name")
    for name in ("inflight", "waiting", "capacity", "started_at"):
        value = getattr(report, name)
        if not math.isfinite(value) or value < 0:
            raise ReportError(f"report field {name} = {value!r}, must be a finite number >= 0")
    if report.seq < 0:
        raise ReportError(f"report field seq = {report.seq!r}, must be an integer >= 0")
    if report.cold_start_s is not None and not (
        math.isfinite(report.cold_start_s) and report.cold_start_s >= 0
    ):
        raise ReportError(
            f"report field cold_start_s = {report.cold_start_s!r}, must be a finite number >= 0"
        )
    kv = report.kv_cache_utilization
    if kv is not None and not (0.0 <= kv <= 1.0):
        raise ReportError(f"report field kv_cache_utilization = {kv!r}, must be in [0; 1]")
