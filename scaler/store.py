"""Reading a target's load from Redis: every pod report and the queue depth in one round trip.

One Lua script per decision drops the reports that went stale, returns the fresh
ones and measures the queue, atomically: the read costs one round trip whatever
the number of pods, and never sees a report half written (see `scaler.reports`).
Errors are typed so the gRPC layer can say what is wrong: Redis not answering is
`StoreUnavailable`, a queue that cannot be measured is `QueueError`. Neither is
ever turned into "zero demand".
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from scaler.reports import PodReport, ReportError
from scaler.signals import Signals, aggregate
from scaler.target_config import TargetConfig

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


# KEYS: reports, seen, queue. ARGV: stale_after_s, now ('' = Redis TIME), queue type
# ('' = no queue), consumer group. Returns {now, stale count, pods, payloads, {status, depth}}.
READ_TARGET_LUA = """
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

local function queue_depth()
  local qtype, key = ARGV[3], KEYS[3]
  if qtype == '' then return {'ok', '0'} end
  local r
  if qtype == 'list' then
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
        if f['name'] == ARGV[4] then
          local lag = f['lag']
          if not lag then  -- Redis < 7, or lag unknown after XDEL: count what is undelivered
            lag = #redis.call('XRANGE', key, '(' .. f['last-delivered-id'], '+')
          end
          return {'ok', tostring(lag + f['pending'])}
        end
      end
      return {'error', 'consumer group ' .. ARGV[4] .. ' does not exist on stream ' .. key}
    end
  end
  if type(r) == 'table' and r.err then
    local held = redis.call('TYPE', key)['ok']
    return {'error', r.err .. ' (key ' .. key .. ' holds a ' .. held .. ')'}
  end
  return {'ok', tostring(r)}
end

return {string.format('%.6f', now), #stale, pods, payloads, queue_depth()}
"""


class TargetStore:
    """Reads targets' snapshots from one Redis, each read bounded by a timeout."""

    def __init__(self, redis: Redis, timeout_s: float) -> None:
        self._redis = redis
        self._timeout_s = timeout_s
        self._read = redis.register_script(READ_TARGET_LUA)

    async def read(
        self, config: TargetConfig, now: float | None = None, timeout_s: float | None = None
    ) -> Snapshot:
        """One consistent snapshot of `config`'s target.

        `now` None judges staleness on Redis's clock (production: every scaler
        replica then agrees); tests pass their own clock's time."""
        keys = config.report_keys
        queue_type = config.queue_type.value if config.queue_key else ""
        limit = self._timeout_s if timeout_s is None else min(timeout_s, self._timeout_s)
        try:
            async with asyncio.timeout(limit):
                raw = await self._read(
                    keys=[keys.reports, keys.seen, config.queue_key or keys.reports],
                    args=[
                        f"{config.stale_after_s:.6f}",
                        "" if now is None else f"{now:.6f}",
                        queue_type,
                        config.consumer_group or "",
                    ],
                )
        except TimeoutError as exc:
            raise StoreUnavailable(f"redis did not answer within {limit:.3g} s") from exc
        except ResponseError as exc:
            raise StoreUnavailable(f"redis refused the read: {exc}") from exc
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis unreachable: {exc}") from exc
        return _snapshot(config, raw)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """Every poll re-reads a broken report until it goes stale: say so once, not per poll."""
    if message not in _warned:
        if len(_warned) > 10_000:  # bounded: a flood of distinct errors cannot grow memory
            _warned.clear()
        _warned.add(message)
        log.warning("ignoring pod report %s", message)


def _snapshot(config: TargetConfig, raw: list[Any]) -> Snapshot:
    now_text, stale_count, pods, payloads, (status, depth) = raw
    if status != "ok":
        raise QueueError(f"queueKey = {config.queue_key!r}: {depth}")
    reports: list[PodReport] = []
    invalid = 0
    for pod, payload in zip(pods, payloads, strict=True):
        try:
            if payload is None:
                raise ReportError("report is missing from the reports hash")
            report = PodReport.from_json(payload)
            if report.pod != pod:
                raise ReportError(f"report field pod = {report.pod!r}, must be {pod!r}")
        except ReportError as exc:
            invalid += 1
            _warn_once(f"{config.report_keys.reports} {pod}: {exc}")
            continue
        reports.append(report)
    if invalid and not reports:
        raise NoValidReports(
            f"all {invalid} pod reports under {config.report_keys.reports} break the contract"
        )
    signals = aggregate(reports, float(depth), stale_dropped=int(stale_count), invalid=invalid)
    return Snapshot(now=float(now_text), signals=signals)
