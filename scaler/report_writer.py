"""Writing pod reports (`ReportWriter`): the write and delete scripts, which store a report
and add what the pod served to the service record and what it decoded to the token curve in
one step, and their argument layout (`write_call`) for every writer."""

from __future__ import annotations

from scaler.redis_connect import AnyRedis
from scaler.reports import PodReport, ReportKeys
from scaler.service_record import SERVICE_MEMORY_REQUESTS, SERVICE_TTL_S, Served
from scaler.token_curve import (
    BINS_PER_DOUBLING,
    CURVE_FLOOR_STEPS,
    CURVE_TTL_S,
    MAX_AGE,
    MAX_BIN,
    MAX_GAP_S,
    TOKEN_MEMORY_S,
    Decoded,
)

DEFAULT_REPORT_TTL_S = 24 * 3600

# KEYS: reports, seen, service, tokens. ARGV: pod, payload, ttl_s, reported_at ('' = Redis
# time) [, completed and busy seconds served since the previous write ('0' '0': none), the
# service record's memory in requests and its ttl [, sequences, steps and seconds decoded
# since the previous write, then the token curve's TOKEN_MEMORY_S, MAX_GAP_S,
# BINS_PER_DOUBLING, MAX_BIN, CURVE_TTL_S, CURVE_FLOOR_STEPS and MAX_AGE]]: a write without a
# bracketed part serves (decodes) nothing.
# Writing every key in one script means a reader never sees a half-written report.
# The token curve's rule is TokenCurve.add's (scaler.token_curve), operation for operation, so
# the two agree to the last bit: a write reads and writes `at`, `age` and its own bin's six
# parts only (its weight, the sums its mean needs and the squares its spread needs),
# but every bin when it renormalises. A `:tokens` key of another type is left alone (the
# reader says so), so it can never stop the reports; what the reader ignores the writer
# forgets: a bin with a part that is not a number is overwritten by the next write to it and
# deleted at the next renormalisation; an `age` that is not a number starts the curve over.
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
  local floor_steps, max_age = tonumber(ARGV[17]), tonumber(ARGV[18])
  local function number(text)  -- what TokenCurve.from_fields refuses counts as nothing
    local x = tonumber(text)
    if x and x == x and x >= 0 and x < math.huge then return x end
    return nil
  end
  local function g(x) return string.format('%.17g', x) end
  local now = tonumber(t)
  local k = math.floor(per_doubling * math.log(math.max(sequences, 1)) / math.log(2) + 0.5)
  k = tostring(math.min(math.max(k, 0), max_bin))
  -- A bin's parts: steps w, and x steps the sums of sequences b, ms t, ms^2 q, sequences^2 s,
  -- sequences x ms x. Without all of q, s, x (stored before they were kept, or one that is
  -- not a number) the bin's spread is unknown: every sample at its means (Bin.without_spread).
  local function with_spread(bin)
    if not (bin.q and bin.s and bin.x) then
      if bin.w > 0 then
        bin.q, bin.s, bin.x = bin.t * bin.t / bin.w, bin.b * bin.b / bin.w, bin.b * bin.t / bin.w
      else
        bin.q, bin.s, bin.x = 0, 0, 0
      end
    end
    return bin
  end
  local read = redis.call('HMGET', KEYS[4], 'at', 'age', k .. ':w', k .. ':b', k .. ':t',
                          k .. ':q', k .. ':s', k .. ':x')
  local last, age = number(read[1]), number(read[2] or '0')
  if not age then  -- an age that is not a number: no bin can be scaled, start over
    redis.call('DEL', KEYS[4])
    last, age, read = nil, 0, {}
  end
  local old = {w = number(read[3]), b = number(read[4]), t = number(read[5]),
               q = number(read[6]), s = number(read[7]), x = number(read[8])}
  local gap = 0
  if last then gap = math.min(math.max(now - last, 0), max_gap) end
  age = age + gap / memory
  if age > max_age then  -- renormalise: every bin at its true value, the faded ones deleted
    local f = math.exp(-age)
    local bins = {}  -- bin name -> its parts as read; false: a part that is not a number
    local fields = redis.call('HGETALL', KEYS[4])
    for i = 1, #fields, 2 do
      local name, part = string.match(fields[i], '^(%d+):([wbtqsx])$')
      if name then
        bins[name] = bins[name] or {}
        bins[name][part] = number(fields[i + 1]) or false
      end
    end
    local out, gone = {}, {}
    for name, bin in pairs(bins) do
      if bin.w and bin.b and bin.t and bin.w * f >= floor_steps then
        bin = with_spread(bin)
        local scaled = {w = bin.w * f, b = bin.b * f, t = bin.t * f, q = bin.q * f,
                        s = bin.s * f, x = bin.x * f}
        for _, part in ipairs({'w', 'b', 't', 'q', 's', 'x'}) do
          out[#out + 1] = name .. ':' .. part
          out[#out + 1] = g(scaled[part])
        end
        if name == k then old = scaled end
      else  -- faded, or a bin missing a part, which TokenCurve.from_fields reads as nothing
        for _, part in ipairs({':w', ':b', ':t', ':q', ':s', ':x'}) do
          gone[#gone + 1] = name .. part
        end
        if name == k then old = {} end
      end
    end
    if #gone > 0 then redis.call('HDEL', KEYS[4], unpack(gone)) end
    if #out > 0 then redis.call('HSET', KEYS[4], unpack(out)) end
    age = 0
  end
  if not (old.w and old.b and old.t) then old = {w = 0, b = 0, t = 0, q = 0, s = 0, x = 0} end
  old = with_spread(old)
  local scale = math.exp(age)
  local token_ms = 1000 * seconds / steps
  redis.call('HSET', KEYS[4], 'at', g(now), 'age', g(age),
             k .. ':w', g(old.w + steps * scale),
             k .. ':b', g(old.b + sequences * steps * scale),
             k .. ':t', g(old.t + token_ms * steps * scale),
             k .. ':q', g(old.q + token_ms * token_ms * steps * scale),
             k .. ':s', g(old.s + sequences * sequences * steps * scale),
             k .. ':x', g(old.x + sequences * token_ms * steps * scale))
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
        args += [CURVE_TTL_S, repr(CURVE_FLOOR_STEPS), repr(MAX_AGE)]
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
