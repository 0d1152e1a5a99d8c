"""This pod's `controller.kubernetes.io/pod-deletion-cost`, kept in step with its load.

On scale-down the ReplicaSet removes, among pods equally ready, the one with the
lowest deletion cost first. With cost = the requests the pod holds, an idle pod
(cost 0) goes before one mid-generation, whose requests would otherwise be cut or
drained for minutes.

- The cost: in-flight + waiting requests, rounded to a whole request and capped,
  e.g. 5.4 in flight + 2 waiting -> 7; a starting pod holds none -> 0. No reading
  of Triton: no cost is offered (missing data is not zero).
- Patches are API writes that every pod watcher (the ReplicaSet controller, the
  endpoints controller, the scaler's pod watch) receives, and Kubernetes warns
  against updating this annotation often. So a new cost is patched only when it
  moved meaningfully from the one last patched: between idle and busy (the order
  that matters most), or by at least MIN_STEP requests and RELATIVE_STEP of the
  larger; e.g. 8 -> 10 is not (2 < 2.5), 8 -> 11 is, 1 -> 2 is not, 0 -> 1 is.
  And at most once per MIN_PATCH_INTERVAL_S: a change within the interval waits
  for its end, and is patched then if it still stands. Scale-down acts only after
  the scaler's scaleDownDelaySeconds (120 s), so a cost 10 s old is still current.
- The first patch of a run reads the pod first (GET), so a sidecar restart does
  not rewrite the value already there.

The kubernetes client is synchronous: its calls run in a worker thread, one at a
time, in the background, so a slow API server never delays a pod report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any

from kubernetes import client as k8s

from sidecar.telemetry import SidecarMetrics

log = logging.getLogger(__name__)

ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
MIN_PATCH_INTERVAL_S = 10.0
MIN_STEP = 2
RELATIVE_STEP = 0.25
MAX_COST = 1_000_000  # the annotation is an int32; no pod holds a million requests
API_TIMEOUT_S = 5.0  # bound on one API call; in the background, it delays no report


def cost_of_load(inflight: float, waiting: float) -> int:
    """Requests the pod holds, rounded half up: 0.4 -> 0 (idle), 0.5 -> 1, 7.5 -> 8."""
    load = inflight + waiting
    if not math.isfinite(load) or load <= 0:
        return 0
    return min(MAX_COST, math.floor(load + 0.5))


def moved_meaningfully(patched: int | None, cost: int) -> bool:
    if patched is None:
        return True
    if (patched == 0) != (cost == 0):
        return True
    return abs(cost - patched) >= max(MIN_STEP, RELATIVE_STEP * max(cost, patched))


class PatchLimiter:
    """When a cost is worth a patch: moved meaningfully, and the last try long enough ago."""

    def __init__(self, min_interval_s: float = MIN_PATCH_INTERVAL_S) -> None:
        self.min_interval_s = min_interval_s
        self.patched: int | None = None  # the annotation's value, as last written or read
        self._tried_at: float | None = None

    def due(self, cost: int, now: float) -> bool:
        if not moved_meaningfully(self.patched, cost):
            return False
        return self._tried_at is None or now - self._tried_at >= self.min_interval_s

    def tried(self, now: float) -> None:
        """A failed try counts too: an API outage is retried at the same pace."""
        self._tried_at = now


class PodAnnotation:
    """The thin API calls (blocking: run them in a thread): read and patch the annotation."""

    def __init__(self, api: k8s.CoreV1Api, namespace: str, pod: str, timeout_s: float) -> None:
        self._api = api
        self._namespace = namespace
        self._pod = pod
        self._timeout_s = timeout_s

    def read(self) -> int | None:
        """The annotation's value now; None when absent or not an integer."""
        pod: Any = self._api.read_namespaced_pod(
            self._pod, self._namespace, _request_timeout=self._timeout_s
        )
        value = (pod.metadata.annotations or {}).get(ANNOTATION)
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    def patch(self, cost: int) -> None:
        # A JSON merge patch (RFC 7386) touches this one key and nothing else, named
        # rather than left to the client's choice for a dict body (strategic merge today).
        self._api.patch_namespaced_pod(
            self._pod,
            self._namespace,
            {"metadata": {"annotations": {ANNOTATION: str(cost)}}},
            _content_type="application/merge-patch+json",
            _request_timeout=self._timeout_s,
        )


class DeletionCost:
    """Offered the cost at every reading; patches it in the background when due."""

    def __init__(
        self,
        annotation: PodAnnotation,
        metrics: SidecarMetrics,
        limiter: PatchLimiter | None = None,
    ) -> None:
        self._annotation = annotation
        self._metrics = metrics
        self._limiter = limiter if limiter is not None else PatchLimiter()
        self._read = False  # the annotation's value at our start is known
        self._in_flight: asyncio.Task[None] | None = None
        self._failing = False

    def offer(self, inflight: float, waiting: float, now: float) -> None:
        """The load just read; `now`: the reporter's monotonic clock. Returns at once;
        at most one API call runs at a time."""
        cost = cost_of_load(inflight, waiting)
        if self._in_flight is not None and not self._in_flight.done():
            return
        if not self._limiter.due(cost, now):
            return
        self._limiter.tried(now)
        self._in_flight = asyncio.get_running_loop().create_task(self._update(cost))

    async def settled(self) -> None:
        """Wait for the call in flight, if any (tests; shutdown)."""
        if self._in_flight is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._in_flight

    async def close(self) -> None:
        if self._in_flight is not None:
            self._in_flight.cancel()  # the thread finishes its call on its own
        await self.settled()

    async def _update(self, cost: int) -> None:
        try:
            if not self._read:
                self._limiter.patched = await asyncio.to_thread(self._annotation.read)
                self._read = True
                if self._limiter.patched is not None:
                    self._metrics.deletion_cost.set(self._limiter.patched)
                if not moved_meaningfully(self._limiter.patched, cost):
                    return
            await asyncio.to_thread(self._annotation.patch, cost)
        except Exception as exc:  # the API's or the client's: never the reports'
            self._metrics.deletion_cost_patches.labels("failed").inc()
            if not self._failing:
                log.warning("pod-deletion-cost not updated (%s); retrying later", exc)
                self._failing = True
            return
        self._limiter.patched = cost
        self._metrics.deletion_cost_patches.labels("ok").inc()
        self._metrics.deletion_cost.set(cost)
        if self._failing:
            log.info("pod-deletion-cost updated again")
            self._failing = False
        log.debug("pod-deletion-cost = %d", cost)
