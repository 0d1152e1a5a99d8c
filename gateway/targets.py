"""Which target serves a request: the targets file, checked once, and the match per request.

The file (`--targets FILE`, env GATEWAY_TARGETS_FILE) is JSON:

    {"targets": [{"namespace": "inference", "name": "llama", "models": ["llama"],
                  "paths": [], "hosts": [], "queueLimit": 1000, "timeoutSeconds": 300,
                  "maxDeliveries": 3}]}

`namespace`/`name` are the ScaledObject's (its target's streams are named after them); every
other key may be left out and then takes its default from `Target`'s fields, the one place
they live.
A request goes to, in this order (the most specific intent first, as an ingress routes):

1. the target one of whose `hosts` is the request's Host header (port dropped, any case);
2. else the target with the longest of its `paths` that prefixes the request's path;
3. else the target whose `models` holds the request's model.

A target found by host or path that lists `models` serves only those; one that lists none
serves any model. No target found: the model is unknown (the API's own answer for that).
Every error names the key, e.g. "targets[0].queueLimit = 0, must be an integer in [1; 1000000]".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class TargetsError(ValueError):
    """A targets file that cannot be used; the message names the key and what is expected."""


@dataclass(frozen=True)
class Target:
    namespace: str
    name: str
    models: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    # Requests waiting (every class, not yet taken by a pod) past which the client gets 429.
    queue_limit: int = 1000
    # A request's deadline unless its X-Request-Timeout header gives one.
    timeout_s: float = 300.0
    # Times a request may be taken by a pod (a pod that dies holding it counts) before the
    # client is told why not.
    max_deliveries: int = 3

    @property
    def label(self) -> str:
        """The metrics label: one per configured target, so bounded."""
        return f"{self.namespace}/{self.name}"


# JSON key -> (field, kind, low, high); kinds: int, number (low open), names, paths, hosts.
_KEYS: dict[str, tuple[str, str, float, float]] = {
    "namespace": ("namespace", "k8s", 0, 0),
    "name": ("name", "k8s", 0, 0),
    "models": ("models", "models", 0, 0),
    "paths": ("paths", "paths", 0, 0),
    "hosts": ("hosts", "hosts", 0, 0),
    "queueLimit": ("queue_limit", "int", 1, 1_000_000),
    "timeoutSeconds": ("timeout_s", "number", 0, 86_400),
    "maxDeliveries": ("max_deliveries", "int", 1, 100),
}
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.:/-]{1,255}$")
_HOST = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def load_targets(path: str) -> tuple[Target, ...]:
    """The targets in the file at `path`; raises TargetsError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TargetsError(f"targets file {path!r} cannot be read: {exc.strerror}") from None
    return parse_targets(text)


def parse_targets(text: str) -> tuple[Target, ...]:
    """The targets file's entries; TargetsError naming what is wrong."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TargetsError(f"targets file is not JSON: {exc}") from None
    if not isinstance(document, dict) or set(document) != {"targets"}:
        raise TargetsError('targets file must be a JSON object with one key, "targets"')
    entries = document["targets"]
    if not isinstance(entries, list) or not entries:
        raise TargetsError("targets must be a non-empty list of target objects")
    targets = tuple(_target(f"targets[{i}]", entry) for i, entry in enumerate(entries))
    _check_unique(targets)
    return targets


def _target(where: str, entry: Any) -> Target:
    if not isinstance(entry, dict):
        raise TargetsError(f"{where} must be an object")
    for key in entry:
        if key not in _KEYS:
            raise TargetsError(f"{where}.{key} is not a known key: one of {', '.join(_KEYS)}")
    for key in ("namespace", "name"):
        if key not in entry:
            raise TargetsError(f"{where}.{key} is required: the ScaledObject's {key}")
    values: dict[str, Any] = {}
    for key, value in entry.items():
        field, kind, low, high = _KEYS[key]
        values[field] = _value(f"{where}.{key}", kind, value, low, high)
    target = Target(**values)
    if not (target.models or target.paths or target.hosts):
        raise TargetsError(f"{where} matches no request: give it models, paths or hosts")
    return target


def _value(key: str, kind: str, value: Any, low: float, high: float) -> Any:
    if kind == "k8s":
        if not isinstance(value, str) or not _K8S_NAME.match(value):
            raise TargetsError(
                f"{key} = {_shown(value)}, must be a Kubernetes object name "
                "(lower-case letters, digits, '-' and '.')"
            )
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise TargetsError(
                f"{key} = {_shown(value)}, must be an integer in [{low:.0f}; {high:.0f}]"
            )
        return value
    if kind == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not low < value <= high:
            raise TargetsError(f"{key} = {_shown(value)}, must be a number in ({low:g}; {high:g}]")
        return float(value)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TargetsError(f"{key} = {_shown(value)}, must be a list of strings")
    if kind == "models":
        for v in value:
            if not _MODEL_NAME.match(v):
                raise TargetsError(f"{key} holds {_shown(v)}, must be model names")
        return tuple(value)
    if kind == "paths":
        for v in value:
            if not v.startswith("/"):
                raise TargetsError(f"{key} holds {_shown(v)}, must be paths starting with '/'")
        return tuple(value)
    hosts = tuple(v.lower() for v in value)
    for v in hosts:
        if not _HOST.match(v):
            raise TargetsError(f"{key} holds {_shown(v)}, must be host names without a port")
    return hosts


def _check_unique(targets: tuple[Target, ...]) -> None:
    """Two targets claiming one model, host, path or name would make a match depend on order."""
    seen: dict[tuple[str, str], int] = {}
    for i, target in enumerate(targets):
        claims = [("target", target.label)]
        claims += [("models", m) for m in target.models]
        claims += [("paths", p) for p in target.paths]
        claims += [("hosts", h) for h in target.hosts]
        for claim in claims:
            if claim in seen:
                kind, value = claim
                what = "namespace/name" if kind == "target" else kind
                raise TargetsError(
                    f"targets[{i}].{what} holds {value!r}, already claimed by "
                    f"targets[{seen[claim]}]: each must belong to one target"
                )
            seen[claim] = i


def _shown(value: Any, limit: int = 80) -> str:
    """`value` as JSON, cut short so a huge value cannot flood the log."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


class Router:
    """Finds a request's target: a dict lookup for hosts and models, a short scan for paths."""

    def __init__(self, targets: tuple[Target, ...]) -> None:
        self.targets = targets
        self._by_host: Mapping[str, Target] = {h: t for t in targets for h in t.hosts}
        self._by_model: Mapping[str, Target] = {m: t for t in targets for m in t.models}
        # Longest prefix first, so the first hit is the most specific.
        self._by_path = sorted(
            ((p, t) for t in targets for p in t.paths), key=lambda pt: len(pt[0]), reverse=True
        )

    def find(self, host: str | None, path: str, model: str) -> Target | None:
        """The target for this request, or None: no target serves `model` here."""
        target = None
        if host and self._by_host:
            target = self._by_host.get(_host_name(host))
        if target is None:
            for prefix, candidate in self._by_path:
                if path.startswith(prefix):
                    target = candidate
                    break
        if target is None:
            return self._by_model.get(model)
        if target.models and model not in target.models:
            return None
        return target


def _host_name(host: str) -> str:
    """The Host header without its port ("[::1]:8080" -> "[::1]"), lower-cased."""
    host = host.lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if ":" in host else host
