"""`simulate --sweep`: a grid of knobs, the cost/SLO frontier, and the scale-to-zero break-even.

Grid keys are trigger metadata keys (`targetConcurrency`, `scaleDownDelaySeconds`,
...; validated as the server validates them) or the ScaledObject's own fields
`minReplicaCount`, `pollingInterval`, `cooldownPeriod`, and the HPA's
`scaleDownStabilizationSeconds`. Every point runs our scaler on the same trace
and is costed against the same clairvoyant floor, our scaler with the service time
learned the day before (`compare.yesterday`), as in the comparison.

- Frontier: the settings no other setting beats on both GPU-hours and SLO
  attainment (Pareto). The cheapest setting whose attainment reaches the
  target (say 99 % of requests wait <= 2 s) is marked.
- Break-even: the trace thinned to lower and lower rates, run with
  minReplicaCount 0 (scale to zero) and 1 (always on). Scale-to-zero saves
  GPU only while silences outlast the time to zero (docs/decision.md, rule 4);
  the break-even is the lowest rate from which always-on costs no more than
  1 % above scale-to-zero, and, never cold-starting, serves at least as well.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from scaler.simulator.compare import Knobs, floor_of, ours, run_policy, yesterday_run
from scaler.simulator.summary import Summary, summarise
from scaler.simulator.trace import Trace, scale_rate
from scaler.target_config import METADATA_KEYS

DEFAULT_GRID: dict[str, tuple[str, ...]] = {
    "targetConcurrency": ("6", "8", "10"),
    "scaleDownDelaySeconds": ("0", "60", "120", "300"),
    "minReplicaCount": ("0", "1", "4"),
}
BREAK_EVEN_FACTORS = tuple(4.0**-k for k in range(8))  # 1 down to 1/16384
_SAVING_THAT_COUNTS = 0.01


@dataclass(frozen=True)
class Point:
    setting: Mapping[str, str]
    summary: Summary
    on_frontier: bool = False
    cheapest_meeting_slo: bool = False


@dataclass(frozen=True)
class Level:
    rate: float  # requests per second
    to_zero: Summary
    always_on: Summary


def apply(knobs: Knobs, key: str, value: str) -> Knobs:
    if key in METADATA_KEYS:
        return knobs.with_metadata(**{key: value})
    if key == "minReplicaCount":
        return replace(knobs, min_replicas=int(value))
    if key == "pollingInterval":
        return replace(knobs, polling_interval_s=float(value))
    if key == "cooldownPeriod":
        return replace(knobs, cooldown_period_s=float(value))
    if key == "scaleDownStabilizationSeconds":
        behavior = replace(knobs.behavior, scale_down_stabilization_s=float(value))
        return replace(knobs, behavior=behavior)
    known = [
        *METADATA_KEYS,
        "minReplicaCount",
        "pollingInterval",
        "cooldownPeriod",
        "scaleDownStabilizationSeconds",
    ]
    raise ValueError(f"sweep key = {key!r}, must be one of {', '.join(known)}")


def parse_grid(specs: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """['targetConcurrency=6,8', ...] -> {'targetConcurrency': ('6', '8'), ...}."""
    grid: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not values:
            raise ValueError(f"grid = {spec!r}, must be KEY=V1,V2,...")
        grid[key.strip()] = tuple(v.strip() for v in values.split(","))
    return grid


def sweep(
    trace: Trace, knobs: Knobs, grid: Mapping[str, Sequence[str]], slo_target: float
) -> list[Point]:
    floor = floor_of(trace, knobs)
    before = yesterday_run(trace, knobs, floor)
    points = []
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values, strict=True))
        tuned = knobs
        for key, value in setting.items():
            tuned = apply(tuned, key, value)
        result = run_policy(trace, tuned, ours(tuned), floor, before.served, before.curve)
        points.append(Point(setting, summarise(result, knobs.slo_wait_s, floor.gpu_hours)))
    return mark(points, slo_target)


def mark(points: list[Point], slo_target: float) -> list[Point]:
    """Points sorted by GPU-hours, with the frontier and the cheapest meeting the target marked."""
    points = sorted(points, key=lambda p: (p.summary.gpu_hours, -p.summary.slo_attainment))
    meeting = [p for p in points if _meets(p.summary, slo_target)]
    cheapest = meeting[0] if meeting else None
    marked, best = [], -1.0
    for p in points:  # cheapest first: on the frontier if it serves better than all cheaper
        frontier = p.summary.slo_attainment > best
        best = max(best, p.summary.slo_attainment)
        marked.append(replace(p, on_frontier=frontier, cheapest_meeting_slo=p is cheapest))
    return marked


def _meets(summary: Summary, share: float) -> bool:
    """The target met: the share of all tokens within the token objective when the runs are
    scored by one (the workers admit at most what a replica is sized for, so a wake's
    backlog waits in the queue rather than slowing tokens), else the share of requests
    within the wait."""
    if summary.token_share is not None:
        return summary.token_share >= share
    return summary.slo_attainment >= share


def break_even(
    trace: Trace, knobs: Knobs, factors: Sequence[float] = BREAK_EVEN_FACTORS
) -> tuple[list[Level], float | None]:
    """Levels from busiest to quietest, and the break-even rate (None: scale-to-zero
    saved GPU even at the busiest level)."""
    levels = []
    for factor in factors:
        scaled = scale_rate(trace, factor, seed=knobs.seed)
        if len(scaled) < 2:
            continue
        floor = floor_of(scaled, knobs)
        before = yesterday_run(scaled, knobs, floor)
        runs = []
        for min_replicas in (0, 1):
            tuned = replace(knobs, min_replicas=min_replicas)
            result = run_policy(scaled, tuned, ours(tuned), floor, before.served, before.curve)
            runs.append(summarise(result, knobs.slo_wait_s, floor.gpu_hours))
        # The rate over the original span: a thinned trace ends early by chance.
        levels.append(Level(len(scaled) / max(trace.span_s, 1e-9), runs[0], runs[1]))
    # From the busiest level down: the break-even is the quietest rate above which
    # scale-to-zero never saved more than 1 %.
    even = None
    for level in sorted(levels, key=lambda lv: -lv.rate):
        if _saving(level) > _SAVING_THAT_COUNTS:
            break
        even = level.rate
    return levels, even


def _saving(level: Level) -> float:
    return 1 - level.to_zero.gpu_hours / level.always_on.gpu_hours


def frontier_table(points: list[Point], slo_target: float) -> str:
    keys = list(points[0].setting) if points else []
    tokens = any(p.summary.token_share is not None for p in points)
    head = [*keys, "SLO met", *(["tokens ok", "after 5 min"] if tokens else []), "p99 wait"]
    head += ["GPU-h"]
    head += ["x floor", "scale ev", ""]
    met = "of all tokens within the objective" if tokens else "SLO met"
    rows = [head]
    for p in points:
        s = p.summary
        note = " ".join(
            n
            for n, on in (
                ("frontier", p.on_frontier),
                (f"<- cheapest with >= {slo_target:.1%} {met}", p.cheapest_meeting_slo),
            )
            if on
        )
        rows.append(
            [
                *p.setting.values(),
                f"{s.slo_attainment:.2%}",
                *(
                    [f"{s.token_share or 0.0:.2%}", f"{s.token_share_after_warmup or 0.0:.2%}"]
                    if tokens
                    else []
                ),
                f"{s.wait_p99_s:.2f}s",
                f"{s.gpu_hours:.2f}",
                f"{s.x_floor:.2f}",
                str(s.scale_events),
                note,
            ]
        )
    return _aligned(rows)


def break_even_table(levels: list[Level], even: float | None) -> str:
    rows = [
        [
            "req/s",
            "to zero: GPU-h",
            "SLO met",
            "cold st",
            "always on: GPU-h",
            "SLO met",
            "saving",
        ]
    ]
    for lv in levels:
        saving = _saving(lv)
        rows.append(
            [
                f"{lv.rate:.4g}",
                f"{lv.to_zero.gpu_hours:.2f}",
                f"{lv.to_zero.slo_attainment:.2%}",
                str(lv.to_zero.cold_starts),
                f"{lv.always_on.gpu_hours:.2f}",
                f"{lv.always_on.slo_attainment:.2%}",
                f"{saving:.1%}",
            ]
        )
    quietest = min((lv.rate for lv in levels), default=0.0)
    if even is None:
        verdict = "break-even: above the busiest level tried (scale-to-zero saved GPU at each)"
    elif even <= quietest:
        verdict = (
            f"break-even: below {quietest:.4g} req/s, the quietest level tried: scale-to-zero "
            "saved nothing at any level (silences never outlasted its delays)"
        )
    else:
        verdict = (
            f"break-even: from {even:.4g} req/s up, always-on costs within 1% of "
            "scale-to-zero and never cold-starts from zero; below, scale-to-zero saves GPU"
        )
    return _aligned(rows) + "\n" + verdict


def _aligned(rows: list[list[str]]) -> str:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            v.rjust(w) if c else v.ljust(w) for c, (v, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )
