"""The scaler process: gRPC (ExternalScaler, health, reflection), /metrics, and the Redis link.

Health has two faces. The overall service ("") is SERVING while the process runs,
for the liveness probe: restarting the scaler cannot fix Redis. The
`externalscaler.ExternalScaler` service follows data freshness, for the readiness
probe: NOT_SERVING when the last successful Redis ping is older than twice the
health interval. On SIGTERM both go NOT_SERVING, open streams end cleanly, and
calls in flight get the shutdown grace period to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from scaler._generated import externalscaler_pb2 as pb
from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from scaler.clock import DecisionClock, RedisClock
from scaler.key_events import KeyEvents
from scaler.metrics_http import MetricsEndpoint
from scaler.redis_connect import REDIS_ERRORS, connect
from scaler.service import ExternalScalerService
from scaler.settings import Settings
from scaler.store import TargetStore
from scaler.telemetry import ScalerMetrics
from scaler.tls import server_credentials

if TYPE_CHECKING:
    from kubernetes.client import Configuration

    from scaler.pod_watch import PodWatch

log = logging.getLogger(__name__)

SCALER_SERVICE = pb.DESCRIPTOR.services_by_name["ExternalScaler"].full_name
_OVERALL = ""
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ScalerServer:
    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry | None = None,
        clock: DecisionClock | None = None,
        kube_config: Configuration | None = None,
    ) -> None:
        """`kube_config`: the Kubernetes API for the pod watch (settings.watch_pods);
        None: in-cluster or kubeconfig, found at start."""
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = ScalerMetrics(
            self.registry, settings.series_idle_s, settings.max_target_series
        )
        self.link = connect(settings)
        self.redis = self.link.client
        self.stopping = asyncio.Event()
        self.key_events = KeyEvents(self.link)
        # grpc-stubs predate grpc_health's asyncio servicer, hence the ignore.
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.service = ExternalScalerService(
            TargetStore(self.link, settings.redis_timeout_s),
            self.metrics,
            self.stopping,
            self.key_events,
            settings.stream_interval_s,
            clock if clock is not None else RedisClock(),
            settings.max_streams,
        )
        self.pod_watch: PodWatch | None = None
        if settings.watch_pods:
            # Imported only when on: the kubernetes client costs ~1 s and ~50 MB to import.
            from scaler.pod_watch import PodWatch

            self.pod_watch = PodWatch(
                self.redis, self.metrics, settings.redis_timeout_s, kube_config
            )
            self.service.on_target = self.pod_watch.serve
        self.grpc_port = 0
        self.metrics_port = 0
        self._grpc: grpc.aio.Server | None = None
        self._metrics_endpoint = MetricsEndpoint(self.registry)

    async def run(self, stop: asyncio.Event, on_started: Callable[[], None] | None = None) -> None:
        """Serve until `stop` is set, then shut down gracefully."""
        await self._start()
        if on_started is not None:
            on_started()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._track_redis_health())
            tasks.create_task(self.key_events.run(self.stopping))
            if self.pod_watch is not None:
                tasks.create_task(self.pod_watch.run(self.stopping))
            await stop.wait()
            await self._shutdown()
        # Closed only once the tasks above have ended: closing the pool under a command
        # in progress (a ping, the key-event subscription) fails it with no RedisError.
        await self.link.aclose()

    async def _start(self) -> None:
        limit = self.settings.max_message_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
            ]
        )
        pb_grpc.add_ExternalScalerServicer_to_server(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SCALER_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        address = f"{self.settings.bind_address}:{self.settings.grpc_port}"
        credentials = server_credentials(self.settings)  # files read now: bad ones fail start
        if credentials is None:
            self.grpc_port = server.add_insecure_port(address)
        else:
            self.grpc_port = server.add_secure_port(address, credentials)
        await server.start()
        self._grpc = server
        await self._metrics_endpoint.start(self.settings.bind_address, self.settings.metrics_port)
        self.metrics_port = self._metrics_endpoint.port
        await self.health.set(_OVERALL, _SERVING)
        await self.health.set(SCALER_SERVICE, _NOT_SERVING)  # until Redis first answers
        log.info(
            "serving KEDA external scaler on %s:%d (gRPC), metrics on :%d, redis %s",
            self.settings.bind_address,
            self.grpc_port,
            self.metrics_port,
            self.link.describe(),
        )

    async def _shutdown(self) -> None:
        log.info(
            "shutting down: streams end now, calls in flight get %gs",
            self.settings.shutdown_grace_s,
        )
        self.stopping.set()
        await self.health.enter_graceful_shutdown()
        if self._grpc is not None:
            await self._grpc.stop(self.settings.shutdown_grace_s)
        await self._metrics_endpoint.stop()

    async def _track_redis_health(self) -> None:
        interval = self.settings.health_interval_s
        last_ok: float | None = None
        status = _NOT_SERVING
        while not self.stopping.is_set():
            try:
                async with asyncio.timeout(self.settings.redis_timeout_s):
                    await self.link.ping()
                last_ok = time.monotonic()
                self.metrics.redis_last_success.set_to_current_time()
            except (*REDIS_ERRORS, TimeoutError) as exc:
                self.metrics.redis_errors.labels("ping").inc()
                if status == _SERVING:
                    log.warning("redis ping failed: %s", exc)
            fresh = last_ok is not None and time.monotonic() - last_ok <= 2 * interval
            new_status = _SERVING if fresh else _NOT_SERVING
            if new_status != status and not self.stopping.is_set():
                status = new_status
                await self.health.set(SCALER_SERVICE, status)
                log.info("readiness: %s", "SERVING" if fresh else "NOT_SERVING (redis stale)")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), interval)
