"""Command line: `python -m sidecar` reports this pod's Triton load to Redis until SIGTERM.

Wires the parts together and owns the process's lifecycle: the real clocks are
read here and nowhere else; /metrics and /healthz are served next to the report
loop; on SIGTERM (the pod is being deleted) the loop stops and the pod's report
is removed at once, so the scaler stops counting the pod before it is gone. Models
whose load cannot be measured (sidecar.selection) stop it with exit code 2, as a bad
setting does, once Triton has said what they are.

With WORKER=on the in-pod worker (sidecar.worker) runs beside the report loop, in this
process: it takes the target's queued requests from the moment the report loop's
readiness probe sees Triton ready, and the reports carry its exact in-flight count. On
SIGTERM the report is removed at once and the worker stops taking work, then finishes
what it holds within WORKER_GRACE_SECONDS. Its packages (tritonclient, numpy, aiohttp)
are imported only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from scaler.clock import MONOTONIC
from scaler.metrics_http import MetricsEndpoint
from scaler.redis_connect import AnyRedis, connect
from scaler.report_writer import ReportWriter
from scaler.reports import report_keys
from sidecar.config import ConfigError, SidecarConfig, load_config
from sidecar.readiness import readiness_probe
from sidecar.reporter import Reporter
from sidecar.scrape import MetricsScraper
from sidecar.selection import SelectionError
from sidecar.telemetry import SidecarMetrics

if TYPE_CHECKING:
    from sidecar.deletion_cost import DeletionCost
    from sidecar.worker import Worker

log = logging.getLogger("sidecar")


def main(argv: list[str] | None = None) -> int:
    try:
        config = load_config(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as exc:
        print(f"sidecar: bad configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, config.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(config))
    except ExceptionGroup as group:  # the TaskGroup's
        refused, rest = group.split(SelectionError)
        if refused is None:
            raise
        if rest is not None:
            log.error("also failed: %r", rest)
        print(f"sidecar: refused: {refused.exceptions[0]}", file=sys.stderr)
        return 2
    return 0


async def serve(config: SidecarConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    registry = CollectorRegistry()
    link = connect(config)  # calls fail fast: the reporter backs off on its own
    probe = readiness_probe(config)
    metrics = SidecarMetrics(registry)
    deletion_cost = await _deletion_cost(config, metrics) if config.deletion_cost else None
    ready = asyncio.Event()
    # The worker moves request bodies and reply chunks: bytes, on a link of its own.
    worker_link = connect(config, decode_responses=False) if config.worker else None
    worker = _worker(config, worker_link.client, registry, ready) if worker_link else None
    reporter = Reporter(
        config,
        probe,
        MetricsScraper(config.triton_metrics_url, config.triton_timeout_s),
        ReportWriter(link.client, report_keys(config.namespace, config.target)),
        metrics,
        clock=MONOTONIC,
        wall_at_start=time.time(),
        deletion_cost=deletion_cost,
        worker=worker,
        ready=ready,
    )
    endpoint = MetricsEndpoint(registry, health_path="/healthz", healthy=reporter.healthy)
    await endpoint.start(config.bind_address, config.metrics_port)
    log.info(
        "reporting %s/%s for target %s every %gs (reading triton %s every %gs, "
        "readiness over %s at %s); /metrics and /healthz on %s:%d",
        config.namespace,
        config.pod,
        config.target,
        config.interval_s,
        config.triton_metrics_url,
        config.poll_interval_s,
        config.readiness,
        config.triton_grpc_url if config.readiness == "grpc" else config.triton_http_url,
        config.bind_address,
        endpoint.port,
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            reports = tasks.create_task(reporter.run(stop))
            working = tasks.create_task(worker.run(stop)) if worker is not None else None
            await stop.wait()
            # The pod is going away: stop mid-tick rather than finish it, so nothing
            # is written after the report is removed.
            reports.cancel()
            log.info("SIGTERM: removing this pod's report")
            await reporter.remove()
            if working is not None:
                await working  # stops taking at once, then drains within its grace
    finally:
        if worker is not None:
            await worker.close()
        if worker_link is not None:
            await worker_link.aclose()
        if deletion_cost is not None:
            await deletion_cost.close()
        await endpoint.stop()
        with contextlib.suppress(Exception):  # shutting down: nothing left to tell
            await probe.close()
        await link.aclose()


def _worker(
    config: SidecarConfig, client: AnyRedis, registry: CollectorRegistry, ready: asyncio.Event
) -> Worker:
    """The in-pod worker, with the packages only it needs imported here."""
    from sidecar.telemetry import WorkerMetrics
    from sidecar.worker import Worker, WorkerSettings
    from sidecar.worker_engine import Engine

    settings = WorkerSettings(
        namespace=config.namespace,
        target=config.target,
        consumer=config.pod,
        slots=config.worker_slots,
        claim_idle_s=config.claim_idle_s,
        grace_s=config.worker_grace_s,
        # A blocking read must end within the Redis call bound.
        block_s=min(0.5, config.redis_timeout_s / 2),
    )
    engine = Engine(config.triton_http_url, config.openai_url)
    log.info(
        "worker on: %d slots for %s/%s, consumer %s, claim idle %g s, grace %g s",
        settings.slots,
        config.namespace,
        config.target,
        settings.consumer,
        settings.claim_idle_s,
        settings.grace_s,
    )
    return Worker(client, settings, engine, WorkerMetrics(registry), ready)


async def _deletion_cost(config: SidecarConfig, metrics: SidecarMetrics) -> DeletionCost | None:
    """The annotation's keeper, or None outside a pod: reports come first."""
    from sidecar.deletion_cost import API_TIMEOUT_S, ApiAccess, ApiError, PodAnnotation

    try:
        access = ApiAccess.in_cluster(os.environ)
        annotation = PodAnnotation(access, config.namespace, config.pod, API_TIMEOUT_S)
    except (ApiError, OSError) as exc:  # OSError: a CA file ssl cannot load
        log.error("pod-deletion-cost off: %s", exc)
        return None
    log.info("keeping %s/%s's pod-deletion-cost at its load", config.namespace, config.pod)
    return DeletionCost(annotation, metrics)


if __name__ == "__main__":
    sys.exit(main())
