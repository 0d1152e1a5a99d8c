"""`python -m scaler simulate`, the run behind scaler.simulator.cli's parser (whose docstring
says what it writes): arguments -> trace and knobs -> comparison or sweep -> outputs."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from typing import Any

from scaler.simulator.cluster import ClusterParams, ColdStart
from scaler.simulator.compare import Knobs, compare
from scaler.simulator.keda_hpa import HpaBehavior
from scaler.simulator.presets import BASELINES, SCALEDOBJECTS, SHORTHANDS
from scaler.simulator.profile import load as load_profile
from scaler.simulator.summary import WARMUP_S, concurrency_shift, table
from scaler.simulator.sweep import (
    DEFAULT_GRID,
    break_even,
    break_even_table,
    frontier_table,
    parse_grid,
    sweep,
)
from scaler.simulator.trace import (
    Trace,
    TraceError,
    bursty,
    diurnal,
    load_csv,
    repeat_to,
    scale_context_after,
    scale_rate,
    starting_at,
    surge,
)
from scaler.target_config import MetadataError


def main(args: argparse.Namespace) -> int:
    try:
        trace = _trace(args)
        knobs = _knobs(args)
        knobs.target_config()  # refuse bad metadata before any work
        baselines = _baselines(args.baselines)
        fixed = _fixed(args.fixed_replicas)
        grid = parse_grid(args.grid) if args.grid else DEFAULT_GRID
    except (TraceError, MetadataError, ValueError, OSError) as exc:
        print(f"simulate: {exc}")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    print(_describe(trace, knobs))
    if args.sweep:
        return _sweep(trace, knobs, grid, args)
    started = time.perf_counter()
    floor, results, summaries = compare(trace, knobs, baselines, fixed)
    learned_s = results[0].learned.mean_s
    elapsed = time.perf_counter() - started
    print(table(summaries))
    print(
        f"adaptive policies start from {knobs.min_replicas} replicas; fixed fleets start warm; "
        f"the oracle starts from its clairvoyant warm fleet ({floor.warm_replicas}); ours with "
        f"the service time the day before taught ({learned_s:.2f} s), first-wake with none"
    )
    learned = [c for t, c in results[0].concurrency if t >= WARMUP_S]
    if learned:
        print(
            f"{results[0].name}'s per-replica concurrency after the first "
            f"{WARMUP_S / 60:g} minutes: median {statistics.median(learned):.1f}, "
            f"{min(learned):.1f} to {max(learned):.1f}"
        )
    shift = None
    if args.context_scale_after is not None:
        shift = concurrency_shift(results[0].concurrency, args.context_scale_after)
    if shift is not None:
        within = "never" if shift.within_10pct_s is None else f"{shift.within_10pct_s:.0f} s"
        print(
            f"context x{args.context_scale:g} at {args.context_scale_after:g} s: "
            f"{results[0].name}'s per-replica concurrency {shift.before:.1f} before, settled at "
            f"{shift.settled:.1f}; within 10 % of it {within} after the change"
        )
    print(
        f"floor: {floor.gpu_hours:.2f} GPU-h (warm start {floor.warm_replicas}, "
        f"peak {floor.peak_replicas} replicas, horizon {floor.horizon_s / 3600:.2f} h); "
        f"simulated {len(results)} policies in {elapsed:.2f} s"
    )
    report = {
        "trace": {"name": trace.name, "requests": len(trace), "span_s": trace.span_s},
        "model": _model(knobs),
        "floor_gpu_hours": floor.gpu_hours,
        "policies": [s.as_dict() for s in summaries],
        "wall_s": elapsed,
    }
    if learned:
        report["replica_concurrency_after_warmup"] = {
            "median": statistics.median(learned),
            "min": min(learned),
            "max": max(learned),
        }
    if shift is not None:
        report["concurrency_shift"] = shift.__dict__
    (args.out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    if not args.no_plot:
        from scaler.simulator.plot import plot

        title = (
            f"{trace.name}: {len(trace):,} requests; "
            f"{knobs.cluster.slots_per_replica} slots/replica, "
            f"cold start {knobs.cluster.cold_start}; SLO wait <= {knobs.slo_wait_s:g} s"
        )
        plot(results, args.out / "simulate.png", title, knobs.slo_wait_s)
    print(f"wrote {args.out / 'summary.json'}" + ("" if args.no_plot else " and simulate.png"))
    return 0


def _sweep(
    trace: Trace, knobs: Knobs, grid: dict[str, tuple[str, ...]], args: argparse.Namespace
) -> int:
    started = time.perf_counter()
    try:
        points = sweep(trace, knobs, grid, args.slo_target)
    except (MetadataError, ValueError) as exc:
        print(f"simulate: {exc}")
        return 2
    print(frontier_table(points, args.slo_target))
    report: dict[str, Any] = {
        "slo_target": args.slo_target,
        "points": [
            {
                **p.setting,
                **p.summary.as_dict(),
                "on_frontier": p.on_frontier,
                "cheapest_meeting_slo": p.cheapest_meeting_slo,
            }
            for p in points
        ],
    }
    if not args.no_break_even:
        levels, even = break_even(trace, knobs)
        print()
        print(break_even_table(levels, even))
        report["break_even_req_per_s"] = even
        report["levels"] = [
            {
                "req_per_s": lv.rate,
                "to_zero": lv.to_zero.as_dict(),
                "always_on": lv.always_on.as_dict(),
            }
            for lv in levels
        ]
    (args.out / "sweep.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"sweep of {len(points)} settings in {time.perf_counter() - started:.1f} s; "
        f"wrote {args.out / 'sweep.json'}"
    )
    return 0


def _trace(args: argparse.Namespace) -> Trace:
    if (args.trace is None) == (args.synthetic is None):
        raise ValueError("give exactly one of --trace FILE or --synthetic bursty|diurnal|surge")
    if args.trace is not None:
        trace = load_csv(args.trace)
    elif args.synthetic == "diurnal":
        trace = diurnal(_or(args.span_s, 86400.0), args.synthetic_rate, seed=args.seed)
    elif args.synthetic == "surge":
        trace = surge(_or(args.span_s, 3600.0), args.synthetic_rate, seed=args.seed)
    else:
        trace = bursty(_or(args.span_s, 3600.0), args.synthetic_rate, seed=args.seed)
    if args.start_s is not None:
        trace = starting_at(trace, args.start_s)
    if args.rate_scale != 1.0:
        trace = scale_rate(trace, args.rate_scale, seed=args.seed)
    if args.repeat_to_s:
        trace = repeat_to(trace, args.repeat_to_s)
    if args.context_scale_after is not None:
        trace = scale_context_after(trace, args.context_scale_after, args.context_scale)
    if len(trace) == 0:
        raise ValueError("the trace has no requests")
    return trace


def _knobs(args: argparse.Namespace) -> Knobs:
    metadata = {key: getattr(args, key) for _, key, _ in SHORTHANDS if getattr(args, key)}
    for item in args.meta:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--meta {item!r}, must be KEY=VALUE")
        metadata[key] = value
    if args.token_latency_ms is not None:
        metadata["tokenLatencyMs"] = f"{args.token_latency_ms:g}"
    profile = load_profile(args.pod_profile)
    slots = args.slots if args.slots is not None else profile.max_batch if profile else 8
    prefill = _or(args.prefill_tps, profile.prefill_tokens_per_s if profile else 10_000.0)
    if slots < 1 or prefill <= 0 or args.decode_ms < 0:
        raise ValueError("--slots must be >= 1, --prefill-tps > 0, --decode-ms >= 0")
    scored = args.score_token_ms if args.score_token_ms is not None else args.token_latency_ms
    if scored is not None and scored <= 0:
        raise ValueError(f"--score-token-ms = {scored:g}, must be > 0")
    cluster = ClusterParams(
        slots_per_replica=slots,
        prefill_tokens_per_s=prefill,
        decode_s_per_token=args.decode_ms / 1000,
        cold_start=ColdStart.parse(args.cold_start),
        profile=profile,
        token_objective_ms=scored,
    )
    poll, cooldown, stabilization = SCALEDOBJECTS[args.scaledobject]
    return replace(
        Knobs(),
        metadata=metadata,
        polling_interval_s=_or(args.polling_interval, poll),
        cooldown_period_s=_or(args.cooldown_period, cooldown),
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        behavior=HpaBehavior(
            scale_down_stabilization_s=_or(args.scale_down_stabilization, stabilization)
        ),
        stream=not args.no_stream,
        cluster=cluster,
        slo_wait_s=args.slo_wait_s,
        redis_list_length=args.redis_list_length,
        seed=args.seed,
    )


def _or(given: float | None, default: float) -> float:
    return default if given is None else given


def _baselines(spec: str) -> tuple[str, ...]:
    if spec.strip() in ("", "none"):
        return ()
    names = tuple(n.strip() for n in spec.split(","))
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"--baselines {','.join(unknown)}: must be among {', '.join(BASELINES)}")
    return names


def _fixed(spec: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(n) for n in spec.split(",") if n.strip())
    except ValueError:
        sizes = (-1,)
    if any(n < 1 for n in sizes):
        raise ValueError(f"--fixed-replicas {spec!r}: must be replica counts >= 1, e.g. 10,11,12")
    return sizes


def _model(knobs: Knobs) -> dict[str, Any]:
    c = knobs.cluster
    return {
        "metadata": dict(knobs.metadata),
        "polling_interval_s": knobs.polling_interval_s,
        "cooldown_period_s": knobs.cooldown_period_s,
        "min_replicas": knobs.min_replicas,
        "max_replicas": knobs.max_replicas,
        "scale_down_stabilization_s": knobs.behavior.scale_down_stabilization_s,
        "stream_is_active": knobs.stream,
        "slots_per_replica": c.slots_per_replica,
        "prefill_tokens_per_s": c.prefill_tokens_per_s,
        "decode_s_per_token": c.decode_s_per_token,
        "cold_start": str(c.cold_start),
        "slo_wait_s": knobs.slo_wait_s,
    } | (
        {}
        if c.profile is None
        else {"pod_profile": c.profile.name, "token_objective_ms": c.token_objective_ms}
    )


def _describe(trace: Trace, knobs: Knobs) -> str:
    c = knobs.cluster
    config = knobs.target_config()
    decode = (
        f"decode {c.decode_s_per_token * 1000:g} ms/token"
        if c.profile is None
        else f"decode by the {c.profile.name} profile, continuous batching"
    )
    prefill = c.prefill_tokens_per_s if c.profile is None else c.profile.prefill_tokens_per_s
    objective = (
        "" if config.token_latency_ms is None else (f", tokenLatencyMs {config.token_latency_ms:g}")
    )
    return (
        f"trace {trace.name}: {len(trace):,} requests over {trace.span_s / 3600:.2f} h "
        f"({trace.mean_rate:.2f} req/s)\n"
        f"pods: {c.slots_per_replica} slots, prefill {prefill:g} tok/s, "
        f"{decode}, cold start {c.cold_start}\n"
        f"ours: targetConcurrency {config.target_concurrency:g} x targetUtilization "
        f"{config.target_utilization:g}{objective}, "
        f"scaleDownDelay {config.scale_down_delay_s:g} s, "
        f"scaleToZeroDelay {config.scale_to_zero_delay_s:g} s; KEDA poll "
        f"{knobs.polling_interval_s:g} s, cooldown {knobs.cooldown_period_s:g} s, "
        f"replicas [{knobs.min_replicas}; {knobs.max_replicas}]"
        f"{', StreamIsActive' if knobs.stream else ''}\n"
    )
