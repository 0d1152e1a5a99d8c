"""The sidecar's process configuration: flags, then environment, then defaults, checked once.

Every setting has one flag and one environment variable (the pod manifest can use
either; the downward API and Secrets only fill variables), its default and its
allowed range live in `SETTINGS` below, in one place. A bad value stops the
process at start with "--flag (env VAR) = 'value', must be ..." and a non-zero
exit, before anything is written anywhere.

The Redis password is deliberately a variable only (REDIS_PASSWORD, from a
Secret): a flag would show it in `ps` and in the pod spec.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from scaler.parsing import (
    LOG_LEVELS,
    REQUIRED,
    SWITCHES,
    Setting,
    SettingsReader,
    int_in_range,
    shown,
    switched_on,
    with_defaults,
)
from scaler.redis_connect import check_redis_url, without_password


class ConfigError(ValueError):
    """A setting that is missing, malformed or out of range; the message names flag and variable."""


@dataclass(frozen=True)
class SidecarConfig:
    pod: str
    namespace: str
    target: str
    redis_url: str = "redis://localhost:6379/0"
    redis_password: str | None = None
    redis_sentinel_password: str | None = None
    # Readiness is asked over Triton's HTTP API (lightest) or its gRPC API.
    readiness: str = "http"
    triton_http_url: str = "http://localhost:8000"
    triton_grpc_url: str = "localhost:8001"
    triton_metrics_url: str = "http://localhost:8002/metrics"
    # Empty: every model Triton serves counts; readiness then checks the server alone.
    # What each model counts for is read from Triton (sidecar.selection).
    models: tuple[str, ...] = ()
    # Concurrent requests one pod serves when the engine does not publish its own
    # maximum (plain Triton), and the capacity a starting pod announces. 0: unknown.
    capacity: float = 0.0
    # A report is written at least this often, and at once when the load changes.
    interval_s: float = 1.0
    # Triton is read this often to notice a change between two interval reports.
    poll_interval_s: float = 0.5
    # Bound on one call to Triton (a readiness check, a metrics scrape) and to Redis.
    triton_timeout_s: float = 0.5
    redis_timeout_s: float = 1.0
    bind_address: str = "0.0.0.0"
    metrics_port: int = 9102
    log_level: str = "INFO"
    # Keep the pod's pod-deletion-cost annotation in step with its load (sidecar.deletion_cost).
    # DELETION_COST=auto, the default of load_config, is on in a cluster; built in code, off.
    deletion_cost: bool = False
    # The in-pod worker (sidecar.worker): takes the target's queued requests and runs them
    # on this pod's Triton. Off: the sidecar only reports.
    worker: bool = False
    # Requests the worker runs at once; WORKER_SLOTS unset: CAPACITY (0 only while off).
    worker_slots: int = 0
    # An entry held this long without a sign of life (its pod died) is taken by another pod.
    claim_idle_s: float = 30.0
    # On SIGTERM the worker finishes what it holds for at most this long.
    worker_grace_s: float = 25.0
    # Triton's OpenAI-compatible frontend, for /v1/completions and /v1/chat/completions.
    openai_url: str = "http://localhost:9000"

    def __repr__(self) -> str:  # the password must never reach a log line
        password = None if self.redis_password is None else "***"
        return (
            f"SidecarConfig(pod={self.pod!r}, namespace={self.namespace!r}, "
            f"target={self.target!r}, redis_url={without_password(self.redis_url)!r}, "
            f"redis_password={password!r}, "
            f"redis_sentinel_password={None if self.redis_sentinel_password is None else '***'!r}, "
            f"readiness={self.readiness!r}, "
            f"triton_http_url={self.triton_http_url!r}, triton_grpc_url={self.triton_grpc_url!r}, "
            f"triton_metrics_url={self.triton_metrics_url!r}, models={self.models!r}, "
            f"capacity={self.capacity!r}, interval_s={self.interval_s!r}, "
            f"poll_interval_s={self.poll_interval_s!r}, deletion_cost={self.deletion_cost!r}, "
            f"worker={self.worker!r}, worker_slots={self.worker_slots!r}, "
            f"claim_idle_s={self.claim_idle_s!r}, worker_grace_s={self.worker_grace_s!r}, "
            f"openai_url={self.openai_url!r})"
        )


SETTINGS: dict[str, Setting] = {
    "pod": Setting("--pod-name", "POD_NAME", "this pod's name (downward API metadata.name)"),
    "namespace": Setting(
        "--namespace", "POD_NAMESPACE", "this pod's namespace (downward API metadata.namespace)"
    ),
    "target": Setting(
        "--target",
        "TARGET_NAME",
        "name reports are filed under: the ScaledObject's targetName, or its name where "
        "targetName is unset",
    ),
    "redis_url": Setting(
        "--redis-url",
        "REDIS_URL",
        "redis://, rediss:// or unix:// URL; redis+sentinel://host:port[,...]/service "
        "or redis+cluster://host:port[,...] (rediss+ for TLS), see docs/redis.md",
    ),
    "readiness": Setting(
        "--readiness",
        "TRITON_READINESS",
        "http or grpc: ask Triton's readiness at TRITON_HTTP_URL (the lighter) "
        "or over its gRPC API at TRITON_GRPC_URL",
    ),
    "triton_http_url": Setting(
        "--triton-http-url", "TRITON_HTTP_URL", "Triton's HTTP endpoint (http://host:port)"
    ),
    "triton_grpc_url": Setting("--triton-grpc-url", "TRITON_GRPC_URL", "Triton's gRPC host:port"),
    "triton_metrics_url": Setting(
        "--triton-metrics-url", "TRITON_METRICS_URL", "Triton's Prometheus endpoint (http://)"
    ),
    "models": Setting(
        "--models",
        "TRITON_MODELS",
        "comma-separated models clients call, to count and check (an ensemble counts "
        "through the engine it runs); empty: all",
    ),
    "capacity": Setting(
        "--capacity", "CAPACITY", "requests one pod serves at once when Triton does not say, >= 0"
    ),
    "interval_s": Setting(
        "--interval", "REPORT_INTERVAL_SECONDS", "seconds between reports, in (0; 60]"
    ),
    "poll_interval_s": Setting(
        "--poll-interval",
        "POLL_INTERVAL_SECONDS",
        "seconds between reads of Triton, in (0; interval]",
    ),
    "triton_timeout_s": Setting(
        "--triton-timeout", "TRITON_TIMEOUT_SECONDS", "bound on one call to Triton, in (0; 30]"
    ),
    "redis_timeout_s": Setting(
        "--redis-timeout", "REDIS_TIMEOUT_SECONDS", "bound on one call to Redis, in (0; 30]"
    ),
    "bind_address": Setting("--bind-address", "BIND_ADDRESS", "address of /metrics and /healthz"),
    "metrics_port": Setting("--metrics-port", "METRICS_PORT", "port of /metrics and /healthz"),
    "log_level": Setting("--log-level", "LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR"),
    "deletion_cost": Setting(
        "--deletion-cost",
        "DELETION_COST",
        "auto, on or off: keep this pod's controller.kubernetes.io/pod-deletion-cost at its "
        "load, so scale-down removes idle pods first (needs get/patch on pods); "
        "auto: on in a cluster",
    ),
    "worker": Setting(
        "--worker",
        "WORKER",
        "on or off: also take the target's queued requests (the gateway's) and "
        "run them on this pod's Triton, from the moment it is ready",
    ),
    "worker_slots": Setting(
        "--worker-slots",
        "WORKER_SLOTS",
        "requests the worker runs at once, an integer >= 1",
    ),
    "claim_idle_s": Setting(
        "--claim-idle-seconds",
        "CLAIM_IDLE_SECONDS",
        "a request held this long by a pod that stopped is taken by another, in (0; 3600]",
    ),
    "worker_grace_s": Setting(
        "--worker-grace-seconds",
        "WORKER_GRACE_SECONDS",
        "on SIGTERM, seconds the worker finishes what it holds before it stops, in [0; 3600] "
        "(below the pod's terminationGracePeriodSeconds)",
    ),
    "openai_url": Setting(
        "--openai-url",
        "OPENAI_URL",
        "Triton's OpenAI-compatible frontend (http://host:port) for /v1/ routes",
    ),
}
# What --help shows where the default is not a SidecarConfig field's (tests/test_cli.py
# checks every shown default against the configuration loaded without the setting).
SETTINGS = with_defaults(
    SETTINGS,
    SidecarConfig(pod="-", namespace="-", target="-"),
    {
        "pod": REQUIRED,
        "namespace": REQUIRED,
        "target": REQUIRED,
        "models": "'' (every model Triton serves)",
        "poll_interval_s": "min(0.5, interval)",
        "deletion_cost": "auto",
        "worker": "off",
        "worker_slots": "CAPACITY (required with WORKER=on if CAPACITY is not a whole number)",
    },
)


_READINESS = ("http", "grpc")
# Kubernetes object names (RFC 1123 subdomain), the shape of pod and target names.
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
# Triton model names are directory names in the model repository.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")


_DESCRIPTION = (
    "Reports this pod's Triton load to Redis for the LLM KEDA scaler. Every flag can also be "
    "given as the environment variable named in its help; the flag wins. REDIS_PASSWORD and "
    "REDIS_SENTINEL_PASSWORD (from a Secret) are read from the environment only."
)


def load_config(argv: Sequence[str], env: Mapping[str, str]) -> SidecarConfig:
    """Flags from `argv`, else variables from `env`, else defaults; raises ConfigError."""
    read = SettingsReader("python -m sidecar", _DESCRIPTION, SETTINGS, argv, env, ConfigError)
    raw = read.raw
    number = read.number
    d = SidecarConfig(pod="-", namespace="-", target="-")

    def name(key: str) -> str:
        value = raw(key)
        setting = SETTINGS[key]
        if value is None:
            raise ConfigError(f"{setting.name} is required: {setting.help}")
        if not _K8S_NAME.match(value):
            raise ConfigError(
                f"{setting.name} = {shown(value)}, must be a Kubernetes object name "
                "(lower-case letters, digits, '-' and '.', at most 253 characters)"
            )
        return value

    interval_s = number("interval_s", d.interval_s, 0, 60, low_open=True)
    poll_default = min(d.poll_interval_s, interval_s)
    poll_interval_s = number("poll_interval_s", poll_default, 0, interval_s, low_open=True)
    log_level = read.choice("log_level", d.log_level, LOG_LEVELS, upper=True)
    deletion_cost = read.choice("deletion_cost", "auto", SWITCHES)
    readiness = read.choice("readiness", d.readiness, _READINESS)
    capacity = number("capacity", d.capacity, 0, 1_000_000, low_open=False)
    worker = (raw("worker", "off") or "off").lower()
    if worker not in ("on", "off"):
        raise ConfigError(f"{SETTINGS['worker'].name} = {shown(worker)}, must be on or off")
    return SidecarConfig(
        pod=name("pod"),
        namespace=name("namespace"),
        target=_target_name(raw("target")),
        redis_url=_redis_url(raw("redis_url", d.redis_url) or d.redis_url),
        redis_password=env.get("REDIS_PASSWORD") or None,
        redis_sentinel_password=env.get("REDIS_SENTINEL_PASSWORD") or None,
        readiness=readiness,
        triton_http_url=_http_url("triton_http_url", raw("triton_http_url", d.triton_http_url)),
        triton_grpc_url=_grpc_address(raw("triton_grpc_url", d.triton_grpc_url)),
        triton_metrics_url=_http_url(
            "triton_metrics_url", raw("triton_metrics_url", d.triton_metrics_url)
        ),
        models=_models(raw("models", "") or ""),
        capacity=capacity,
        interval_s=interval_s,
        poll_interval_s=poll_interval_s,
        triton_timeout_s=number("triton_timeout_s", d.triton_timeout_s, 0, 30, low_open=True),
        redis_timeout_s=number("redis_timeout_s", d.redis_timeout_s, 0, 30, low_open=True),
        bind_address=raw("bind_address", d.bind_address) or d.bind_address,
        metrics_port=read.integer("metrics_port", d.metrics_port, 0, 65535),
        log_level=log_level,
        deletion_cost=switched_on(deletion_cost, env),
        worker=worker == "on",
        worker_slots=_worker_slots(raw("worker_slots"), capacity) if worker == "on" else 0,
        claim_idle_s=number("claim_idle_s", d.claim_idle_s, 0, 3600, low_open=True),
        worker_grace_s=number("worker_grace_s", d.worker_grace_s, 0, 3600, low_open=False),
        openai_url=_http_url("openai_url", raw("openai_url", d.openai_url)),
    )


def _worker_slots(value: str | None, capacity: float) -> int:
    setting = SETTINGS["worker_slots"]
    if value is None:
        if capacity < 1 or capacity != int(capacity):
            raise ConfigError(
                f"{setting.name} is required with WORKER=on when {SETTINGS['capacity'].name} "
                f"is not a whole number >= 1 (it is {capacity:g}): {setting.help}"
            )
        return int(capacity)
    return int_in_range(setting.name, value, 1, 100_000, error=ConfigError)


def _target_name(value: str | None) -> str:
    setting = SETTINGS["target"]
    if value is None:
        raise ConfigError(f"{setting.name} is required: {setting.help}")
    # The scaler accepts targetName in this shape (scaler.target_config); anything
    # else would be filed under a key no ScaledObject can name.
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$", value):
        raise ConfigError(
            f"{setting.name} = {shown(value)}, must be a name of letters, digits, '.', '_' "
            "and '-' (at most 253 characters), as in the ScaledObject's targetName"
        )
    return value


def _redis_url(value: str) -> str:
    return check_redis_url(SETTINGS["redis_url"].name, value, ConfigError)


def _grpc_address(value: str | None) -> str:
    setting = SETTINGS["triton_grpc_url"]
    text = value or ""
    host, _, port = text.rpartition(":")
    if "://" in text or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"{setting.name} = {shown(text)}, must be host:port, e.g. localhost:8001 "
            "(no scheme: a gRPC target is a plain address)"
        )
    return text


def _http_url(key: str, value: str | None) -> str:
    setting = SETTINGS[key]
    text = value or ""
    parts = urlsplit(text)
    try:
        port_ok = parts.port is not None or parts.scheme == "http"
    except ValueError:
        port_ok = False
    if parts.scheme != "http" or not parts.hostname or not port_ok:
        raise ConfigError(
            f"{setting.name} = {shown(text)}, must be an http:// URL, "
            f"e.g. {getattr(SidecarConfig('-', '-', '-'), key)}"
        )
    return text


def _models(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(m.strip() for m in value.split(",") if m.strip()))
    for model in names:
        if not _MODEL_NAME.match(model):
            raise ConfigError(
                f"{SETTINGS['models'].name} = {shown(value)}: model {shown(model)} must be "
                "letters, digits, '_', '.' and '-'"
            )
    return names
