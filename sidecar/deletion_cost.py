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

Two REST calls on its own pod, made with the standard library rather than the
kubernetes client: importing that client costs ~23 MB of RSS, which alone would take
the sidecar over its 50 MB budget. They need only what Kubernetes mounts in every pod:
the API server's address (KUBERNETES_SERVICE_HOST/PORT), the ServiceAccount token
(read again for each call: kubelet rotates it) and the cluster CA. The calls block:
they run in a worker thread, one at a time, in the background, so a slow API server
never delays a pod report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sidecar.telemetry import SidecarMetrics

log = logging.getLogger(__name__)

ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
MIN_PATCH_INTERVAL_S = 10.0
MIN_STEP = 2
RELATIVE_STEP = 0.25
MAX_COST = 1_000_000  # the annotation is an int32; no pod holds a million requests
# Bound on each socket operation of one API call (connect, each read); in the
# background, a slow API server delays no report, only the next patch.
API_TIMEOUT_S = 5.0
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """The API server could not be reached, or refused the call (the message says why)."""


@dataclass(frozen=True)
class ApiAccess:
    """Where the API server is and how to prove who we are."""

    base_url: str  # https://host:port (a stand-in in tests: http://)
    token_file: Path | None = None
    ca_file: Path | None = None

    @classmethod
    def in_cluster(
        cls, env: Mapping[str, str], account_dir: Path = SERVICE_ACCOUNT_DIR
    ) -> ApiAccess:
        """The pod's own ServiceAccount, as Kubernetes mounts it; ApiError outside a pod."""
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise ApiError("not in a pod: KUBERNETES_SERVICE_HOST/PORT are not set")
        token, ca = account_dir / "token", account_dir / "ca.crt"
        for mounted in (token, ca):
            if not mounted.is_file():
                raise ApiError(f"no ServiceAccount {mounted.name} at {mounted} (automount off?)")
        if ":" in host:  # an IPv6 address
            host = f"[{host}]"
        return cls(f"https://{host}:{port}", token, ca)


def cost_of_load(inflight: float, waiting: float) -> int:
    """Requests the pod holds, rounded half up: 0.4 -> 0 (idle), 0.5 -> 1, 7.5 -> 8."""
    load = inflight + waiting
    if not math.isfinite(load) or load <= 0:
        return 0
    return min(MAX_COST, math.floor(load + 0.5))


def moved_meaningfully(patched: int | None, cost: int) -> bool:
    """Whether `cost` differs enough from the last `patched` one to be worth a patch."""
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

    def __init__(self, access: ApiAccess, namespace: str, pod: str, timeout_s: float) -> None:
        self._access = access
        self._url = f"{access.base_url}/api/v1/namespaces/{quote(namespace)}/pods/{quote(pod)}"
        self._timeout_s = timeout_s
        tls = ssl.create_default_context()  # raises OSError for a CA file it cannot use
        if access.ca_file is not None:
            tls = ssl.create_default_context(cafile=str(access.ca_file))
        # Straight to the API server: no HTTPS_PROXY from the environment, and no
        # redirect that would carry the token elsewhere.
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(context=tls),
            _NoRedirects(),
        )

    def read(self) -> int | None:
        """The annotation's value now; None when absent or not an integer."""
        pod = self._call("GET")
        value = ((pod.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
        try:
            return int(value) if value is not None else None
        except (TypeError, ValueError):
            return None

    def patch(self, cost: int) -> None:
        # A JSON merge patch (RFC 7386) touches this one key and nothing else.
        self._call("PATCH", {"metadata": {"annotations": {ANNOTATION: str(cost)}}})

    def _call(self, method: str, body: object = None) -> dict[str, Any]:
        request = urllib.request.Request(self._url, method=method)
        request.add_header("Accept", "application/json")
        if self._access.token_file is not None:
            token = self._access.token_file.read_text().strip()  # kubelet rotates it
            request.add_header("Authorization", f"Bearer {token}")
        if body is not None:
            request.data = json.dumps(body).encode()
            request.add_header("Content-Type", MERGE_PATCH)
        try:
            with self._opener.open(request, timeout=self._timeout_s) as answer:
                return dict(json.load(answer))
        except urllib.error.HTTPError as exc:
            raise ApiError(f"{method} pod: HTTP {exc.code} {_status_message(exc)}") from None
        except (OSError, ValueError) as exc:  # refused, timed out, TLS, not JSON
            raise ApiError(f"{method} pod: {exc}") from None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx then surfaces as an HTTPError


def _status_message(exc: urllib.error.HTTPError) -> str:
    """The API server's Status message (e.g. 'pods "x" is forbidden: ...'), if it sent one."""
    try:
        return str(json.loads(exc.read() or b"{}").get("message") or exc.reason)
    except (OSError, ValueError, AttributeError):
        return str(exc.reason)


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
