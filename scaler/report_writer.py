"""Writing pod reports (`ReportWriter`): the write and delete scripts, which store a report
and add what the pod served to the service record and what it decoded to the token curve in
one step, and their argument layout (`write_call`) for every writer."""

from __future__ import annotations

from scaler.redis_connect import AnyRedis
from scaler.reports import PodReport, ReportKeys
from scaler.service_record import SERVICE_MEMORY_REQUESTS, SERVICE_TTL_S, Served
from scaler.token_curve import (
    BINS_PER_DOUBLING,
    CURVE_TTL_S,
    MAX_BIN,
    MAX_GAP_S,
    TOKEN_MEMORY_S,
    Decoded,
)

DEFAULT_REPORT_TTL_S = 24 * 3600
# A bin decayed below this many steps is deleted: it weighs nothing against the
# KNOWN_STEPS a point needs, and the hash keeps only the bins traffic still visits.
CURVE_FLOOR_STEPS = 1e-6

# KEYS: reports, seen, service, tokens. ARGV: pod, payload, ttl_s, reported_at ('' = Redis
# time) [, completed and busy seconds served since the previous write ('0' '0': none), the
# service record's memory in requests and its ttl [, sequences, steps and seconds decoded
# since the previous write, then the token curve's TOKEN_MEMORY_S, MAX_GAP_S,
# BINS_PER_DOUBLING, MAX_BIN, CURVE_TTL_S and CURVE_FLOOR_STEPS]]: a write without a
# bracketed part serves (decodes) nothing.
# Writing every key in one script means a reader never sees a half-written report.
# The token curve's rule is TokenCurve.add's (scaler.token_curve), step for step, so the two
# agree to the last bit; a `:tokens` key of another type is left alone (the reader says so),
# so it can never stop the reports; a bin with a field that is not a number is dropped (what
# the reader ignores, the writer forgets).
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
local sequences, steps, seconds = tonumber(ARGV[9] or '0'), tonumber(ARGV[10] or '0'),
  tonumber(ARGV[11] or '0')
local counts = steps > 0 and seconds > 0 and sequences >= 0.5  -- Decoded.counts
local held = counts and redis.call('TYPE', KEYS[4])['ok']
if held == 'hash' or held == 'none' then
  local memory, max_gap = tonumber(ARGV[12]), tonumber(ARGV[13])
  local per_doubling, max_bin = tonumber(ARGV[14]), tonumber(ARGV[15])
  local floor_steps = tonumber(ARGV[17])
  local function number(text)  -- what TokenCurve.from_fields refuses counts as nothing
    local x = tonumber(text)
    if x and x == x and x >= 0 and x < math.huge then return x end
    return nil
  end
  local now = tonumber(t)
  local last = nil
  local bins = {}  -- bin name -> its parts as read; false: a part that is not a number
  local fields = redis.call('HGETALL', KEYS[4])
  for i = 1, #fields, 2 do
    local name = fields[i]
    if name == 'at' then
      last = number(fields[i + 1])
    else
      local k, part = string.match(name, '^(%d+):([wbt])$')
      if k then
        bins[k] = bins[k] or {}
        bins[k][part] = number(fields[i + 1]) or false
      end
    end
  end
  local function whole(bin)  -- a bin missing a part is nothing, as TokenCurve.from_fields reads it
    if bin and bin.w and bin.b and bin.t then return bin end
    return nil
  end
  local gap = 0
  if last then gap = math.min(math.max(now - last, 0), max_gap) end
  local f = math.exp(-gap / memory)
  local k = math.floor(per_doubling * math.log(math.max(sequences, 1)) / math.log(2) + 0.5)
  k = tostring(math.min(math.max(k, 0), max_bin))
  local function g(x) return string.format('%.17g', x) end
  local out, gone = {'at', g(now)}, {}
  for name, read in pairs(bins) do
    local bin = whole(read)
    if name ~= k and (not bin or bin.w * f < floor_steps) then
      gone[#gone + 1] = name .. ':w'
      gone[#gone + 1] = name .. ':b'
      gone[#gone + 1] = name .. ':t'
    elseif name ~= k then
      local parts = {name .. ':w', g(bin.w * f), name .. ':b', g(bin.b * f),
                     name .. ':t', g(bin.t * f)}
      for _, x in ipairs(parts) do out[#out + 1] = x end
    end
  end
  local old = whole(bins[k]) or {w = 0, b = 0, t = 0}
  local token_ms = 1000 * seconds / steps
  local parts = {k .. ':w', g(old.w * f + steps),
                 k .. ':b', g(old.b * f + sequences * steps),
                 k .. ':t', g(old.t * f + token_ms * steps)}
  for _, x in ipairs(parts) do out[#out + 1] = x end
  if #gone > 0 then redis.call('HDEL', KEYS[4], unpack(gone)) end
  redis.call('HSET', KEYS[4], unpack(out))
  redis.call('EXPIRE', KEYS[4], ARGV[16])
end
return t
"""

# KEYS: reports, seen. ARGV: pod.
DELETE_REPORT_LUA = """
redis.call('HDEL', KEYS[1], ARGV[1])
return redis.call('ZREM', KEYS[2], ARGV[1])
"""


def write_call(
    keys: ReportKeys,
    report: PodReport,
    ttl_s: int,
    stamp: str,
    served: Served | None = None,
    decoded: Decoded | None = None,
) -> tuple[list[str], list[str | int]]:
    """WRITE_REPORT_LUA's KEYS and ARGV for `report` (and `served`, `decoded`, if any): the
    script's argument layout in one place, for every writer."""
    args: list[str | int] = [report.pod, report.to_json(), ttl_s, stamp]
    if served is not None:
        args += [repr(served.completed), repr(served.busy_s)]
    elif decoded is not None:
        args += ["0", "0"]  # serves nothing, but the token curve's arguments follow
    if served is not None or decoded is not None:
        args += [SERVICE_MEMORY_REQUESTS, SERVICE_TTL_S]
    if decoded is not None:
        args += [repr(decoded.sequences), repr(decoded.steps), repr(decoded.seconds)]
        args += [repr(TOKEN_MEMORY_S), repr(MAX_GAP_S), BINS_PER_DOUBLING, MAX_BIN]
        args += [CURVE_TTL_S, repr(CURVE_FLOOR_STEPS)]
    return [keys.reports, keys.seen, keys.service, keys.tokens], args


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
        self,
        report: PodReport,
        reported_at: float | None = None,
        served: Served | None = None,
        decoded: Decoded | None = None,
    ) -> float:
        """Store `report`, add `served` (what the pod completed since its previous write) to
        the target's service record and `decoded` (what it decoded since then) to its token
        curve; `reported_at` None stamps it with Redis's clock (production).

        Returns the time it was stamped with."""
        stamp = "" if reported_at is None else f"{reported_at:.6f}"
        keys, args = write_call(self._keys, report, self._ttl_s, stamp, served, decoded)
        result = await self._write(keys=keys, args=args)
        return float(result)

    async def delete(self, pod: str) -> None:
        await self._delete(keys=[self._keys.reports, self._keys.seen], args=[pod])
