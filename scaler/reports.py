"""The pod report contract: how a sidecar tells the scaler the load of one pod.

One definition, imported by the writer (the sidecar, and the tests' writer) and
the reader (`scaler.store`), so the two cannot drift.

Per target (one inference Deployment) there are three Redis keys; the `{...}` hash
tag keeps them in one Redis Cluster slot so one script can touch them all:

    llm-scaler:{<namespace>/<target>}:reports   HASH  pod name -> report JSON
    llm-scaler:{<namespace>/<target>}:seen      ZSET  pod name -> time of its last report
    llm-scaler:{<namespace>/<target>}:service   HASH  completed, busy_s: the service time
                                                      learned from the pods' completions

The time in `:seen` is Redis's own clock (TIME inside the write script), and the
reader judges staleness against the same clock, so clock skew between pods and
scaler replicas cannot make a live pod look stale or a dead one look fresh.
Both report keys carry a TTL refreshed by every write, so a target nobody reports
for any more leaves nothing behind.

The service record is what the pods' completions teach about the mean service
time (the time a request holds its slot), kept past the pods themselves: after a
quiet night at zero replicas the first wake plans with what yesterday measured.
A write may carry `Served` (requests completed since the pod's previous write and
the seconds they executed); the write script adds it to the record with an
exponential decay by request count, so the record is the mean over about the last
SERVICE_MEMORY_REQUESTS completions, whatever their pace:
    f = exp(-n / SERVICE_MEMORY_REQUESTS); completed = completed f + n; busy_s = busy_s f + b
It expires SERVICE_TTL_S after its last update.

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

from scaler.redis_connect import AnyRedis

KEY_PREFIX = "llm-scaler:"
DEFAULT_REPORT_TTL_S = 24 * 3600
# About 10,000 completions: a mean within ~1 % of the true one (service times vary by about
# their own size), and a new model version is learned within an hour of traffic or so.
SERVICE_MEMORY_REQUESTS = 10_000
SERVICE_TTL_S = 7 * 24 * 3600  # a week without a completion forgets the service time


class ReportError(ValueError):
    """A report that does not follow the contract; the message names the field."""


@dataclass(frozen=True)
class ReportKeys:
    reports: str
    seen: str
    service: str


def target_key_base(namespace: str, target: str) -> str:
    """Prefix of every key of one target; the braces are its Redis Cluster hash tag."""
    return f"{KEY_PREFIX}{{{namespace}/{target}}}"


def report_keys(namespace: str, target: str) -> ReportKeys:
    """The keys a target's pods report under: reports, seen and the service record."""
    base = target_key_base(namespace, target)
    return ReportKeys(reports=f"{base}:reports", seen=f"{base}:seen", service=f"{base}:service")


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


# The contract's rules again, in Lua, for the reader: the scaler sums a target's
# reports inside its read script, so a poll moves a few numbers instead of every
# report (64 pods: ~10 KB of JSON and 64 decodes in Python per call). It must
# accept exactly what `PodReport.from_json` accepts, plus the hash field naming
# the same pod; tests/test_reports.py holds the two to the same table.
# Defines sum_reports(pods, payloads) -> {inflight, waiting, capacity_ready,
# capacity_starting, pods_ready, pods_valid, invalid count, invalid pods,
# invalid payloads, longest cold_start_s reported (0: none)}.
SUM_REPORTS_LUA = """
local function is_count(x)
  return type(x) == 'number' and x == x and x >= 0 and x < math.huge
end
local function valid_report(r, pod)
  if type(r) ~= 'table' or r.pod ~= pod or type(r.ready) ~= 'boolean' then return false end
  if not (is_count(r.inflight) and is_count(r.waiting) and is_count(r.capacity)) then
    return false
  end
  if not is_count(r.started_at) then return false end
  if not (is_count(r.seq) and math.floor(r.seq) == r.seq) then return false end
  if r.cold_start_s ~= nil and not is_count(r.cold_start_s) then return false end
  local kv = r.kv_cache_utilization
  if kv ~= nil and not (type(kv) == 'number' and kv >= 0 and kv <= 1) then return false end
  return true
end
local function sum_reports(pods, payloads)
  local inflight, waiting, cap_ready, cap_starting, ready, valid = 0, 0, 0, 0, 0, 0
  local cold_start = 0
  local bad_pods, bad_payloads = {}, {}
  for i, pod in ipairs(pods) do
    local payload = payloads[i]
    local ok, r = false, nil
    if payload then ok, r = pcall(cjson.decode, payload) end
    if ok and valid_report(r, pod) then
      valid = valid + 1
      inflight = inflight + r.inflight
      waiting = waiting + r.waiting
      if r.cold_start_s ~= nil and r.cold_start_s > cold_start then cold_start = r.cold_start_s end
      if r.ready then
        ready = ready + 1
        cap_ready = cap_ready + r.capacity
      else
        cap_starting = cap_starting + r.capacity
      end
    elseif #bad_pods < 5 then  -- a few, for the log; the count says how many
      bad_pods[#bad_pods + 1] = pod
      bad_payloads[#bad_payloads + 1] = payload or ''
    end
  end
  local function f(x) return string.format('%.17g', x) end
  return {f(inflight), f(waiting), f(cap_ready), f(cap_starting), ready, valid,
          #pods - valid, bad_pods, bad_payloads, f(cold_start)}
end
"""


