"""PolicyState in Redis: one hash per ScaledObject, merged across scaler replicas.

    llm-scaler:{<namespace>/<target>}:policy:<scaledObject>   HASH
        bucket_s          width of the b:, n: and s: buckets
        b:<index>         max capacity needed in that bucket, kept for the scale-down delay
        n:<index>         max requests in the system (in flight + waiting + queued),
                          kept for a cold start (the offered load's "then")
        s:<index>         max requests in flight, kept for a cold start
        peak_bucket_s     width of the h: buckets
        h:<index>         SLO-aware mode: the largest burst in that bucket, kept the horizon
        c:<index>         tokenLatencyMs: max 1 / per-replica concurrency (the smallest
                          concurrency), kept for the scale-down delay; absent in state
                          stored before it, which reads as none
        active_until      IsActive holds true until then

Saving never overwrites blindly: the merge script keeps the per-field maximum,
so replicas that decide at the same time keep each other's samples, in
whichever order their writes land.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from scaler import window
from scaler.policy import MAX_COLD_START_S, slo_horizon_s, zero_delay_s
from scaler.policy_state import BUCKETS_PER_WINDOW, PolicyState
from scaler.reports import target_key_base
from scaler.target_config import TargetConfig
from scaler.window import Buckets

# field prefix -> (PolicyState window, the field holding its bucket width)
SERIES = {
    "b:": ("needed", "bucket_s"),
    "n:": ("in_system", "bucket_s"),
    "s:": ("in_flight", "bucket_s"),  # "s:" from its first name, kept so stored state reads
    "h:": ("peak_buckets", "peak_bucket_s"),
    "c:": ("inverse_concurrency", "bucket_s"),
}


def policy_key(config: TargetConfig) -> str:
    """The Redis key of the ScaledObject's PolicyState hash."""
    base = target_key_base(config.namespace, config.target_name)
    return f"{base}:policy:{config.scaled_object}"


def state_ttl_s(config: TargetConfig) -> int:
    """Past this, every stored time is over and the state equals an empty one; an hour of slack.

    SLO-aware mode holds its window for the horizon, and keeps the target awake for a
    time that the longest cold start a sidecar may measure can stretch: the TTL covers
    the longest either can be."""
    horizon = slo_horizon_s(config) if config.slo_wait_s is not None else 0.0
    awake = zero_delay_s(config, MAX_COLD_START_S)
    return int(max(config.scale_down_delay_s, awake, horizon)) + 3600


def decode_state(fields: Mapping[str, str]) -> PolicyState:
    """A stored state; fields that do not parse are dropped (never fatal) and
    the caller's decision then holds what it reads, which only ever errs high."""
    series: dict[str, list[tuple[int, float]]] = {name: [] for name, _ in SERIES.values()}
    scalars: dict[str, float] = {}
    for name, raw in fields.items():
        try:
            if name[:2] in SERIES:
                series[SERIES[name[:2]][0]].append((int(name[2:]), float(raw)))
            else:
                scalars[name] = float(raw)
        except ValueError:
            continue
    return PolicyState(
        bucket_s=scalars.get("bucket_s", 0.0),
        active_until=scalars.get("active_until", 0.0),
        peak_bucket_s=scalars.get("peak_bucket_s", 0.0),
        **{name: tuple(sorted(values)) for name, values in series.items()},
    )


def merge_states(stored: PolicyState, remembered: PolicyState) -> PolicyState:
    """The merge script's rule in Python: per-field maximum; a window of another width than
    the stored one is left out (the stored width is the one in force).

    Used to fold what a replica remembers into what Redis returned, so a Redis
    that restarted empty is refilled from memory instead of lowering the metric."""
    merged = replace(stored, active_until=max(stored.active_until, remembered.active_until))
    for width in ("bucket_s", "peak_bucket_s"):
        if not getattr(stored, width):
            merged = replace(merged, **{width: getattr(remembered, width)})
    for name, width in SERIES.values():
        if getattr(remembered, width) == getattr(merged, width):
            both: dict[str, Any] = {name: _merged(getattr(stored, name), getattr(remembered, name))}
            merged = replace(merged, **both)
    return merged


def _merged(stored: Buckets, remembered: Buckets) -> Buckets:
    buckets = dict(stored)
    for index, value in remembered:
        buckets[index] = max(value, buckets.get(index, value))
    return tuple(sorted(buckets.items()))


def merge_args(state: PolicyState, now: float, ttl_s: int) -> list[str | int]:
    """The merge script's arguments: buckets older than 60 (+1) of their width are dropped."""

    def oldest(width: float) -> int:
        return window.bucket_of(now, width) - BUCKETS_PER_WINDOW - 1 if width else 0

    args: list[str | int] = [
        repr(state.bucket_s),
        repr(state.peak_bucket_s),
        repr(state.active_until),
        oldest(state.bucket_s),
        oldest(state.peak_bucket_s),
        ttl_s,
    ]
    for prefix, (name, _) in SERIES.items():
        for index, value in getattr(state, name):
            args += [f"{prefix}{index}", repr(value)]
    return args


# KEYS: state. ARGV: bucket_s, peak_bucket_s, active_until, the oldest bucket index to keep
# of each width, ttl_s, then bucket field / value pairs (b:, n:, s:, c: <i> and h:<i>).
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

-- Buckets of another width were folded into ours by the decision (see policy_windows.rebucketed).
local same = {num('bucket_s') == tonumber(ARGV[1]), num('peak_bucket_s') == tonumber(ARGV[2])}
local group = {['b:'] = 1, ['n:'] = 1, ['s:'] = 1, ['h:'] = 2, ['c:'] = 1}
for _, f in ipairs(redis.call('HKEYS', key)) do
  local g = group[string.sub(f, 1, 2)]
  if g and ((not same[g]) or tonumber(string.sub(f, 3)) < tonumber(ARGV[3 + g])) then
    redis.call('HDEL', key, f)
  end
end
redis.call('HSET', key, 'bucket_s', ARGV[1], 'peak_bucket_s', ARGV[2])
raise('active_until', ARGV[3])
for i = 7, #ARGV, 2 do raise(ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', key, ARGV[6])
return 1
"""
