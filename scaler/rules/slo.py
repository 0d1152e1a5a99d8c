"""The SLO-aware hold (`sloWaitSeconds` W, 2 s unless off): warm slots that start every
burst within W.

A request waits only when every warm slot is busy. With K warm slots, each
holding a request for a mean service time s (`serviceSeconds`), busy slots free
up at K / s per second, so a request that finds N requests in the system
(itself included) starts after (N - K) x s / K seconds. It starts within W iff
N <= K x (1 + W / s), i.e. K >= N / (1 + W / s).

Capacity ordered when a burst shows arrives a cold start C later, after any
burst shorter than C is over, so it must already be warm: the mode holds the
slots for the bursts seen over a horizon H (`sloHorizonSeconds`, default an hour,
never shorter than `scaleDownDelaySeconds`), at the level `sloTarget` asks for
(`level`). With sloTarget 1 that is the largest burst that recurred, an extreme value
that grows with the horizon and jumps as single bursts enter and leave it; below 1 it is a
level that leaves out only a share of the requests, which settles as the horizon
holds more bursts. So the horizon can be long against the bursts (an hour holds
dozens a few minutes apart) and short against a day's changes, and the held level
stays put like a fixed fleet, which serves independent bursts better than the same
GPU-hours varied (see docs/decision.md).

The hold is a forecast: it is set by the bursts it has seen and serves only those that
come after, so a burst counts only as far as an earlier burst of the horizon reached
(`recurring`), once it is a cold start old: until then it counts whole, the break-even of
keeping its warm slots against starting them again (`recent_from_s`). A single surge, or
the queue of a wake from zero, never sets the hold for longer than a cold start; a size
that comes back does, for as long as its first showing is in the horizon.

A burst is what arrived at once: the requests in flight plus those that arrived
within `burstWindowSeconds` (`burst_size`). A queue that built up over a cold
start, while capacity was starting, is not a burst of its own size: counted
whole, the first wake from zero would hold capacity for a cold start's worth of
arrivals for the whole horizon.
"""

from __future__ import annotations

import math


def horizon_s(slo_horizon_s: float, scale_down_delay_s: float) -> float:
    """How far back the bursts are counted: sloHorizonSeconds, never shorter than the
    scale-down delay."""
    return max(slo_horizon_s, scale_down_delay_s)


def recurring(
    peaks: list[tuple[float, float]], apart_s: float, recent_from_s: float = math.inf
) -> list[float]:
    """Each burst as far as an earlier burst of the horizon reached: what a hold could have
    served of it. `peaks` are (time, size) pairs; the answer is in time order. Bursts less
    than `apart_s` apart may be one burst seen by two decisions (a surge at the edge of a
    bucket shows in both), so an earlier burst counts only from `apart_s` before. Bursts
    at or after `recent_from_s` count whole: too recent to tell from the first of a size
    that recurs (`recent_from_s`).

    A hold is set by the bursts it has seen and serves only those that come after, so it
    pays only for a size that comes back. A burst larger than every earlier one counts as
    the largest earlier one: a single surge (or the queue of a wake from zero, the first
    burst of all) counts as no more than the traffic before it, and so never sets the hold;
    a second surge of its size counts whole, and holds it while the first is in the horizon.

    Worked example (apart 120 s): bursts 30, 200, 40, 180 at 0, 120, 240, 360 s -> 0, 30,
    40, 180; at 0, 60, 240, 360 s -> 0, 0, 40, 180 (the 200 came too soon after the 30 to
    tell it from it, and nothing earlier reached it)."""
    ordered = sorted(peaks)
    counted, highest, seen = [], 0.0, 0
    for time_s, size in ordered:
        while seen < len(ordered) and ordered[seen][0] <= time_s - apart_s:
            highest = max(highest, ordered[seen][1])
            seen += 1
        counted.append(size if time_s >= recent_from_s else min(size, highest))
    return counted