@dataclass(frozen=True)
class Served:
    """What a pod completed since its previous write: requests, and the seconds they executed
    (Triton's request duration less its queue duration)."""

    completed: float
    busy_s: float

    def __post_init__(self) -> None:
        for name in ("completed", "busy_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ReportError(f"served {name} = {value!r}, must be a finite number >= 0")


@dataclass(frozen=True)
class ServiceRecord:
    """The service record's two fields; `add` is the write script's rule in Python (the
    simulator keeps one per run; tests hold the two to the same cases)."""

    completed: float = 0.0
    busy_s: float = 0.0

    def add(self, served: Served) -> ServiceRecord:
        if served.completed <= 0:
            return self
        f = math.exp(-served.completed / SERVICE_MEMORY_REQUESTS)
        return ServiceRecord(self.completed * f + served.completed, self.busy_s * f + served.busy_s)

    @property
    def mean_s(self) -> float:
        """The mean service time the record holds; 0 when it holds none."""
        return self.busy_s / self.completed if self.completed > 0 and self.busy_s > 0 else 0.0


NOTHING_LEARNED = ServiceRecord()  # a target no pod has completed a request for


# KEYS: reports, seen[, service]. ARGV: pod, payload, ttl_s, reported_at ('' = Redis time)
# [, completed and busy seconds served since the previous write, the service record's
# memory in requests and its ttl]: a write without the bracketed part serves nothing.
# Writing every key in one script means a reader never sees a half-written report.
WRITE_REPORT_LUA = """
local t = ARGV[4]
if t == '' then
  local now = redis.call('TIME')
  t = string.format('%.6f', tonumber(now[1]) + tonumber(now[2]) / 1000000)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], t, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
local n, b = tonumber(ARGV[5] or '0'), tonumber(ARGV[6] or '0')
if n > 0 then
  local f = math.exp(-n / tonumber(ARGV[7]))
  local old = redis.call('HMGET', KEYS[3], 'completed', 'busy_s')
  local completed = (tonumber(old[1]) or 0) * f + n
  local busy = (tonumber(old[2]) or 0) * f + b
  redis.call('HSET', KEYS[3], 'completed', string.format('%.17g', completed),
             'busy_s', string.format('%.17g', busy))
  redis.call('EXPIRE', KEYS[3], ARGV[8])
end
return t
"""

# KEYS: reports, seen. ARGV: pod.
DELETE_REPORT_LUA = """
redis.call('HDEL', KEYS[1], ARGV[1])
return redis.call('ZREM', KEYS[2], ARGV[1])
"""


def write_call(
    keys: ReportKeys, report: PodReport, ttl_s: int, stamp: str, served: Served | None = None
) -> tuple[list[str], list[str | int]]:
    """WRITE_REPORT_LUA's KEYS and ARGV for `report` (and `served`, if any): the script's
    argument layout in one place, for every writer."""
    args: list[str | int] = [report.pod, report.to_json(), ttl_s, stamp]
    if served is not None:
        args += [repr(served.completed), repr(served.busy_s)]
        args += [SERVICE_MEMORY_REQUESTS, SERVICE_TTL_S]
    return [keys.reports, keys.seen, keys.service], args


class ReportWriter:
    """Writes and removes pod reports for one target, following the contract above."""

    def __init__(
        self, redis: AnyRedis, keys: ReportKeys, ttl_s: int = DEFAULT_REPORT_TTL_S
    ) -> None:
        self._keys = keys
        self._ttl_s = ttl_s
        self._write = redis.register_script(WRITE_REPORT_LUA)
        self._delete = redis.register_script(DELETE_REPORT_LUA)

    async def write(
        self, report: PodReport, reported_at: float | None = None, served: Served | None = None
    ) -> float:
        """Store `report`, and add `served` (what the pod completed since its previous write)
        to the target's service record; `reported_at` None stamps it with Redis's clock
        (production).

        Returns the time it was stamped with."""
        stamp = "" if reported_at is None else f"{reported_at:.6f}"
        keys, args = write_call(self._keys, report, self._ttl_s, stamp, served)
        result = await self._write(keys=keys, args=args)
        return float(result)

    async def delete(self, pod: str) -> None:
        await self._delete(keys=[self._keys.reports, self._keys.seen], args=[pod])
