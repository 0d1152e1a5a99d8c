"""The served targets' pods, watched through the Kubernetes API: gone pods stop counting at once.

Which pods: every pod of each namespace the scaler has been asked about (a
ScaledObject's namespace, learned from its RPCs through `serve`). What it does:

- A pod that is gone (DELETED, or Failed/Succeeded: an evicted pod stays as an
  object but runs nothing) has its report removed from every served target of its
  namespace through the report contract (`ReportWriter.delete`), instead of
  counting until it is `staleAfterSeconds` old. The sidecar removes its own report
  on SIGTERM; this covers the pods that never got to (node lost, OOM-killed, a
  crash loop's last run).
- Each (re)list reconciles: a report, stamped before the list was asked for, of a
  pod the list does not hold is removed too, so deletions missed while the watch
  was down (or before the scaler started) are caught up. Stamped after the list,
  it may come from a pod created since: left alone.
- A pod seen going from not ready to Ready has its start-to-ready time
  (`status.startTime`, before its images were pulled, to the Ready condition's
  `lastTransitionTime`) observed in `llm_scaler_cold_start_seconds`, once per pod,
  for the targets it reports under (so other workloads of the namespace are not
  counted). Pods already ready when first listed are not: their start was not seen.

The kubernetes client is synchronous: the short list call runs in a worker thread
(asyncio.to_thread), each long watch request in a thread of its own that hands
its events to the event loop, where Redis is written. The client's raw JSON is
used as the API sends it (two fields of a Pod do not need its typed model).
A failure here never reaches an RPC: it is logged, counted in
`llm_scaler_pod_watch_errors_total{kind}`, and retried with backoff, and the
reports then age out at `staleAfterSeconds` as they would without the watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.watch.watch import iter_resp_lines
from redis.exceptions import RedisClusterException, RedisError

from scaler.redis_connect import AnyRedis
from scaler.report_writer import ReportWriter
from scaler.reports import report_keys
from scaler.target_config import TargetConfig
from scaler.telemetry import ScalerMetrics

log = logging.getLogger(__name__)

ERROR_KINDS = ("config", "list", "watch", "redis")
# The API server ends a watch after this; we then resume from the last version seen.
# client-go picks 5-10 min; a read timeout a little longer notices a silent peer.
WATCH_TIMEOUT_S = 300
_CONNECT_TIMEOUT_S = 5.0
_MAX_NAMESPACES = 1000  # watches are threads: bounded whatever namespaces KEDA names
_GONE_PHASES = ("Failed", "Succeeded")


def api_configuration(env: Mapping[str, str] = os.environ) -> k8s.Configuration:
    """In a cluster (KUBERNETES_SERVICE_HOST set), the pod's ServiceAccount; else the
    kubeconfig (KUBECONFIG or ~/.kube/config). Raises the client's ConfigException."""
    configuration = k8s.Configuration()
    if env.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(client_configuration=configuration)
    else:
        k8s_config.load_kube_config(client_configuration=configuration)
    return configuration


@dataclass(frozen=True)
class PodState:
    """What the watch needs from one Pod's JSON."""

    name: str
    uid: str
    gone: bool
    ready: bool
    cold_start_s: float | None  # startTime to the Ready transition, while ready


def pod_state(pod: Mapping[str, Any], deleted: bool = False) -> PodState:
    """The PodState of a pod object from the Kubernetes API; `deleted`: a DELETED event's."""
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    ready_condition: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or () if c.get("type") == "Ready"), {}
    )
    ready = ready_condition.get("status") == "True"
    cold_start_s = None
    started, became_ready = status.get("startTime"), ready_condition.get("lastTransitionTime")
    if ready and started and became_ready:
        # e.g. startTime 12:00:00Z, Ready at 12:01:05Z: a 65 s cold start.
        cold_start_s = max(0.0, _seconds(became_ready) - _seconds(started))
    return PodState(
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        gone=deleted or status.get("phase") in _GONE_PHASES,
        ready=ready,
        cold_start_s=cold_start_s,
    )


