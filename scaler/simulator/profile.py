"""Pod profiles: how long a replica takes per decode step as a function of what it decodes.

`simple` is no profile (`None` in `ClusterParams`): the constant model of `cluster`, a fixed
time per output token whatever the batch. A measured profile (`load`) is a table of step times
by sequences decoded together (B) and context length (L), read as follows:

- linear in B between the measured batch sizes of one context, and past the largest (or below
  the smallest) along the nearest measured segment;
- linear in L between the two measured contexts around it, and past the edges along the
  nearest two (decode reads each sequence's KV cache once a step: the time grows about
  linearly with context at a given B);
- B never exceeds the profile's `max_batch` (the replica's slots: an engine admits no more);
- prefill at `prefill_tokens_per_s`, the mean of the table's prefill measurements.

Worked example (h200-llama3-8b): B=64 at L=1,024 is measured, 8.457 ms a step; B=96 at
L=1,024 lies between 8.457 (64) and 12.028 (128): 10.24 ms; B=64 at L=2,560, halfway between
8.457 (L=1,024) and 14.175 (L=4,096): 11.32 ms.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path

from scaler.simulator.presets import PROFILES, SIMPLE

PROFILES_DIR = Path(__file__).parent / "profiles"


@dataclass(frozen=True)
class PodProfile:
    name: str
    contexts: tuple[float, ...]  # measured context lengths, ascending
    batches: tuple[tuple[float, ...], ...]  # per context: measured B, ascending
    step_ms_table: tuple[tuple[float, ...], ...]  # per context: ms a step at each B
    prefill_tokens_per_s: float
    max_batch: int

    def step_ms(self, sequences: float, context: float) -> float:
        """Milliseconds of one decode step for `sequences` decoded together at a mean
        `context` tokens (interpolated as the module says)."""
        b = min(sequences, float(self.max_batch))
        rows = [
            _linear(self.batches[i], self.step_ms_table[i], b) for i in range(len(self.contexts))
        ]
        if len(rows) == 1:
            return max(rows[0], 1e-3)
        return max(_linear(self.contexts, tuple(rows), context), 1e-3)

    def concurrency_within(self, objective_ms: float, context: float) -> float:
        """The largest B (1..max_batch) whose step stays within `objective_ms` at `context`
        (bisection; the step time rises with B)."""
        if self.step_ms(1.0, context) > objective_ms:
            return 1.0
        low, high = 1.0, float(self.max_batch)
        if self.step_ms(high, context) <= objective_ms:
            return high
        for _ in range(50):
            mid = (low + high) / 2
            low, high = (mid, high) if self.step_ms(mid, context) <= objective_ms else (low, mid)
        return low


def _linear(xs: tuple[float, ...], ys: tuple[float, ...], x: float) -> float:
    """Piecewise linear through (xs, ys), extended along the end segments."""
    if len(xs) == 1:
        return ys[0]
    i = min(max(bisect.bisect_right(xs, x) - 1, 0), len(xs) - 2)
    x0, x1, y0, y1 = xs[i], xs[i + 1], ys[i], ys[i + 1]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def load(name: str) -> PodProfile | None:
    """The profile called `name`: None for `simple`; a measured one from its table."""
    if name == SIMPLE:
        return None
    if name not in PROFILES:
        raise ValueError(f"pod profile = {name!r}, must be one of {', '.join(PROFILES)}")
    data = json.loads((PROFILES_DIR / f"{name}.json").read_text())
    by_context: dict[float, list[tuple[float, float]]] = {}
    for row in data["decode"]:
        by_context.setdefault(float(row["L"]), []).append((float(row["B"]), float(row["step_ms"])))
    contexts = tuple(sorted(by_context))
    rows = [sorted(by_context[c]) for c in contexts]
    prefill = [float(p["prefill_tokens_per_s"]) for p in data["prefill"]]
    return PodProfile(
        name=name,
        contexts=contexts,
        batches=tuple(tuple(b for b, _ in r) for r in rows),
        step_ms_table=tuple(tuple(t for _, t in r) for r in rows),
        prefill_tokens_per_s=sum(prefill) / len(prefill),
        max_batch=int(max(b for r in rows for b, _ in r)),
    )
