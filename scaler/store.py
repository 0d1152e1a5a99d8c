"""Reading a target's load from Redis: every pod report and the queue depth in one round trip.

One Lua script per decision drops the reports that went stale, returns the fresh
ones and measures the queue, atomically: the read costs one round trip whatever
the number of pods, and never sees a report half written (see `scaler.report_writer`).
The same script returns the service record and, when the ScaledObject sets
tokenLatencyMs, the token curve (`scaler.token_curve`): learned values that do not
parse are logged once and read as what parses, never as an error of the read.
On a Redis Cluster a queue outside the target's hash slot is measured by a
second script on its own node, sent at the same time (docs/redis.md).
Errors are typed so the gRPC layer can say what is wrong: Redis not answering is
`StoreUnavailable`, a queue that cannot be measured is `QueueError`. Neither is
ever turned into "zero demand".
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from gateway.contract import STREAM_LOAD_LUA
from scaler.bounded import put_bounded
from scaler.policy_state import PolicyState
from scaler.redis_connect import REDIS_ERRORS, RedisLink
from scaler.report_reader import SUM_REPORTS_LUA
from scaler.reports import PodReport, ReportError
from scaler.service_record import ServiceRecord
from scaler.signals import Signals
from scaler.state_codec import MERGE_STATE_LUA, decode_state, merge_args, policy_key, state_ttl_s
from scaler.target_config import TargetConfig
from scaler.token_curve import NOTHING_MEASURED, TokenCurve

log = logging.getLogger(__name__)


class StoreError(Exception):
    """Base of the errors a read can end in."""


class StoreUnavailable(StoreError):
    """Redis did not answer in time, refused, or failed: the data is missing, not zero."""


class QueueError(StoreError):
    """The queue key exists but cannot be measured as configured (wrong type, no such group)."""


class NoValidReports(StoreError):
    """Pods are reporting but every report breaks the contract: the data is missing, not zero."""


@dataclass(frozen=True)
class Snapshot:
    now: float  # the time the read was judged at (Redis's clock unless the caller gave one)
    signals: Signals
    state: PolicyState  # what earlier decisions (of any replica) left for this ScaledObject


# Defines queue_depth(key, type, consumer group) -> {'ok', depth} or {'error', message}, and
# queues_depth(first KEYS index, type, group): the sum over KEYS[first..], or the first error.
QUEUE_DEPTH_LUA = (
    STREAM_LOAD_LUA
    + """
local function queue_depth(key, qtype, group)
  if qtype == '' then return {'ok', '0'} end
  local r
  if qtype == 'gateway' then
    -- Requests not yet taken by a worker; those a worker holds are in its pod's exact
    -- in-flight, so they are not counted here too.
    local waiting, err = stream_load(key)
    r = waiting or err
  elseif qtype == 'list' then
    r = redis.pcall('LLEN', key)
  elseif qtype == 'zset' then
    r = redis.pcall('ZCARD', key)
  else
    r = redis.pcall('XINFO', 'GROUPS', key)
    if type(r) == 'table' and r.err and string.find(r.err, 'no such key') then
      return {'ok', '0'}  -- no producer has written yet
    end
    if not r.err then
      for _, g in ipairs(r) do
        local f = {}
        for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
        if f['name'] == group then
          local lag = f['lag']
          if not lag then  -- Redis < 7, or lag unknown after XDEL: count what is undelivered
            lag = #redis.call('XRANGE', key, '(' .. f['last-delivered-id'], '+')
          end
          return {'ok', tostring(lag + f['pending'])}
        end
      end
      return {'error', 'consumer group ' .. group .. ' does not exist on stream ' .. key}
    end
  end
  if type(r) == 'table' and r.err then
    local held = redis.call('TYPE', key)['ok']
    return {'error', r.err .. ' (key ' .. key .. ' holds a ' .. held .. ')'}
  end
  return {'ok', tostring(r)}
end

local function queues_depth(first, qtype, group)
  local total = 0
  for i = first, #KEYS do
    local d = queue_depth(KEYS[i], qtype, group)
    if d[1] ~= 'ok' then return d end
    total = total + tonumber(d[2])
  end
  return {'ok', tostring(total)}
end
"""
)

# KEYS: reports, seen, policy state, service record, token curve, admit key, then the queues
# in the target's hash slot (none: no queue). ARGV: stale_after_s, now ('' = Redis TIME), queue
# type, consumer group, '1' to read the token curve ('': no tokenLatencyMs, an empty curve
# returned, and the admit key deleted: a limit the objective set must not outlive it; a DEL
# of no key changes nothing and is not replicated).
# Returns {now, stale count, sum_reports(...), {status, depth}, state hash as a flat list,
# {completed, busy_s} of the service record (false: none), {'ok', token curve hash as a flat
# list} or {'error', why it cannot be read}}.
READ_TARGET_LUA = (
    SUM_REPORTS_LUA
    + QUEUE_DEPTH_LUA
    + """
local now
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[2])
end

local cutoff = '(' .. string.format('%.6f', now - tonumber(ARGV[1]))
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
for i = 1, #stale, 1000 do
  local chunk = {unpack(stale, i, math.min(i + 999, #stale))}
  redis.call('HDEL', KEYS[1], unpack(chunk))
  redis.call('ZREM', KEYS[2], unpack(chunk))
end

local pods = redis.call('ZRANGE', KEYS[2], 0, -1)
local payloads = {}
for i = 1, #pods, 1000 do
  local got = redis.call('HMGET', KEYS[1], unpack(pods, i, math.min(i + 999, #pods)))
  for _, p in ipairs(got) do payloads[#payloads + 1] = p end
end

local state = redis.call('HGETALL', KEYS[3])
local service = redis.call('HMGET', KEYS[4], 'completed', 'busy_s')
local tokens = {'ok', {}}
if ARGV[5] == '1' then
  local curve = redis.pcall('HGETALL', KEYS[5])
  if curve.err then tokens = {'error', curve.err} else tokens = {'ok', curve} end
else
  redis.call('DEL', KEYS[6])
end
return {string.format('%.6f', now), #stale, sum_reports(pods, payloads),
        queues_depth(7, ARGV[3], ARGV[4]), state, service, tokens}
"""
)

# On a Redis Cluster, a queue in another hash slot than its target's keys (the usual
# case when producers name it; never for the gateway's streams, which share the target's
# tag) is measured apart, on its own node, in parallel with the target's read.
# KEYS: queue. ARGV: queue type, consumer group.
READ_QUEUE_LUA = QUEUE_DEPTH_LUA + "return queue_depth(KEYS[1], ARGV[1], ARGV[2])\n"


# The admit key outlives a scaler that stops writing it by a day: the workers then keep the
# last limit rather than jumping to their slots while the scaler is away.
ADMIT_TTL_S = 24 * 3600


def admit_text(concurrency: float) -> str:
    """The admit key's value: a plain decimal number (never an exponent)."""
    return f"{concurrency:.3f}"


class TargetStore:
    """Reads targets' snapshots from Redis (one, Sentinel's master or a Cluster), each read
    bounded by a timeout."""

    def __init__(self, link: RedisLink, timeout_s: float) -> None:
        self._link = link
        self._timeout_s = timeout_s
        self._read = link.client.register_script(READ_TARGET_LUA)
        self._read_queue = link.client.register_script(READ_QUEUE_LUA)
        self._merge_state = link.client.register_script(MERGE_STATE_LUA)

    async def read(
        self, config: TargetConfig, now: float | None = None, timeout_s: float | None = None
    ) -> Snapshot:
        """One consistent snapshot of `config`'s target.

        `now` None judges staleness on Redis's clock (production: every scaler
        replica then agrees); tests pass their own clock's time."""
        keys = config.report_keys
        queue_type = config.queue_type.value
        group = config.consumer_group or ""
        queues = config.queue_keys
        together = [q for q in queues if self._link.same_slot(keys.reports, q)]
        apart = [q for q in queues if q not in together]
        learned = [keys.service, keys.tokens]
        read = self._read(
            keys=[keys.reports, keys.seen, policy_key(config), *learned, keys.admit, *together],
            args=[
                f"{config.stale_after_s:.6f}",
                "" if now is None else f"{now:.6f}",
                queue_type,
                group,
                "" if config.token_latency_ms is None else "1",
            ],
        )
        if not apart:
            return _snapshot(config, await self._bounded(read, timeout_s))
        measured = [self._read_queue(keys=[q], args=[queue_type, group]) for q in apart]
        raw, *depths = await self._bounded(asyncio.gather(read, *measured), timeout_s)
        raw[3] = _summed([raw[3], *depths])
        return _snapshot(config, raw)

    async def save_state(
        self, config: TargetConfig, state: PolicyState, now: float, timeout_s: float | None = None
    ) -> None:
        """Merge `state` into the stored one (per-field maximum, see `state_codec`)."""
        merge = self._merge_state(
            keys=[policy_key(config)], args=merge_args(state, now, state_ttl_s(config))
        )
        await self._bounded(merge, timeout_s)

    async def write_admit(
        self, config: TargetConfig, concurrency: float, timeout_s: float | None = None
    ) -> None:
        """Set the target's admit key: the sequences one pod may run at once (TTL a day)."""
        key = config.report_keys.admit
        write = self._link.client.set(key, admit_text(concurrency), ex=ADMIT_TTL_S)
        await self._bounded(write, timeout_s)

    async def _bounded(self, call: Awaitable[Any], timeout_s: float | None) -> Any:
        limit = self._timeout_s if timeout_s is None else min(timeout_s, self._timeout_s)
        try:
            async with asyncio.timeout(limit):
                return await call
        except TimeoutError as exc:
            raise StoreUnavailable(f"redis did not answer within {limit:.3g} s") from exc
        except ResponseError as exc:
            raise StoreUnavailable(f"redis refused the call: {exc}") from exc
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"redis unreachable: {exc}") from exc


def _summed(depths: list[list[str]]) -> list[str]:
    """The queues' depths measured apart, added up as the read script does: the first error
    wins, since a queue that cannot be measured must never count as empty."""
    for status, depth in depths:
        if status != "ok":
            return [status, depth]
    return ["ok", str(sum(float(depth) for _, depth in depths))]


_WARNED_AT_MOST = 10_000  # bounded: a flood of distinct errors cannot grow memory
_warned: OrderedDict[str, None] = OrderedDict()


def _warn_once(message: str, what: str = "ignoring pod report") -> None:
    """Every poll re-reads a broken report until it goes stale: say so once, not per poll."""
    if message not in _warned:
        put_bounded(_warned, message, None, _WARNED_AT_MOST)
        log.warning("%s %s", what, message)


def _snapshot(config: TargetConfig, raw: list[Any]) -> Snapshot:
    now_text, stale_count, sums, (status, depth), state_fields, (completed, busy), tokens = raw
    if status != "ok":
        raise QueueError(f"queueKey = {config.queue_key or ','.join(config.queue_keys)!r}: {depth}")
    inflight, waiting, cap_ready, cap_starting, ready, valid, invalid, bad_pods, bad, cold = sums
    for pod, payload in zip(bad_pods, bad, strict=True):
        _warn_once(f"{config.report_keys.reports} {pod}: {_why_invalid(pod, payload)}")
    if invalid and not valid:
        raise NoValidReports(
            f"all {invalid} pod reports under {config.report_keys.reports} break the contract"
        )
    signals = Signals(
        queue_depth=float(depth),
        inflight=float(inflight),
        waiting=float(waiting),
        pods_reported=int(valid),
        pods_ready=int(ready),
        capacity_ready=float(cap_ready),
        capacity_starting=float(cap_starting),
        stale_dropped=int(stale_count),
        invalid_reports=int(invalid),
        cold_start_s=float(cold),
        service_s=_learned(completed, busy),
        token_curve=_token_curve(config.report_keys.tokens, tokens),
    )
    state = decode_state(dict(zip(state_fields[::2], state_fields[1::2], strict=True)))
    return Snapshot(now=float(now_text), signals=signals, state=state)


def _learned(completed: Any, busy: Any) -> float:
    """The service record's mean; 0 (none learned) when it is missing or does not parse,
    so the decision plans with serviceSeconds."""
    try:
        return ServiceRecord(float(completed), float(busy)).mean_s
    except (TypeError, ValueError):
        return 0.0


def _token_curve(key: str, read: list[Any]) -> TokenCurve:
    """The token curve the `:tokens` hash holds. A hash that does not parse is logged once
    and read as what parses: the bins whose three fields are numbers, `at` if it is one;
    an `age` that is not a number (no bin can be scaled to its true value) or a key of
    another type, as nothing measured (the decision then plans with targetConcurrency, as
    before any pod measured; the next write starts the curve over)."""
    status, payload = read
    if status != "ok":
        _warn_once(f"{key}: {payload}; planning as if nothing were measured", "token curve")
        return NOTHING_MEASURED
    fields = dict(zip(payload[::2], payload[1::2], strict=True))
    try:
        return TokenCurve.from_fields(fields)
    except ReportError as exc:
        if "age" in fields and not _is_count(fields["age"]):
            _warn_once(f"{key}: {exc}; planning as if nothing were measured", "token curve")
            return NOTHING_MEASURED
        numbers = {name: value for name, value in fields.items() if _is_count(value)}
        _warn_once(f"{key}: {exc}; using the fields that are numbers", "token curve")
        return TokenCurve.from_fields(numbers)


def _is_count(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value >= 0


def _why_invalid(pod: str, payload: str) -> str:
    """The contract's own words for what the read script refused (a rare path)."""
    if not payload:
        return "report is missing from the reports hash"
    try:
        report = PodReport.from_json(payload)
    except ReportError as exc:
        return str(exc)
    return f"report field pod = {report.pod!r}, must be {pod!r}"