def recent_from_s(now: float, cold_s: float) -> float:
    """The earliest bucket start whose burst still counts whole (`recurring`): a burst
    counts whole while its bucket began less than a cold start ago, then only as far as it
    recurred.

    Rent or buy: whether a burst will recur is known only once the traffic has had time to
    bring it again, and the hold can either keep the burst's warm slots meanwhile (rent:
    their GPU time while idle) or let them go and start them again when the size comes
    back (buy: a cold start of GPU time per slot, billed while the pod starts, and the
    burst's requests wait). Keeping them up to the break-even, one cold start, and no
    longer is the classic answer to the rent-or-buy problem: whatever the traffic does
    next, it never costs more than twice what knowing it in advance would. So every
    burst, the first of all (the queue of a wake from zero) included, keeps its warm slots
    up to a cold start; a single surge costs them for at most that, never for the
    horizon. With no cold start nothing needs keeping: capacity is ready at once."""
    return now - cold_s


# How long the mode keeps a target awake with no demand, in cold starts, when
# scaleToZeroDelaySeconds is absent and shorter (see docs: choosing settings).
AWAKE_COLD_STARTS = 15.0


def awake_s(cold_s: float) -> float:
    """No demand for this long ends the mode's wait for the next burst: 15 cold starts.
    Idle that long, the fleet has cost 15 times what re-buying it costs in GPU; the level
    is remembered for the horizon, so a wake within it asks for the level at once.

    Measured against the longest silence the horizon's traffic came back from (at least
    300 s): on the bursty hour that slept through silences longer than any seen so far,
    and each wake made a burst wait a cold start (77.62 % against 80.72 % met)."""
    return AWAKE_COLD_STARTS * cold_s


def burst_size(in_system: float, in_system_before: float | None, arrived: float) -> float:
    """Requests a burst brought: those that arrived within the burst window, never more than
    are in the system (the rest of a queue waited through a cold start: not a burst).

    Nothing known before (first sight): all of it may have come at once. Fewer in the
    system than at the window's start: the system is draining, not bursting; what
    arrived is then the small difference of two large numbers, and the completions
    estimate runs high right after a batch of fresh starts, so nothing is counted."""
    if in_system_before is None:
        return in_system
    if in_system < in_system_before:
        return 0.0
    return min(in_system, max(0.0, arrived))


def burst_ratio(slo_wait_s: float, service_s: float) -> float:
    """Requests of a burst that K warm slots start within W, per slot: 1 + W / s."""
    return 1.0 + slo_wait_s / service_s


def slots_for(burst: float, slo_wait_s: float, service_s: float) -> float:
    """Warm slots that start every request of a burst of `burst` within W: N / (1 + W / s)."""
    return burst / burst_ratio(slo_wait_s, service_s)


def level(peaks: list[float], slo_target: float, ratio: float) -> float:
    """The load L the warm slots must start within the SLO: the largest peak, or with
    sloTarget q < 1, the smallest L at which the horizon's requests that would have
    waited are at most 1 - q of them.

    Each bucket's peak N_b stands for a burst of N_b requests. K warm slots start
    L = K x ratio of a burst within W (ratio = 1 + W / s, `slots_for`), so a burst of
    at most L is served whole. A burst above L is counted as missing every request
    beyond the K warm slots, N_b - L / ratio, not only those beyond L: slots free at
    K / s a second only once their requests' service times have spread out, and a
    burst's requests all start fresh. So L is the smallest with
        sum over N_b > L of (N_b - L / ratio) <= A = (1 - q) x sum_b N_b,
    which leaves out only bursts large and rare enough to be worth their misses;
    bursts all alike are held whole whatever q. That sum falls as L rises, so with
    the k largest peaks above L (P_k their sum): L = max(N_(k+1), ratio x (P_k - A) / k),
    valid while below N_k; L is the smallest valid one (k = 0: the largest peak).

    Worked example, q 0.85, ratio 1.4, peaks 100, 60, 40, 0: A = 0.15 x 200 = 30;
    k=1: max(60, 1.4 x 70) = 98 < 100 -> valid; k=2: max(40, 1.4 x 130 / 2 = 91)
    is not below 60 -> L = 98 (70 warm slots: the 100-burst misses 30, 15 % of the
    200). Peaks 24, 24, 24: no k is valid -> L = 24."""
    ordered = sorted(peaks, reverse=True)
    if not ordered:
        return 0.0
    allowance = (1.0 - slo_target) * sum(ordered)
    found = ordered[0]
    top = 0.0
    for k, value in enumerate(ordered, start=1):
        top += value
        below = ordered[k] if k < len(ordered) else 0.0
        candidate = max(below, ratio * (top - allowance) / k)
        if candidate < value:
            found = min(found, candidate)
    return max(found, 0.0)
