"""A Kubernetes API stand-in: the pod paths the kubernetes client calls, with real API JSON.

No API server runs on this machine, so the scaler's pod watch and the sidecar's
deletion-cost patches are tested against this small threaded HTTP server on
127.0.0.1. It answers what the client sends, as the API server would:

    GET   /api/v1/namespaces/{ns}/pods              PodList with metadata.resourceVersion
    GET   /api/v1/namespaces/{ns}/pods?watch=true   chunked stream of watch events (one JSON
                                                    per line) from ?resourceVersion; history
                                                    compacted away: an ERROR event with 410
    GET   /api/v1/namespaces/{ns}/pods/{name}       Pod, or a 404 Status
    PATCH /api/v1/namespaces/{ns}/pods/{name}       merge / strategic-merge patch (RFC 7386 on
                                                    the object); other patch types: 415

The test changes the cluster (`put_pod`, `delete_pod`), and every change is a watch
event with the next resourceVersion, as etcd's revision. Faults: `drop_watches`
(connections cut mid-stream), `end_watches` (the server's watch timeout), `set_down`
(every request cut unanswered, as an API server going away), `compact` (old versions
expire). `pod()` builds Pod JSON in the shape the API server returns.
"""

from __future__ import annotations

import contextlib
import copy
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubernetes import client as k8s

_MERGE_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Bounded wait for what a client thread does with what the stand-in sent."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not so within {timeout_s} s")
        time.sleep(0.01)


