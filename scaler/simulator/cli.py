"""`python -m scaler simulate`: arguments -> trace and knobs -> comparison or sweep -> outputs.

Writes `summary.json` (and `sweep.json` with --sweep) and `simulate.png` under
--out, and prints the same figures as tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# The names only (scaler.simulator.presets): importing the simulation itself (numpy,
# the models) is left to `main`, so `python -m scaler serve` never pays for it.
from scaler.simulator.presets import BASELINES, PROFILES, SCALEDOBJECTS, SHORTHANDS, SIMPLE


def add_parser(commands: Any) -> None:
    """Register `simulate` on the CLI's subparsers."""
    p: argparse.ArgumentParser = commands.add_parser(
        "simulate",
        help="replay a request trace through the scaling decision and compare with baselines",
        description=__doc__,
    )
    src = p.add_argument_group("traffic")
    src.add_argument("--trace", type=Path, help="CSV: Azure LLM trace layout or arrival_s,...")
    src.add_argument(
        "--synthetic",
        choices=["bursty", "diurnal", "surge"],
        help="generate traffic instead: bursty (stationary), diurnal (bursty, level of a day) "
        "or surge (a steady --synthetic-rate and one or two one-off surges an hour)",
    )
    src.add_argument("--synthetic-rate", type=float, default=1.0, help="mean req/s (synthetic)")
    src.add_argument(
        "--span-s", type=float, help="synthetic span (s): an hour (bursty, surge), a day (diurnal)"
    )
    src.add_argument(
        "--start-s", type=float, help="begin this far into the trace (s): a wake into its traffic"
    )
    src.add_argument("--repeat-to-s", type=float, help="tile the trace to this span (s)")
    src.add_argument("--rate-scale", type=float, default=1.0, help="thin (<1) or superpose (>1)")
    src.add_argument("--seed", type=int, default=0)
    src.add_argument(
        "--context-scale-after",
        type=float,
        metavar="SECONDS",
        help="multiply the input tokens of the requests from then on by --context-scale",
    )
    src.add_argument(
        "--context-scale", type=float, default=2.0, help="that factor (2: the context doubles)"
    )
    pol = p.add_argument_group("our scaler (trigger metadata)")
    for flag, key, default in SHORTHANDS:
        pol.add_argument(flag, dest=key, default=default, help=f"metadata {key}")
    pol.add_argument("--meta", action="append", default=[], help="any other KEY=VALUE")
    pol.add_argument(
        "--token-latency-ms",
        type=float,
        help="metadata tokenLatencyMs (size replicas by it); the runs are scored by it too",
    )
    keda = p.add_argument_group(
        "KEDA / HPA (defaults: the README's ScaledObject; --scaledobject keda-defaults: KEDA's)"
    )
    keda.add_argument(
        "--scaledobject",
        choices=sorted(SCALEDOBJECTS),
        default="recommended",
        help="poll, cooldown and HPA scale-down stabilisation as a set; the flags below win",
    )
    keda.add_argument("--polling-interval", type=float, help="seconds (15; KEDA's default 30)")
    keda.add_argument("--cooldown-period", type=float, help="seconds (15; KEDA's default 300)")
    keda.add_argument("--min-replicas", type=int, default=0)
    keda.add_argument("--max-replicas", type=int, default=100)
    keda.add_argument(
        "--scale-down-stabilization", type=float, help="seconds (0; the HPA's default 300)"
    )
    keda.add_argument("--no-stream", action="store_true", help="trigger type external (no push)")
    keda.add_argument("--redis-list-length", type=float, default=5.0, help="redis-list baseline")
    pods = p.add_argument_group("pods")
    pods.add_argument(
        "--pod-profile",
        choices=PROFILES,
        default=SIMPLE,
        help="decode time per step: simple (constant --decode-ms), or a measured table of "
        "step time by batch and context (continuous batching; docs/simulator.md)",
    )
    pods.add_argument(
        "--slots", type=int, help="concurrent requests per replica (8; a profile: its max batch)"
    )
    pods.add_argument(
        "--prefill-tps", type=float, help="prefill tokens/s (10,000; a profile: its own)"
    )
    pods.add_argument("--decode-ms", type=float, default=30.0, help="ms per output token")
    pods.add_argument("--cold-start", default="60", help="'60', '45-90', 'lognormal:60:0.3'")
    out = p.add_argument_group("output")
    # Named apart from the trigger keys sloWaitSeconds and sloTarget (--slo-wait, --meta):
    # these only score the runs, every policy by the same measure.
    out.add_argument(
        "--score-wait-s",
        dest="slo_wait_s",
        metavar="SECONDS",
        type=float,
        default=2.0,
        help="the SLO runs are scored by: the wait to start, s (not the key sloWaitSeconds)",
    )
    out.add_argument(
        "--score-share",
        dest="slo_target",
        metavar="SHARE",
        type=float,
        default=0.99,
        help="the share of requests that must meet it, in the sweep (not the key sloTarget)",
    )
    out.add_argument(
        "--score-token-ms",
        type=float,
        metavar="MS",
        help="score the runs by the share of tokens within this step time (a pod profile; "
        "default --token-latency-ms), without sizing by it",
    )
    out.add_argument("--baselines", default=",".join(BASELINES), help="comma list, or 'none'")
    out.add_argument(
        "--fixed-replicas", default="", help="also fixed fleets of these sizes, e.g. 10,11,12"
    )
    out.add_argument("--out", type=Path, default=Path("build/simulate"))
    out.add_argument("--no-plot", action="store_true")
    sw = p.add_argument_group("sweep")
    sw.add_argument("--sweep", action="store_true", help="try a grid of knobs")
    sw.add_argument("--grid", action="append", default=[], help="KEY=V1,V2 (repeatable)")
    sw.add_argument("--no-break-even", action="store_true")


def main(args: argparse.Namespace) -> int:
    from scaler.simulator import run

    return run.main(args)
