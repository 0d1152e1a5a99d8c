"""The run as a picture: demand and the scaler's metric above, replicas below."""

from __future__ import annotations

from pathlib import Path

from scaler.demo.timeline import Sample


def plot(samples: list[Sample], path: Path, title: str, traffic_end_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t_s for s in samples]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=[3, 2])
    top.plot(t, [s.demand for s in samples], label="demand (waiting + in flight)", lw=1.2)
    top.plot(
        t, [s.queue for s in samples], label="waiting in the gateway's streams", lw=0.8, alpha=0.8
    )
    top.step(t, [s.metric for s in samples], where="post", label="GetMetrics (scaler)", lw=1.5)
    top.set_ylabel("requests")
    top.legend(loc="upper right", fontsize=8)
    top.set_title(title, fontsize=10)
    bottom.step(t, [s.desired for s in samples], where="post", label="replicas (KEDA/HPA)", lw=1.5)
    bottom.step(t, [s.ready for s in samples], where="post", label="ready", lw=1.2)
    bottom.step(
        t, [s.ready + s.starting for s in samples], where="post", label="ready + starting", ls="--"
    )
    top_replicas = max([s.desired + s.draining for s in samples] + [1])
    bottom.fill_between(
        t,
        0,
        top_replicas + 0.5,
        where=[s.active for s in samples],
        step="post",
        color="tab:green",
        alpha=0.08,
        label="IsActive true",
    )
    for ax in (top, bottom):
        ax.axvline(traffic_end_s, color="grey", ls=":", lw=1)
        ax.grid(alpha=0.3)
    bottom.text(traffic_end_s, 0.2, " traffic ends", fontsize=8, color="grey")
    bottom.set_ylabel("replicas")
    bottom.set_xlabel("seconds (wall clock)")
    bottom.set_ylim(0, top_replicas + 0.8)
    bottom.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