def _seconds(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


class _Expired(Exception):
    """The watch's resource version is older than the API server keeps (410 Gone): list again."""


class _StreamFailed(Exception):
    """The watch request failed or its connection broke (not a Redis timeout, whatever its type)."""


class PodWatch:
    def __init__(
        self,
        redis: AnyRedis,
        metrics: ScalerMetrics,
        redis_timeout_s: float,
        configuration: k8s.Configuration | None = None,
        backoff_s: tuple[float, float] = (0.1, 30.0),
        watch_timeout_s: int = WATCH_TIMEOUT_S,
    ) -> None:
        """`configuration` None: `api_configuration()` at start (in-cluster or kubeconfig)."""
        self._redis = redis
        self._metrics = metrics
        self._redis_timeout_s = redis_timeout_s
        self._configuration = configuration
        self._backoff_s = backoff_s
        self._watch_timeout_s = watch_timeout_s
        self._api: k8s.CoreV1Api | None = None
        self._targets: dict[str, set[str]] = {}  # namespace -> target names served
        self._writers: dict[tuple[str, str], ReportWriter] = {}
        # namespace -> pod uid -> has been ready since first seen (False: its start is on)
        self._was_ready: dict[str, dict[str, bool]] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._following: set[asyncio.Task[None]] = set()
        self._failing: set[str] = set()
        for kind in ERROR_KINDS:
            metrics.pod_watch_errors.labels(kind)

    def serve(self, config: TargetConfig) -> None:
        """Called for every decision: the first one of a namespace starts its watch."""
        targets = self._targets.get(config.namespace)
        if targets is not None:
            targets.add(config.target_name)
            return
        if len(self._targets) >= _MAX_NAMESPACES:
            return
        self._targets[config.namespace] = {config.target_name}
        self._start(config.namespace)

    def _start(self, namespace: str) -> None:
        if self._tasks is not None:
            task = self._tasks.create_task(self._follow(namespace))
            self._following.add(task)
            task.add_done_callback(self._following.discard)

    async def run(self, stopping: asyncio.Event) -> None:
        """Watch every served namespace until `stopping`; never raises."""
        configuration = self._configuration
        if configuration is None:
            try:
                configuration = await asyncio.to_thread(api_configuration)
            except Exception as exc:
                self._count("config", "pod watch off: no Kubernetes API configuration (%s)", exc)
                return
        assert configuration is not None
        # Our loop retries with backoff; urllib3's own retries (3 by default, each logged)
        # would only multiply the calls an API outage sees. One covers a stale keep-alive.
        configuration.retries = 1
        api_client = k8s.ApiClient(configuration)
        self._api = k8s.CoreV1Api(api_client)
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                for namespace in self._targets:
                    self._start(namespace)
                await stopping.wait()
                self._tasks = None
                for task in self._following:
                    task.cancel()  # each stops its watch request on the way out
        finally:
            self._tasks = None
            with contextlib.suppress(Exception):
                api_client.close()

    async def _follow(self, namespace: str) -> None:
        """List, then watch from the list's version; after a failure, back off and list again."""
        initial, most = self._backoff_s
        backoff = initial
        version: str | None = None
        while True:
            kind = "list" if version is None else "watch"
            listed = version is None
            try:
                if version is None:
                    version = await self._resync(namespace)
                    kind = "watch"
                version = await self._watch(namespace, version)
                backoff = initial  # the server ended the watch (its timeout): resume at once
                self._recovered(kind)
                continue
            except _Expired:
                version = None
                if not listed:  # resumed from a version gone from the server's history
                    log.info("pods of %s: watch history expired, listing again", namespace)
                    continue
                # Expired straight after a list: a confused server; never spin on it.
                self._count("watch", "pod watch of %s: version of a fresh list expired", namespace)
            # TimeoutError: our bound on a Redis call; RedisClusterException: no node answers.
            except (RedisError, RedisClusterException, TimeoutError) as exc:
                self._count("redis", "pod watch of %s: redis: %s", namespace, exc)
            except Exception as exc:  # the API's or the client's: never the scaler's answers
                self._count(kind, "pod watch of %s: %s", namespace, exc)
            version = None
            await asyncio.sleep(backoff)
            backoff = min(2 * backoff, most)

    async def _resync(self, namespace: str) -> str:
        """One list: remove the reports of pods it lacks; returns its resourceVersion."""
        async with asyncio.timeout(self._redis_timeout_s):
            seconds, micros = await self._redis.time()
        listed_at = seconds + micros / 1e6  # on Redis's clock, as reports are stamped
        self._recovered("redis")
        pod_list = await asyncio.to_thread(self._list, namespace)
        self._recovered("list")
        pods = [pod_state(item) for item in pod_list.get("items") or ()]
        live = {pod.name for pod in pods if not pod.gone}
        was_ready = self._was_ready.setdefault(namespace, {})
        known = {pod.uid: pod for pod in pods if not pod.gone}
        for uid in list(was_ready):
            if uid not in known:
                del was_ready[uid]
        for pod in known.values():
            await self._track_readiness(namespace, pod, first_sight_counts=False)
        for target in sorted(self._targets.get(namespace, ())):
            seen = report_keys(namespace, target).seen
            async with asyncio.timeout(self._redis_timeout_s):
                reported = await self._redis.zrangebyscore(seen, "-inf", listed_at)
            for pod_name in sorted({str(name) for name in reported} - live):
                await self._remove(namespace, target, pod_name, "not in the pod list")
        return str((pod_list.get("metadata") or {}).get("resourceVersion", ""))

    def _list(self, namespace: str) -> dict[str, Any]:
        assert self._api is not None
        response: Any = self._api.list_namespaced_pod(
            namespace,
            _preload_content=False,
            _request_timeout=(_CONNECT_TIMEOUT_S, _CONNECT_TIMEOUT_S * 6),
        )
        try:
            parsed: dict[str, Any] = json.loads(response.data)
            return parsed
        finally:
            response.release_conn()

    async def _watch(self, namespace: str, version: str) -> str:
        """One watch request from `version`, its events handled in order as they come;
        returns the version to resume from once the server ends it."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        assert self._api is not None
        stream = _WatchStream(self._api, namespace, version, self._watch_timeout_s)
        threading.Thread(
            target=stream.run,
            args=(lambda item: _hand_over(loop, events, item),),
            name=f"pod-watch-{namespace}",
            daemon=True,  # a stuck read must never keep the process from exiting
        ).start()
        try:
            while True:
                kind, item = await events.get()
                if kind == "end":
                    return version
                if kind == "error":
                    raise _StreamFailed(f"{type(item).__name__}: {item}") from item
                version = await self._on_event(namespace, item) or version
        finally:
            stream.stop()

    async def _on_event(self, namespace: str, event: Mapping[str, Any]) -> str | None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Expired()
            raise k8s.ApiException(status=obj.get("code"), reason=obj.get("message"))
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            pod = pod_state(obj, deleted=kind == "DELETED")
            if pod.gone:
                self._was_ready.get(namespace, {}).pop(pod.uid, None)
                for target in sorted(self._targets.get(namespace, ())):
                    await self._remove(namespace, target, pod.name, f"pod {kind.lower()}")
            else:
                await self._track_readiness(namespace, pod, first_sight_counts=True)
        return str(version) if version else None

    async def _track_readiness(
        self, namespace: str, pod: PodState, first_sight_counts: bool
    ) -> None:
        was_ready = self._was_ready.setdefault(namespace, {})
        before = was_ready.get(pod.uid)
        was_ready[pod.uid] = bool(before) or pod.ready
        # A pod created after the list arrives not ready; one listed ready started unseen.
        seen_starting = before is False or (before is None and first_sight_counts)
        if not (pod.ready and seen_starting and pod.cold_start_s is not None):
            return
        targets = sorted(self._targets.get(namespace, ()))
        pipe = self._redis.pipeline(transaction=False)
        for target in targets:
            pipe.zscore(report_keys(namespace, target).seen, pod.name)
        async with asyncio.timeout(self._redis_timeout_s):
            scores = await pipe.execute()
        for target, score in zip(targets, scores, strict=True):
            if score is not None:
                self._metrics.observe_cold_start(namespace, target, pod.cold_start_s)
                log.info(
                    "%s/%s ready: cold start %.1f s (target %s)",
                    namespace,
                    pod.name,
                    pod.cold_start_s,
                    target,
                )

    async def _remove(self, namespace: str, target: str, pod: str, why: str) -> None:
        writer = self._writers.get((namespace, target))
        if writer is None:
            writer = ReportWriter(self._redis, report_keys(namespace, target))
            self._writers[(namespace, target)] = writer
        async with asyncio.timeout(self._redis_timeout_s):
            await writer.delete(pod)
        log.debug("%s/%s: report of %s removed (%s)", namespace, target, pod, why)

    def _count(self, kind: str, message: str, *args: object) -> None:
        self._metrics.pod_watch_errors.labels(kind).inc()
        if kind not in self._failing:  # once per outage, not once per retry
            self._failing.add(kind)
            log.warning(message + "; retrying with backoff", *args)

    def _recovered(self, kind: str) -> None:
        if kind in self._failing:
            self._failing.discard(kind)
            log.info("pod watch: %s works again", kind)


def _hand_over(
    loop: asyncio.AbstractEventLoop, events: asyncio.Queue[tuple[str, Any]], item: tuple[str, Any]
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening any more
        loop.call_soon_threadsafe(events.put_nowait, item)


class _WatchStream:
    """One watch request, read in its own thread; `stop` ends it from any thread."""

    def __init__(self, api: k8s.CoreV1Api, namespace: str, version: str, timeout_s: int) -> None:
        self._api = api
        self._namespace = namespace
        self._version = version
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._response: Any = None
        self._stopped = False

    def run(self, hand: Callable[[tuple[str, Any]], None]) -> None:
        try:
            response: Any = self._api.list_namespaced_pod(
                self._namespace,
                watch=True,
                resource_version=self._version,
                allow_watch_bookmarks=True,
                timeout_seconds=self._timeout_s,
                _preload_content=False,
                _request_timeout=(_CONNECT_TIMEOUT_S, self._timeout_s + 30),
            )
            with self._lock:
                self._response = response
                stopped = self._stopped
            try:
                if not stopped:
                    for line in iter_resp_lines(response):
                        if line:
                            hand(("event", json.loads(line)))
            finally:
                response.release_conn()
            hand(("end", None))
        except Exception as exc:
            hand(("error", exc))

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # already closed: nothing to unblock
                response.shutdown()
