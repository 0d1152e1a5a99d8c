"""PolicyState in Redis: one hash per ScaledObject, merged across scaler replicas.

    llm-scaler:{<namespace>/<target>}:policy:<scaledObject>   HASH
        bucket_s          width of the window buckets
        b:<index>         max demand in that bucket, kept for the scale-down delay
                          (SLO-aware mode: max requests served, in flight)
        h:<index>         SLO-aware mode: max requests in the system (in flight +
                          waiting) in that bucket, kept for the SLO horizon
        active_until      IsActive holds true until then
        burst_started_at, burst_peak, burst_until

Saving never overwrites blindly: the merge script keeps the per-field maximum
(a later burst replaces an earlier one), so replicas that decide at the same
time keep each other's samples, in whichever order their writes land.
"""

from __future__ import annotations

from collections.abc import Mapping

from scaler.policy import MAX_COLD_START_S, PolicyState, slo_horizon_s
from scaler.reports import target_key_base
from scaler.target_config import TargetConfig
from scaler.window import Buckets

_BUCKET = "b:"
_PEAK = "h:"


def policy_key(config: TargetConfig) -> str:
    base = target_key_base(config.namespace, config.target_name)
    return f"{base}:policy:{config.scaled_object}"


def state_ttl_s(config: TargetConfig) -> int:
    """Past this, every stored time is over and the state equals an empty one; an hour of slack.

    SLO-aware mode holds its window for the horizon, which the longest cold start
    a sidecar may measure can stretch: the TTL covers the longest it can be."""
    horizon = 0.0
    if config.slo_wait_s is not None:
        horizon = slo_horizon_s(config, MAX_COLD_START_S)
    return int(max(config.scale_down_delay_s, config.scale_to_zero_delay_s, horizon)) + 3600


def decode_state(fields: Mapping[str, str]) -> PolicyState:
    """A stored state; fields that do not parse are dropped (never fatal) and
    the caller's decision then holds what it reads, which only ever errs high."""
    buckets: list[tuple[int, float]] = []
    peaks: list[tuple[int, float]] = []
    scalars: dict[str, float] = {}
    for name, raw in fields.items():
        try:
            if name.startswith(_BUCKET):
                buckets.append((int(name[len(_BUCKET) :]), float(raw)))
            elif name.startswith(_PEAK):
                peaks.append((int(name[len(_PEAK) :]), float(raw)))
            else:
                scalars[name] = float(raw)
        except ValueError:
            continue
    return PolicyState(
        bucket_s=scalars.get("bucket_s", 0.0),
        buckets=tuple(sorted(buckets)),
        active_until=scalars.get("active_until", 0.0),
        burst_started_at=scalars.get("burst_started_at", 0.0),
        burst_peak=scalars.get("burst_peak", 0.0),
        burst_until=scalars.get("burst_until", 0.0),
        peak_buckets=tuple(sorted(peaks)),
    )


def merge_states(stored: PolicyState, remembered: PolicyState) -> PolicyState:
    """The merge script's rule in Python: per-field maximum, a later burst replacing an earlier.

    Used to fold what a replica remembers into what Redis returned, so a Redis
    that restarted empty is refilled from memory instead of lowering the metric."""
    if remembered.bucket_s != stored.bucket_s and stored.bucket_s:
        return stored  # another delay now: the stored state is the one in force
    burst = max(
        (stored.burst_started_at, stored.burst_peak, stored.burst_until),
        (remembered.burst_started_at, remembered.burst_peak, remembered.burst_until),
    )
    return PolicyState(
        bucket_s=remembered.bucket_s if not stored.bucket_s else stored.bucket_s,
        buckets=_merged(stored.buckets, remembered.buckets),
        active_until=max(stored.active_until, remembered.active_until),
        burst_started_at=burst[0],
        burst_peak=burst[1],
        burst_until=burst[2],
        peak_buckets=_merged(stored.peak_buckets, remembered.peak_buckets),
    )


def _merged(stored: Buckets, remembered: Buckets) -> Buckets:
    buckets = dict(stored)
    for index, value in remembered:
        buckets[index] = max(value, buckets.get(index, value))
    return tuple(sorted(buckets.items()))


def merge_args(state: PolicyState, oldest_bucket: int, ttl_s: int) -> list[str | int]:
    args: list[str | int] = [
        repr(state.bucket_s),
        repr(state.active_until),
        repr(state.burst_started_at),
        repr(state.burst_peak),
        repr(state.burst_until),
        oldest_bucket,
        ttl_s,
    ]
    for index, value in state.buckets:
        args += [f"{_BUCKET}{index}", repr(value)]
    for index, value in state.peak_buckets:
        args += [f"{_PEAK}{index}", repr(value)]
    return args


# KEYS: state. ARGV: bucket_s, active_until, burst_started_at, burst_peak, burst_until,
# oldest bucket index to keep, ttl_s, then bucket field / value pairs (b:<i> and h:<i>).
MERGE_STATE_LUA = """
local key = KEYS[1]
local function num(field)
  local v = redis.call('HGET', key, field)
  if v then return tonumber(v) end
  return nil
end
local function raise(field, value)
  local cur = num(field)
  if cur == nil or tonumber(value) > cur then redis.call('HSET', key, field, value) end
end

local fields = redis.call('HKEYS', key)
local same_width = num('bucket_s') == tonumber(ARGV[1])
for _, f in ipairs(fields) do
  -- Buckets of another width were folded into ours by the decision (see policy._rebucketed).
  local prefix = string.sub(f, 1, 2)
  if prefix == 'b:' or prefix == 'h:' then
    if (not same_width) or tonumber(string.sub(f, 3)) < tonumber(ARGV[6]) then
      redis.call('HDEL', key, f)
    end
  end
end
redis.call('HSET', key, 'bucket_s', ARGV[1])
raise('active_until', ARGV[2])

local started = num('burst_started_at')
if started == nil or tonumber(ARGV[3]) > started then
  redis.call('HSET', key, 'burst_started_at', ARGV[3])
  redis.call('HSET', key, 'burst_peak', ARGV[4], 'burst_until', ARGV[5])
elseif tonumber(ARGV[3]) == started then
  raise('burst_peak', ARGV[4])
  raise('burst_until', ARGV[5])
end

for i = 8, #ARGV, 2 do raise(ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', key, ARGV[7])
return 1
"""
