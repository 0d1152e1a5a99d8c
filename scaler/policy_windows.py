"""The decision's windows: this poll's samples recorded, old buckets expired, widths changed.

The aggregation stage of `scaler.policy.decide`, apart from the rules that read the
windows (as Knative's collector fills the buckets its decider reads): `recent` records
the requests in the system and in flight, kept a little over `recent_s`; `needed`
records the settled need, kept the scale-down delay. Each starts from the stored window
of `PolicyState`, `rebucketed` first if its bucket width changed. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaler import window
from scaler.policy_state import BUCKETS_PER_WINDOW, PolicyState
from scaler.signals import Signals


@dataclass(frozen=True)
class Recent:
    """The windows the forecast and the SLO-aware hold read, with this poll's sample."""

    bucket_s: float
    in_system: window.Buckets  # requests in the system (in flight + waiting + queued)
    in_flight: window.Buckets  # requests being served


def recent(state: PolicyState, signals: Signals, bucket_s: float, now: float) -> Recent:
    """The stored in_system and in-flight windows with `signals` sampled at `now`."""
    # As Redis keeps them (61 buckets, `state_codec.merge_args`): 60 buckets span at least
    # `recent_s` (see `policy.bucket_width`), and the 61st keeps the sample in force at its
    # start through sparse polls.
    kept_s = (BUCKETS_PER_WINDOW + 1) * bucket_s
    return Recent(
        bucket_s,
        _recorded(state.in_system, state.bucket_s, signals.demand, kept_s, bucket_s, now),
        _recorded(state.in_flight, state.bucket_s, signals.inflight, kept_s, bucket_s, now),
    )


def needed(
    state: PolicyState, settled: float, delay_s: float, bucket_s: float, now: float
) -> window.Buckets:
    """The stored needed window with the settled need sampled at `now`, kept `delay_s`."""
    return _recorded(state.needed, state.bucket_s, settled, max(delay_s, bucket_s), bucket_s, now)


def _recorded(
    stored: window.Buckets,
    stored_s: float,
    value: float,
    length_s: float,
    bucket_s: float,
    now: float,
) -> window.Buckets:
    return window.record(
        rebucketed(stored, stored_s, bucket_s, now), now, value, length_s, bucket_s
    )


def rebucketed(
    buckets: window.Buckets, stored_s: float, bucket_s: float, now: float
) -> window.Buckets:
    """A stored window in today's bucket width.

    If a delay or the cold start changed, the old buckets mean other times: keep
    their maximum as one sample at `now` rather than forget it, so a change can
    hold a replica a little longer but never release one early."""
    if stored_s == bucket_s or not buckets:
        return buckets
    highest = max(v for _, v in buckets)
    return ((window.bucket_of(now, bucket_s), highest),)
