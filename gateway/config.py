"""The gateway's process configuration: flags, then environment, then defaults, checked once.

As for the sidecar, every setting has one flag and one environment variable, its default and
range live here (`GatewayConfig`'s fields and `SETTINGS`), and a bad value stops the process
at start with "--flag (env VAR) = 'value', must be ..." and exit status 2. The targets file is
read and checked here too (gateway.targets), so a bad one stops the start the same way.
REDIS_PASSWORD and REDIS_SENTINEL_PASSWORD come from the environment only (a Secret).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.targets import Target, TargetsError, load_targets
from scaler.parsing import LOG_LEVELS, REQUIRED, Setting, SettingsReader, shown, with_defaults
from scaler.redis_connect import check_redis_url, without_password


class ConfigError(ValueError):
    """A setting that is missing, malformed or out of range; the message names flag and variable."""


@dataclass(frozen=True)
class GatewayConfig:
    targets: tuple[Target, ...]
    # Stable across restarts of one pod (its name), unique among gateways: the reply stream
    # and the live key are named after it.
    name: str
    redis_url: str = "redis://localhost:6379/0"
    redis_password: str | None = None
    redis_sentinel_password: str | None = None
    redis_timeout_s: float = 1.0
    bind_address: str = "0.0.0.0"
    port: int = 8000  # Triton's HTTP port: clients change the host only
    metrics_port: int = 9103
    max_body_bytes: int = 8 * 1024 * 1024
    # On SIGTERM: readiness fails at once, requests are still taken for this long (while the
    # Service's endpoints drop this pod), then no new ones; those in flight get the grace.
    shutdown_delay_s: float = 2.0
    shutdown_grace_s: float = 30.0
    log_level: str = "INFO"

    def __repr__(self) -> str:  # the passwords must never reach a log line
        return (
            f"GatewayConfig(name={self.name!r}, targets={[t.label for t in self.targets]!r}, "
            f"redis_url={without_password(self.redis_url)!r}, port={self.port!r}, "
            f"metrics_port={self.metrics_port!r}, max_body_bytes={self.max_body_bytes!r}, "
            f"shutdown_delay_s={self.shutdown_delay_s!r}, "
            f"shutdown_grace_s={self.shutdown_grace_s!r})"
        )


SETTINGS: dict[str, Setting] = {
    "targets": Setting(
        "--targets",
        "GATEWAY_TARGETS_FILE",
        "JSON file of targets: which ScaledObject serves which models, paths or hosts "
        "(see docs/queueing.md)",
    ),
    "name": Setting(
        "--name",
        "GATEWAY_NAME",
        "this gateway's name, unique among gateways and stable across its restarts",
    ),
    "redis_url": Setting(
        "--redis-url",
        "REDIS_URL",
        "redis://, rediss:// or unix:// URL; redis+sentinel://host:port[,...]/service "
        "or redis+cluster://host:port[,...] (rediss+ for TLS), see docs/redis.md",
    ),
    "redis_timeout_s": Setting(
        "--redis-timeout", "REDIS_TIMEOUT_SECONDS", "bound on one call to Redis, in (0; 30]"
    ),
    "bind_address": Setting("--bind-address", "BIND_ADDRESS", "address of both ports"),
    "port": Setting("--port", "PORT", "port of the inference APIs and /healthz, /readyz"),
    "metrics_port": Setting("--metrics-port", "METRICS_PORT", "port of /metrics and /healthz"),
    "max_body_bytes": Setting(
        "--max-body-bytes",
        "MAX_BODY_BYTES",
        "largest request body taken, in [1024; 1073741824]; larger: 413",
    ),
    "shutdown_delay_s": Setting(
        "--shutdown-delay",
        "SHUTDOWN_DELAY_SECONDS",
        "on SIGTERM, seconds readiness fails while requests are still taken, in [0; 60]",
    ),
    "shutdown_grace_s": Setting(
        "--shutdown-grace",
        "SHUTDOWN_GRACE_SECONDS",
        "then, seconds requests in flight get to finish, in [0; 3600]; those still waiting get 503",
    ),
    "log_level": Setting("--log-level", "LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR"),
}

# What --help shows where the default is not a GatewayConfig field's (tests/test_cli.py checks
# every shown default against the configuration loaded without the setting).
SETTINGS = with_defaults(
    SETTINGS,
    GatewayConfig(targets=(), name="-"),
    {
        "targets": REQUIRED,
        "name": "the host name (in a pod: the pod's name)",
        "max_body_bytes": "8388608 (8 MiB)",
    },
)

# Part of Redis key names inside a {hash tag}: no braces, no spaces.
_GATEWAY_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9])?$")


_DESCRIPTION = (
    "Holds inference requests in Redis until a pod of their target takes them, and relays the "
    "reply (KServe v2, generate, OpenAI-compatible). Every flag can also be given as the "
    "environment variable named in its help; the flag wins. REDIS_PASSWORD and "
    "REDIS_SENTINEL_PASSWORD (from a Secret) are read from the environment only."
)


def load_config(argv: Sequence[str], env: Mapping[str, str]) -> GatewayConfig:
    """Flags from `argv`, else variables from `env`, else defaults; raises ConfigError."""
    read = SettingsReader("python -m gateway", _DESCRIPTION, SETTINGS, argv, env, ConfigError)
    d = GatewayConfig(targets=(), name="-")

    targets_path = read.text("targets", "")
    if not targets_path:
        raise ConfigError(f"{SETTINGS['targets'].name} is required: {SETTINGS['targets'].help}")
    try:
        targets = load_targets(targets_path)
    except TargetsError as exc:
        raise ConfigError(f"{SETTINGS['targets'].name} = {shown(targets_path)}: {exc}") from None
    name = read.text("name", socket.gethostname())
    if not _GATEWAY_NAME.match(name):
        raise ConfigError(
            f"{SETTINGS['name'].name} = {shown(name)}, must be letters, digits, '-', '_' "
            "and '.' (it names Redis keys), at most 253 characters"
        )
    log_level = read.choice("log_level", d.log_level, LOG_LEVELS, upper=True)
    return GatewayConfig(
        targets=targets,
        name=name,
        redis_url=check_redis_url(
            SETTINGS["redis_url"].name, read.text("redis_url", d.redis_url), ConfigError
        ),
        redis_password=env.get("REDIS_PASSWORD") or None,
        redis_sentinel_password=env.get("REDIS_SENTINEL_PASSWORD") or None,
        redis_timeout_s=read.number("redis_timeout_s", d.redis_timeout_s, 0, 30, low_open=True),
        bind_address=read.text("bind_address", d.bind_address),
        port=read.integer("port", d.port, 0, 65535),
        metrics_port=read.integer("metrics_port", d.metrics_port, 0, 65535),
        max_body_bytes=read.integer("max_body_bytes", d.max_body_bytes, 1024, 1 << 30),
        shutdown_delay_s=read.number("shutdown_delay_s", d.shutdown_delay_s, 0, 60, low_open=False),
        shutdown_grace_s=read.number(
            "shutdown_grace_s", d.shutdown_grace_s, 0, 3600, low_open=False
        ),
        log_level=log_level,
    )
