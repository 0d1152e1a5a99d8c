"""The SLO-aware hold (`sloWaitSeconds` W, 2 s unless off): warm slots that start every
burst within W.

A request waits only when every warm slot is busy. With K warm slots, each
holding a request for a mean service time s (`serviceSeconds`), busy slots free
up at K / s per second, so a request that finds N requests in the system
(itself included) starts after (N - K) x s / K seconds. It starts within W iff
N <= K x (1 + W / s), i.e. K >= N / (1 + W / s).

Capacity ordered when a burst shows arrives a cold start C later, after any
burst shorter than C is over, so it must already be warm: the mode holds the
slots for the largest burst seen over a horizon H (`sloHorizonSeconds`,
default 15 C, never shorter than `scaleDownDelaySeconds`).

A burst is what arrived at once: the requests in flight plus those that arrived
within `burstWindowSeconds` (`burst_size`). A queue that built up over a cold
start, while capacity was starting, is not a burst of its own size: counted
whole, the first wake from zero would hold capacity for a cold start's worth of
arrivals for the whole horizon.
"""

from __future__ import annotations

# The horizon a burst's capacity is held for, in cold starts, when sloHorizonSeconds
# is not set (see docs: choosing settings).
HORIZON_COLD_STARTS = 15.0


def horizon_s(slo_horizon_s: float | None, scale_down_delay_s: float, cold_s: float) -> float:
    """How long a burst's capacity is held: sloHorizonSeconds, else 15 cold starts;
    never shorter than the scale-down delay."""
    horizon = HORIZON_COLD_STARTS * cold_s if slo_horizon_s is None else slo_horizon_s
    return max(horizon, scale_down_delay_s)


def burst_size(in_system: float, arrived_recently: float) -> float:
    """Requests a burst brought: those that arrived within the burst window, never more than
    are in the system (the rest of a queue waited through a cold start: not a burst)."""
    return min(in_system, max(0.0, arrived_recently))


def slots_for(burst: float, slo_wait_s: float, service_s: float) -> float:
    """Warm slots that start every request of a burst of `burst` within W: N / (1 + W / s)."""
    return burst / (1.0 + slo_wait_s / service_s)


def level(peaks: list[float], slo_target: float) -> float:
    """The load L the warm slots must start within the SLO: the largest peak, or with
    sloTarget q < 1, the smallest L at which the horizon's requests that would have
    waited longer are at most 1 - q of them.

    Each bucket's peak N_b stands for a burst of N_b requests. K slots start
    L = K x (1 + W / s) of a burst within W, so a burst of N_b misses
    max(0, N_b - L) of its requests, and L is the smallest with
        sum_b max(0, N_b - L) <= (1 - q) x sum_b N_b.
    The excess falls linearly in L between peaks, so with the k largest peaks above
    L (P_k their sum, A the allowance): L = (P_k - A) / k, the first k at which that
    is at least the (k+1)-th peak. Worked example, q 0.9, peaks 100, 60, 40, 0:
    A = 0.1 x 200 = 20; k=1: L = 80 >= 60 -> L = 80 (the 100-burst misses 20 of its
    requests: 10 % of the 200); with q 0.8, A = 40: k=1: L = 60 >= 60 -> 60. Peaks
    50, 50 at q 0.9: A = 10; k=1: 40 < 50; k=2: L = 45."""
    if not peaks:
        return 0.0
    ordered = sorted(peaks, reverse=True)
    if slo_target >= 1.0:
        return ordered[0]
    allowance = (1.0 - slo_target) * sum(ordered)
    top = 0.0
    for k, value in enumerate(ordered, start=1):
        top += value
        found = (top - allowance) / k
        if k == len(ordered) or found >= ordered[k]:
            return max(found, 0.0)
    return 0.0  # not reached: the loop returns at k = len(ordered)
