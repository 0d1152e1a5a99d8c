"""The figures of a run, comparable across policies: as a dict (for JSON) and as a table.

- SLO attainment: share of requests whose wait to start is <= the SLO (2 s);
  a request never served counts as a miss. "after 5 min": the same over the
  requests that arrive once the first 5 minutes are over (a policy woken from
  zero pays its first cold start within them).
- wait p50/p95/p99: from arrival to start of service (infinite if unserved).
- TTFT p50/p99 (estimate): wait + prefill + one decode step (see `cluster`).
- GPU-hours: pod-time alive in [0, horizon], cold starts included; "x floor"
  divides it by the clairvoyant floor's (see `oracle`).
- idle replica-hours: ready pod-time with no request in flight.
- scale events: changes of the replica count asked for; cold starts: pods created.
- With a pod profile and a token-latency objective (`ClusterParams.token_objective_ms`):
  "tokens ok", the share of output tokens after the first whose decode step took <= the
  objective, and "token p99", the step time 99 % of them came within (`batching`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from scaler.simulator import batching
from scaler.simulator.batching import share_within, token_percentile_ms
from scaler.simulator.engine import RunResult

# "after 5 min": requests arriving from then on, tokens decoded from then on
WARMUP_S = batching.WARMUP_S


@dataclass(frozen=True)
class Summary:
    policy: str
    requests: int
    unserved: int
    slo_wait_s: float
    slo_attainment: float
    slo_after_warmup: float
    wait_p50_s: float
    wait_p95_s: float
    wait_p99_s: float
    wait_max_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    gpu_hours: float
    x_floor: float
    idle_replica_hours: float
    scale_events: int
    cold_starts: int
    peak_replicas: int
    decisions: int
    sim_wall_s: float
    token_objective_ms: float | None = None  # None: no token side (no profile or objective)
    token_share: float | None = None
    token_share_after_warmup: float | None = None
    token_p99_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            k: _jsonable(v)
            for k, v in self.__dict__.items()
            if v is not None or k not in _TOKEN_FIELDS
        }


_TOKEN_FIELDS = ("token_objective_ms", "token_share", "token_share_after_warmup", "token_p99_ms")


def summarise(result: RunResult, slo_wait_s: float, floor_gpu_hours: float) -> Summary:
    waits = np.nan_to_num(result.wait_s, nan=np.inf)
    ttft = waits + result.params.first_token_s(result.trace)
    served = np.isfinite(waits)
    gpu_hours = result.accounts.gpu_s / 3600

    def pct(values: np.ndarray[Any, np.dtype[np.float64]], q: float) -> float:
        if values.size == 0:
            return 0.0
        return float(np.percentile(values, q, method="higher"))

    late = result.trace.arrival_s >= WARMUP_S
    objective = result.params.token_objective_ms
    tokens = result.tokens if objective is not None else None
    return Summary(
        policy=result.name,
        requests=int(waits.size),
        unserved=int((~served).sum()),
        slo_wait_s=slo_wait_s,
        slo_attainment=float((waits <= slo_wait_s).mean()) if waits.size else 1.0,
        slo_after_warmup=float((waits[late] <= slo_wait_s).mean()) if late.any() else 1.0,
        wait_p50_s=pct(waits, 50),
        wait_p95_s=pct(waits, 95),
        wait_p99_s=pct(waits, 99),
        wait_max_s=float(waits.max()) if waits.size else 0.0,
        ttft_p50_s=pct(ttft, 50),
        ttft_p99_s=pct(ttft, 99),
        gpu_hours=gpu_hours,
        x_floor=gpu_hours / floor_gpu_hours if floor_gpu_hours > 0 else float("inf"),
        idle_replica_hours=result.accounts.idle_s / 3600,
        scale_events=result.scale_events,
        cold_starts=result.accounts.cold_starts,
        peak_replicas=result.peak_replicas,
        decisions=result.decisions,
        sim_wall_s=result.wall_s,
        token_objective_ms=objective if tokens is not None else None,
        token_share=share_within(tokens, objective) if tokens is not None and objective else None,
        token_share_after_warmup=share_within(result.tokens_late, objective)
        if result.tokens_late is not None and objective
        else None,
        token_p99_ms=token_percentile_ms(tokens, 99) if tokens is not None else None,
    )


def _jsonable(value: object) -> object:
    if isinstance(value, float) and not np.isfinite(value):
        return None if np.isnan(value) else "inf"
    return value


_COLUMNS = (
    ("policy", "policy", "{}"),
    ("SLO met", "slo_attainment", "{:.2%}"),
    ("after 5 min", "slo_after_warmup", "{:.2%}"),
    ("wait p50", "wait_p50_s", "{:.2f}s"),
    ("p95", "wait_p95_s", "{:.2f}s"),
    ("p99", "wait_p99_s", "{:.2f}s"),
    ("TTFT p99", "ttft_p99_s", "{:.2f}s"),
    ("GPU-h", "gpu_hours", "{:.2f}"),
    ("x floor", "x_floor", "{:.2f}"),
    ("idle h", "idle_replica_hours", "{:.2f}"),
    ("scale ev", "scale_events", "{}"),
    ("cold st", "cold_starts", "{}"),
    ("peak", "peak_replicas", "{}"),
)
_TOKEN_COLUMNS = (
    ("tokens ok", "token_share", "{:.2%}"),
    ("tok after 5 min", "token_share_after_warmup", "{:.2%}"),
    ("token p99", "token_p99_ms", "{:.2f}ms"),
)


def table(summaries: list[Summary]) -> str:
    """A fixed-width table, one row per policy (with the token side when it was measured)."""
    columns: tuple[tuple[str, str, str], ...] = _COLUMNS
    if any(s.token_share is not None for s in summaries):
        columns = (*_COLUMNS[:2], *_TOKEN_COLUMNS, *_COLUMNS[2:])
    rows = [[title for title, _, _ in columns]]
    for s in summaries:
        rows.append([_cell(fmt, getattr(s, key)) for _, key, fmt in columns])
    widths = [max(len(r[c]) for r in rows) for c in range(len(columns))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(fmt: str, value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not np.isfinite(value):
        return "inf"
    return fmt.format(value)


@dataclass(frozen=True)
class Shift:
    """How the per-replica concurrency C moved after a change at `at_s`."""

    before: float  # median C over the 10 minutes before the change
    settled: float  # median C over the last 10 minutes of the run
    within_10pct_s: float | None  # from the change until C first came within 10 % of settled


def concurrency_shift(log: tuple[tuple[float, float], ...], at_s: float) -> Shift | None:
    """The move of C after a change at `at_s` (say the context doubling), from the
    decisions' (t, C); None without decisions on both sides."""
    before = [c for t, c in log if at_s - 600.0 <= t < at_s]
    after = [(t, c) for t, c in log if t >= at_s]
    if not before or not after:
        return None
    end = after[-1][0]
    settled = float(np.median([c for t, c in after if t >= end - 600.0]))
    reached = next((t - at_s for t, c in after if abs(c - settled) <= 0.1 * settled), None)
    return Shift(float(np.median(before)), settled, reached)
