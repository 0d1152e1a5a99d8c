"""`python -m scaler demo`: the whole product on this machine, in about a minute.

redis-server, two scaler replicas, the real gateway, simulated Triton pods each
with a real sidecar and its worker, a KEDA/HPA emulator over real gRPC, and the
conversation trace sped up as HTTP traffic to the gateway; a live view, then
`summary.json`, `timeline.csv` and `demo.png` under --out. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# The names only: the demo itself (numpy, grpc clients, matplotlib) is imported in
# `main`, so `python -m scaler serve` never pays for it.
# The conversation trace shipped in the repository (scaler/simulator/traces/PROVENANCE.md).
DEFAULT_TRACE = (
    Path(__file__).parents[1] / "simulator" / "traces" / "AzureLLMInferenceTrace_conv.csv"
)
_SHORTHANDS = (
    ("--target-concurrency", "targetConcurrency", "8"),
    ("--scale-down-delay", "scaleDownDelaySeconds", "5"),
    ("--scale-to-zero-delay", "scaleToZeroDelaySeconds", "5"),
    ("--burst-window", "burstWindowSeconds", "1"),
)


def add_parser(commands: Any) -> None:
    """Register `demo` on the CLI's subparsers."""
    p: argparse.ArgumentParser = commands.add_parser(
        "demo",
        help="run the scaler end to end on this machine: Redis, scalers, pods, KEDA/HPA emulated",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    t = p.add_argument_group("traffic")
    t.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="missing: synthetic")
    t.add_argument("--trace-start-s", type=float, default=1200.0, help="slice start (trace s)")
    t.add_argument("--duration-s", type=float, default=60.0, help="traffic, wall seconds")
    t.add_argument("--speedup", type=float, default=20.0, help="trace seconds per wall second")
    t.add_argument("--rate-scale", type=float, default=0.5, help="thin (<1) or superpose (>1)")
    pods = p.add_argument_group("pods")
    pods.add_argument("--cold-start-s", type=float, default=3.0, help="created to ready")
    pods.add_argument("--slots", type=int, default=8, help="concurrent requests per pod")
    pods.add_argument("--prefill-tps", type=float, default=10_000.0)
    pods.add_argument("--decode-ms", type=float, default=30.0, help="per output token")
    pol = p.add_argument_group("our scaler (trigger metadata)")
    for flag, key, default in _SHORTHANDS:
        pol.add_argument(flag, dest=key, default=default, help=f"metadata {key}")
    pol.add_argument("--meta", action="append", default=[], help="any other KEY=VALUE")
    pol.add_argument("--scaler-replicas", type=int, default=2)
    k = p.add_argument_group("KEDA / HPA (shrunk to demo time)")
    k.add_argument("--polling-interval", type=float, default=1.0)
    k.add_argument("--cooldown-period", type=float, default=2.0)
    k.add_argument("--hpa-sync", type=float, default=1.0)
    k.add_argument("--min-replicas", type=int, default=0)
    k.add_argument("--max-replicas", type=int, default=8)
    k.add_argument("--scale-down-stabilization", type=float, default=0.0)
    k.add_argument("--rate-period", type=float, default=1.0, help="HPA scaling policy period")
    g = p.add_argument_group("gateway (its target file)")
    g.add_argument("--request-timeout", type=float, default=60.0, help="a request's deadline, s")
    g.add_argument("--queue-limit", type=int, default=10_000, help="waiting requests, then 429")
    o = p.add_argument_group("output")
    o.add_argument("--tail-s", type=float, default=60.0, help="max wait for zero after traffic")
    o.add_argument("--out", type=Path, default=Path("build/demo"))
    o.add_argument("--no-view", action="store_true", help="no live view")
    o.add_argument("--no-plot", action="store_true")


def main(args: argparse.Namespace) -> int:
    import json

    from scaler.demo.run import DemoConfig, run
    from scaler.demo.target import NAMESPACE, TARGET
    from scaler.target_config import MetadataError, parse_target_config

    # The pods' own cold start and service time, the 2 s SLO and the SLO hold's hour, in
    # demo time (the conversation trace's mean request holds a slot 6.45 s:
    # docs/simulator.md).
    metadata = {
        "queueType": "gateway",  # the gateway's streams of the target, every class
        "coldStartSeconds": f"{args.cold_start_s:g}",
        "serviceSeconds": f"{6.45 / args.speedup:.3g}",
        "sloWaitSeconds": f"{2.0 / args.speedup:.3g}",
        "sloHorizonSeconds": f"{3600.0 / args.speedup:.3g}",
    }
    for _, key, _ in _SHORTHANDS:
        metadata[key] = getattr(args, key)
    for item in args.meta:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"demo: --meta {item!r}, must be KEY=VALUE")
            return 2
        metadata[key.strip()] = value.strip()
    try:  # what the scaler would answer INVALID_ARGUMENT to, said before anything starts
        parse_target_config(NAMESPACE, TARGET, metadata)
    except MetadataError as exc:
        print(f"demo: bad trigger metadata: {exc}")
        return 2
    if args.trace is not None and not args.trace.exists():
        print(f"demo: no trace at {args.trace}: using a synthetic one of the same rate")
    config = DemoConfig(
        trace=args.trace,
        trace_start_s=args.trace_start_s,
        duration_s=args.duration_s,
        speedup=args.speedup,
        rate_scale=args.rate_scale,
        cold_start_s=args.cold_start_s,
        slots=args.slots,
        prefill_tps=args.prefill_tps,
        decode_ms=args.decode_ms,
        metadata=metadata,
        scaler_replicas=args.scaler_replicas,
        polling_interval_s=args.polling_interval,
        cooldown_period_s=args.cooldown_period,
        hpa_sync_s=args.hpa_sync,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        scale_down_stabilization_s=args.scale_down_stabilization,
        rate_period_s=args.rate_period,
        tail_s=args.tail_s,
        request_timeout_s=args.request_timeout,
        queue_limit=args.queue_limit,
        out=args.out,
        view=not args.no_view,
        plot=not args.no_plot,
    )
    summary = run(config)
    shown = {
        k: summary[k]
        for k in (
            "outcome",
            "duration_s",
            "books",
            "latency_s",
            "wait_s",
            "replicas",
            "fleet_vs_need",
            "timing_s",
        )
        if k in summary
    }
    print(json.dumps(shown, indent=2))
    print(f"demo: {summary['outcome']}; summary, timeline and plot under {config.out}/")
    return 0 if summary["outcome"] == "finished" else 1