def rfc3339(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(
    name: str,
    namespace: str,
    *,
    ready: bool = True,
    phase: str = "Running",
    started_at: float = 1_780_000_000.0,
    ready_at: float | None = None,
    uid: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Pod of a Triton Deployment as the API server returns it. `ready_at`: when its
    Ready condition last changed (default: 60 s after `started_at`)."""
    changed_at = rfc3339(ready_at if ready_at is not None else started_at + 60)
    started = rfc3339(started_at)
    flag = "True" if ready else "False"
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "generateName": name.rsplit("-", 1)[0] + "-",
            "namespace": namespace,
            "uid": uid or str(uuid.uuid4()),
            "creationTimestamp": started,
            "labels": {"app": "llama", "pod-template-hash": "5d8f7c9b4"},
            "annotations": dict(annotations or {}),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "llama-5d8f7c9b4",
                    "uid": "7b1f7a52-4f0e-4a34-9d55-3c2a1b0e9f10",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": "triton",
                    "image": "nvcr.io/nvidia/tritonserver:24.08-trtllm-python-py3",
                    "ports": [{"containerPort": 8001, "name": "grpc", "protocol": "TCP"}],
                },
                {"name": "llm-scaler-sidecar", "image": "llm-keda-scaler:0.1.0"},
            ],
            "nodeName": "gpu-node-1",
            "serviceAccountName": "llama",
            "restartPolicy": "Always",
        },
        "status": {
            "phase": phase,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
                {"type": "Initialized", "status": "True", "lastTransitionTime": started},
                {"type": "ContainersReady", "status": flag, "lastTransitionTime": changed_at},
                {
                    "type": "Ready",
                    "status": flag,
                    "lastProbeTime": None,
                    "lastTransitionTime": changed_at,
                },
            ],
            "hostIP": "10.0.0.7",
            "podIP": "10.244.1.23",
            "startTime": started,
            "qosClass": "Burstable",
        },
    }


@dataclass(frozen=True)
class Patch:
    namespace: str
    name: str
    content_type: str
    body: Any


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what strategic merge also does to a map of strings)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class KubeStandIn:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version = 100
        self._oldest_watchable = 0  # versions below this are compacted away
        self._pods: dict[tuple[str, str], dict[str, Any]] = {}
        self._history: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, ns, type, pod)
        self._watchers: dict[int, tuple[str, queue.Queue[Any]]] = {}
        self._cut_generation = 0
        self._down = False
        self.patches: list[Patch] = []
        self.requests: list[tuple[str, str]] = []  # (method, path?query)
        self.authorizations: list[str | None] = []  # each request's Authorization header
        self.watches_opened: dict[str, int] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def configuration(self) -> k8s.Configuration:
        return k8s.Configuration(host=self.host)

    def start(self) -> KubeStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.drop_watches()
        self._server.shutdown()
        self._server.server_close()

    # The cluster, as the test changes it: each change is one watch event.

    def put_pod(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        with self._lock:
            kind = "MODIFIED" if key in self._pods else "ADDED"
            return self._record(key, kind, copy.deepcopy(obj))

    def delete_pod(self, namespace: str, name: str) -> None:
        with self._lock:
            obj = self._pods.pop((namespace, name))
            self._record((namespace, name), "DELETED", obj)

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._pods[(namespace, name)])

    def _record(self, key: tuple[str, str], kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        if kind != "DELETED":
            self._pods[key] = obj
        event = (self._version, key[0], kind, copy.deepcopy(obj))
        self._history.append(event)
        for namespace, events in self._watchers.values():
            if namespace == key[0]:
                events.put(event)
        return copy.deepcopy(obj)

    # Faults.

    def drop_watches(self) -> None:
        """Cut every open watch connection mid-stream (no final chunk)."""
        with self._lock:
            self._cut_generation += 1
            for _, events in self._watchers.values():
                events.put(None)

    def end_watches(self) -> None:
        """End every open watch cleanly, as the API server does at the watch's timeout."""
        with self._lock:
            for _, events in self._watchers.values():
                events.put("end")

    def set_down(self, down: bool) -> None:
        """Down: every request is cut unanswered and open watches are dropped."""
        self._down = down
        if down:
            self.drop_watches()

    def compact(self) -> None:
        """Forget the history: a watch from a version older than the latest gets 410 Gone."""
        with self._lock:
            self._oldest_watchable = self._version
            self._history.clear()

    def open_watches(self, namespace: str) -> int:
        with self._lock:
            return sum(1 for ns, _ in self._watchers.values() if ns == namespace)

    # HTTP.

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                standin._serve(self, "GET")

            def do_PATCH(self) -> None:
                standin._serve(self, "PATCH")

        return Handler

    def _serve(self, request: BaseHTTPRequestHandler, method: str) -> None:
        self.requests.append((method, request.path))
        self.authorizations.append(request.headers.get("Authorization"))
        if self._down:
            request.close_connection = True
            with contextlib.suppress(OSError):
                request.connection.shutdown(2)
            return
        url = urlsplit(request.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        if (
            parts[:3] != ["api", "v1", "namespaces"]
            or len(parts) not in (5, 6)
            or parts[4] != "pods"
        ):
            self._reply(request, 404, _status(404, "NotFound", "the server could not find it"))
            return
        namespace = parts[3]
        if len(parts) == 5 and method == "GET":
            if query.get("watch") in ("true", "1"):
                self._watch(request, namespace, query)
            else:
                self._list(request, namespace)
        elif len(parts) == 6 and method == "GET":
            self._get(request, namespace, parts[5])
        elif len(parts) == 6 and method == "PATCH":
            self._patch(request, namespace, parts[5])
        else:
            self._reply(request, 405, _status(405, "MethodNotAllowed", f"{method} not allowed"))

    def _reply(self, request: BaseHTTPRequestHandler, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        request.send_response(code)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def _list(self, request: BaseHTTPRequestHandler, namespace: str) -> None:
        with self._lock:
            items = [
                copy.deepcopy(p) for (ns, _), p in sorted(self._pods.items()) if ns == namespace
            ]
            version = str(self._version)
        for item in items:  # items of a list carry no kind / apiVersion of their own
            item.pop("kind", None)
            item.pop("apiVersion", None)
        body = {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": version}}
        self._reply(request, 200, {**body, "items": items})

    def _get(self, request: BaseHTTPRequestHandler, namespace: str, name: str) -> None:
        with self._lock:
            found = self._pods.get((namespace, name))
        if found is None:
            self._reply(request, 404, _status(404, "NotFound", f'pods "{name}" not found'))
        else:
            self._reply(request, 200, found)

    def _patch(self, request: BaseHTTPRequestHandler, namespace: str, name: str) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = json.loads(request.rfile.read(length) or b"null")
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type not in _MERGE_TYPES:
            message = f"the body of the request was in an unknown format - {content_type}"
            self._reply(request, 415, _status(415, "UnsupportedMediaType", message))
            return
        with self._lock:
            current = self._pods.get((namespace, name))
            if current is None:
                self._reply(request, 404, _status(404, "NotFound", f'pods "{name}" not found'))
                return
            self.patches.append(Patch(namespace, name, content_type, body))
            patched = self._record((namespace, name), "MODIFIED", _merge(current, body))
        self._reply(request, 200, patched)

    def _watch(
        self, request: BaseHTTPRequestHandler, namespace: str, query: dict[str, str]
    ) -> None:
        since = int(query.get("resourceVersion") or 0)
        ends_at = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        events: queue.Queue[Any] = queue.Queue()
        with self._lock:
            self.watches_opened[namespace] = self.watches_opened.get(namespace, 0) + 1
            if since and since < self._oldest_watchable:
                expired = (
                    0,
                    namespace,
                    "ERROR",
                    _status(410, "Expired", "too old resource version"),
                )
                backlog = [expired]
            else:
                backlog = [e for e in self._history if e[1] == namespace and e[0] > since]
            for event in backlog:  # under the lock: no change can slip in between
                events.put(event)
            watcher = id(events)
            self._watchers[watcher] = (namespace, events)
            generation = self._cut_generation
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Transfer-Encoding", "chunked")
        request.end_headers()
        try:
            while time.monotonic() < ends_at:
                try:
                    event = events.get(timeout=0.05)
                except queue.Empty:
                    continue
                if event == "end":
                    break
                if event is None or generation != self._cut_generation:
                    request.close_connection = True
                    request.connection.shutdown(2)  # cut: no final chunk, as a lost connection
                    return
                line = json.dumps({"type": event[2], "object": event[3]}).encode() + b"\n"
                request.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                request.wfile.flush()
                if event[2] == "ERROR":
                    break
            request.wfile.write(b"0\r\n\r\n")  # the server's timeout: a clean end
            request.wfile.flush()
        except OSError:
            request.close_connection = True
        finally:
            with self._lock:
                self._watchers.pop(watcher, None)
