"""Writing pod reports (`ReportWriter`): the write and delete scripts, which store a report
and add what the pod served to the service record in one step, and their argument layout
(`write_call`) for every writer."""

from __future__ import annotations

from scaler.redis_connect import AnyRedis
from scaler.reports import PodReport, ReportKeys
from scaler.service_record import SERVICE_MEMORY_REQUESTS, SERVICE_TTL_S, Served

DEFAULT_REPORT_TTL_S = 24 * 3600


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
