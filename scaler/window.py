"""Maximum over a sliding time window, kept in fixed-width time buckets.

The scale-down delay is "report the highest demand of the last D seconds", the
same shape as Knative's `aggregation/max/timewindow.go`. Samples fall into
buckets of `bucket_s` seconds (bucket index = floor(t / bucket_s)), each keeping
only its maximum, so the window costs O(D / bucket_s) memory whatever the number
of samples or requests. Buckets are plain (index, value) pairs so the whole
window can be stored in a Redis hash and merged across scaler replicas by taking
the per-bucket maximum, an operation that gives the same result in any order.

Worked example (bucket 2 s, window 10 s): samples 14 at t=100.5 and 6 at t=109
land in buckets 50 and 54; at t=109 the window covers buckets 50..54 and its max
is 14; at t=112.1 it covers buckets 51..56 and the max is 6. A sample is thus
held between D and D + one bucket, never less than D.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

Buckets = tuple[tuple[int, float], ...]  # (bucket index, max value), ascending index


def bucket_of(t: float, bucket_s: float) -> int:
    """The index of the bucket of width `bucket_s` that holds time `t`."""
    return math.floor(t / bucket_s)


def oldest_bucket(now: float, length_s: float, bucket_s: float) -> int:
    """Index of the oldest bucket that still overlaps [now - length_s, now]."""
    return bucket_of(now - length_s, bucket_s)


def record(buckets: Buckets, now: float, value: float, length_s: float, bucket_s: float) -> Buckets:
    """`buckets` with `value` sampled at `now`, and buckets that left the window dropped."""
    index = bucket_of(now, bucket_s)
    merged = dict(buckets)
    merged[index] = max(value, merged.get(index, value))
    return trim(merged.items(), now, length_s, bucket_s)


def trim(
    items: Iterable[tuple[int, float]], now: float, length_s: float, bucket_s: float
) -> Buckets:
    """The buckets of `items` still in the window ending at `now`, ascending index."""
    oldest = oldest_bucket(now, length_s, bucket_s)
    return tuple(sorted((i, v) for i, v in items if i >= oldest))


def window_values(buckets: Buckets, now: float, length_s: float, bucket_s: float) -> list[float]:
    """The bucket maxima in the window ending at `now`, oldest first."""
    oldest = oldest_bucket(now, length_s, bucket_s)
    newest = bucket_of(now, bucket_s)
    return [v for i, v in buckets if oldest <= i <= newest]


def window_max(buckets: Buckets, now: float, length_s: float, bucket_s: float) -> float | None:
    """Max over the window ending at `now`; None when the window holds no sample."""
    values = window_values(buckets, now, length_s, bucket_s)
    return max(values) if values else None


def value_at(buckets: Buckets, t: float, bucket_s: float) -> float | None:
    """The sample in force at `t`: that of the latest bucket at or before t's; None if none."""
    index = bucket_of(t, bucket_s)
    found = None
    for i, v in buckets:
        if i > index:
            break
        found = v
    return found


def time_mean(buckets: Buckets, now: float, length_s: float, bucket_s: float) -> float | None:
    """Mean over [now - length_s, now] of the samples, each held until the next one's bucket
    (the one before the window holds at its start); None when there is no sample.

    Worked example (bucket 1 s): samples 0 at t=0 and 8 at t=50, mean over [0, 60]
    -> (50 x 0 + 10 x 8) / 60 = 1.33, however many decisions fell in each stretch."""
    start = now - length_s
    first = bucket_of(start, bucket_s)
    points = [(max(i * bucket_s, start), v) for i, v in buckets if i >= first]
    before = value_at(buckets, start - bucket_s, bucket_s) if buckets else None
    if before is not None and (not points or points[0][0] > start):
        points.insert(0, (start, before))
    if not points:
        return None
    total = 0.0
    for (t0, v), (t1, _) in zip(points, [*points[1:], (now, 0.0)], strict=True):
        total += v * max(0.0, min(t1, now) - t0)
    span = max(now - points[0][0], 0.0)
    return total / span if span > 0 else points[-1][1]
