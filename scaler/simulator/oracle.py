"""The clairvoyant floor: the fewest GPU-hours that serve every request at once, given cold starts.

An oracle that knows every arrival and every service time in advance:

1. Offered concurrency c(t): requests that would be in service at t if each
   started the moment it arrived (arrival to arrival + service time).
2. Replicas needed n(t) = ceil(c(t) / slots_per_replica).
3. Replica level k is held exactly while n(t) >= k, ordered one cold start
   ahead (so it is ready the moment it is needed), and kept through gaps
   shorter than a cold start: stopping would save less than restarting costs,
   since a replica ordered again must be paid from gap end - cold start.

Its GPU-hours, sum over levels of (held time + one cold start per start), are
the denominator of every "x floor" figure. Worked example (8 slots, 60 s cold
start): 12 requests in service from t=100 to t=200, none otherwise: n = 2
over [100, 200]; two replicas ordered at t=40, each paid 160 s -> 320 s. Had
the same load come back at t=230, the 30 s gap is shorter than the cold
start: both replicas stay, paid 40..(end of the second spell).

The run starts warm: the levels needed within the first cold start exist at
t=0 (nobody could have ordered them earlier inside the trace), and every
policy is given the same warm fleet, `warm_replicas`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaler.simulator.cluster import ClusterParams
from scaler.simulator.trace import FloatArray, Trace


@dataclass(frozen=True)
class Floor:
    gpu_s: float
    horizon_s: float  # when the offered concurrency last drops to zero
    warm_replicas: int  # max n(t) over [0, cold start]: the fleet at t=0
    peak_replicas: int  # max n(t): what a fixed fleet needs
    schedule: tuple[tuple[float, int], ...]  # (time, replica change), ordered by time

    @property
    def gpu_hours(self) -> float:
        return self.gpu_s / 3600


def need_profile(trace: Trace, params: ClusterParams) -> tuple[FloatArray, FloatArray]:
    """Change points of n(t): (times, replicas needed from that time on)."""
    if len(trace) == 0:
        return np.zeros(1), np.zeros(1)
    ends = trace.arrival_s + params.service_s(trace)
    times = np.concatenate([trace.arrival_s, ends])
    deltas = np.concatenate([np.ones(len(trace)), -np.ones(len(trace))])
    order = np.lexsort((deltas, times))  # by time; at a tie, ends first (no false peak)
    times, concurrency = times[order], np.cumsum(deltas[order])
    need = np.ceil(concurrency / params.planning_slots(trace))
    # Keep the last change at each time, and only the points where n changes.
    last_at_time = np.append(times[1:] != times[:-1], True)
    times, need = times[last_at_time], need[last_at_time]
    changed = np.insert(need[1:] != need[:-1], 0, True)
    return times[changed], need[changed]


def clairvoyant_floor(trace: Trace, params: ClusterParams, cold_s: float | None = None) -> Floor:
    cold = params.cold_start.nominal_s if cold_s is None else cold_s
    times, need = need_profile(trace, params)
    horizon = float(times[-1])
    early = need[times <= cold]
    warm = int(early.max()) if early.size else 0
    peak = int(need.max())
    spells = _spells_per_level(times.tolist(), need.astype(int).tolist())
    gpu_s = 0.0
    schedule: list[tuple[float, int]] = []
    for level in range(1, peak + 1):
        held = _bridged(spells.get(level, []), cold, warm_at_zero=level <= warm)
        for start, end, is_warm in held:
            ordered = 0.0 if is_warm else max(0.0, start - cold)
            gpu_s += min(end, horizon) - ordered
            if not is_warm:
                schedule.append((ordered, +1))
            schedule.append((end, -1))
    schedule.sort()
    return Floor(gpu_s, horizon, warm, peak, tuple(schedule))


def _spells_per_level(times: list[float], need: list[int]) -> dict[int, list[tuple[float, float]]]:
    """For each level k, the spells [start, end) during which n(t) >= k."""
    spells: dict[int, list[tuple[float, float]]] = {}
    opened: dict[int, float] = {}
    level = 0
    for t, n in zip(times, need, strict=True):
        for k in range(level + 1, n + 1):
            opened[k] = t
        for k in range(n + 1, level + 1):
            spells.setdefault(k, []).append((opened.pop(k), t))
        level = n
    return spells


def _bridged(
    spells: list[tuple[float, float]], cold: float, warm_at_zero: bool
) -> list[tuple[float, float, bool]]:
    """Spells with gaps shorter than a cold start joined; (start, end, began warm at t=0)."""
    held: list[tuple[float, float, bool]] = [(0.0, 0.0, True)] if warm_at_zero else []
    for start, end in spells:
        if held and start - held[-1][1] < cold:
            held[-1] = (held[-1][0], max(held[-1][1], end), held[-1][2])
        else:
            held.append((start, end, False))
    return held
