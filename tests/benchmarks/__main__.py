"""`make bench`: run every benchmark and write BENCHMARKS.md (figures, machine, command)."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

from tests.benchmarks import activation
from tests.benchmarks.common import machine


def main() -> int:
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print("activation latency (StreamIsActive)...", flush=True)
    act = activation.run()
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {started}; machine: {machine()}.",
        "Real redis-server, `python -m scaler serve`, real gRPC over loopback.",
        "",
        "## StreamIsActive push latency",
        "",
        f"{activation.IDLE_STREAMS} other streams open on idle targets meanwhile. "
        "wake: first item RPUSHed into an idle queue -> `true` received "
        f"({activation.WAKE_TRIALS} trials); sleep: scale-to-zero delay "
        f"({activation.ZERO_DELAY_S} s) over -> `false` received "
        f"({activation.SLEEP_TRIALS} trials). Target: p99 under 100 ms.",
        "",
        "| change | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|",
        f"| wake (first request at zero) | {act['wake_p50_ms']:.2f} | {act['wake_p99_ms']:.2f} "
        f"| {act['wake_max_ms']:.2f} |",
        f"| sleep (delay over) | {act['sleep_p50_ms']:.2f} | {act['sleep_p99_ms']:.2f} "
        f"| {act['sleep_max_ms']:.2f} |",
        "",
    ]
    Path("BENCHMARKS.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
