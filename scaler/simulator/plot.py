"""The PNG: demand, replicas and wait over time, one line per policy.

matplotlib is imported here only, when a plot is asked for, so the simulator
runs without it (`--no-plot`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scaler.simulator.engine import RunResult
from scaler.simulator.trace import FloatArray

_BIN_S = 60.0


def wait_p99_per_bin(result: RunResult, bin_s: float = _BIN_S) -> tuple[FloatArray, FloatArray]:
    """(bin start in minutes, p99 wait of the requests that arrived in it); unserved = inf."""
    waits = np.nan_to_num(result.wait_s, nan=np.inf)
    bins = (result.trace.arrival_s // bin_s).astype(np.int64)
    starts, p99 = [], []
    for b in np.unique(bins):
        starts.append(b * bin_s / 60)
        p99.append(float(np.percentile(waits[bins == b], 99, method="higher")))
    return np.array(starts), np.array(p99)


def plot(results: list[RunResult], path: Path, title: str, slo_wait_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, (ax_demand, ax_replicas, ax_wait) = plt.subplots(
        3, 1, figsize=(11, 9), sharex=True, gridspec_kw={"height_ratios": [1, 1.3, 1]}
    )
    first = results[0]
    minutes = first.timeline.t / 60
    arrivals = first.trace.arrival_s
    edges = np.arange(0, max(first.horizon_s, 1.0) + _BIN_S, _BIN_S)
    counts, _ = np.histogram(arrivals, bins=edges)
    ax_demand.step(edges[:-1] / 60, counts / _BIN_S, where="post", color="0.4", lw=1)
    ax_demand.set_ylabel("arrivals (req/s)")
    twin = ax_demand.twinx()
    twin.plot(minutes, first.timeline.demand, color="tab:orange", lw=0.8)
    twin.set_ylabel(f"demand of {first.name}\n(in flight + queued)", color="tab:orange")
    for result in results:
        ax_replicas.step(
            result.timeline.t / 60, result.timeline.desired, where="post", lw=1.2, label=result.name
        )
        bins, p99 = wait_p99_per_bin(result)
        shown = np.where(np.isfinite(p99), p99, np.nan)
        ax_wait.step(bins, np.maximum(shown, 0.01), where="post", lw=1, label=result.name)
    # A runaway baseline would flatten the others: clip at 3x the best-provisioned peak.
    tallest = min(
        max(float(r.timeline.desired.max(initial=0)) for r in results), 3.0 * _modest(results)
    )
    ax_replicas.set_ylim(0, max(tallest * 1.08, 1.0))
    ax_replicas.set_ylabel("replicas asked for\n(clipped at 3x fixed peak)")
    ax_replicas.legend(loc="upper right", fontsize=8, ncols=3)
    ax_wait.axhline(slo_wait_s, color="red", ls="--", lw=0.8, label=f"SLO {slo_wait_s:g} s")
    ax_wait.set_yscale("log")
    ax_wait.set_ylabel("wait to start, p99\nper minute (s)")
    ax_wait.set_xlabel("minutes")
    ax_wait.legend(loc="upper right", fontsize=8, ncols=3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _modest(results: list[RunResult]) -> float:
    """The smallest peak among the policies: the scale the plot is read at."""
    return min(max(float(r.timeline.desired.max(initial=0)), 1.0) for r in results)
