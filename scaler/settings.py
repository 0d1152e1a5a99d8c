"""Process settings of the scaler, from the environment, checked once at start.

Per-ScaledObject settings are not here: they come with each call (`target_config`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from scaler.parsing import LOG_LEVELS, SWITCHES, int_in_range, number_in_range, shown, switched_on
from scaler.redis_connect import check_redis_url


class SettingsError(ValueError):
    """A process setting that is malformed or out of range; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://localhost:6379/0"
    # Overrides any password in REDIS_URL, so the password can come from a Secret alone.
    redis_password: str | None = None
    # Sentinels' own password (REDIS_URL redis+sentinel://), also from a Secret; None: no AUTH.
    redis_sentinel_password: str | None = None
    bind_address: str = "0.0.0.0"
    grpc_port: int = 9090
    metrics_port: int = 9100
    # Bound on one Redis read: KEDA's HPA path allows ~3 s for three calls together.
    redis_timeout_s: float = 1.0
    # An open StreamIsActive is pushed by key events; this is its safety re-check
    # for events missed (Redis restarted, notifications off).
    stream_interval_s: float = 10.0
    # Redis is pinged this often; readiness fails when the last success is older than 2x.
    health_interval_s: float = 5.0
    # On SIGTERM, calls in flight get this long to finish.
    shutdown_grace_s: float = 10.0
    log_level: str = "INFO"
    # gRPC TLS (see scaler.tls): certificate and key, and a CA to require client certificates.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None
    # Bounds on what clients can make the process hold (see SECURITY.md).
    max_message_bytes: int = 64 * 1024
    max_streams: int = 10_000
    # A ScaledObject's series go when it has not been decided on for this long (KEDA
    # never says it was deleted: it stops asking), and at most this many are kept.
    series_idle_s: float = 300.0
    max_target_series: int = 10_000
    # Watch the served namespaces' pods (scaler.pod_watch). WATCH_PODS=auto, the default of
    # settings_from_env, is on in a cluster; built in code (tests), it is off unless asked.
    watch_pods: bool = False


_D = Settings()
# Every variable settings_from_env reads, with its default, for `python -m scaler serve --help`
# (tests/test_cli.py checks this list against the variables read; docs/configuration.md
# explains each).
ENVIRONMENT: tuple[tuple[str, str], ...] = (
    ("REDIS_URL", _D.redis_url + " (rediss://, redis+sentinel://, redis+cluster://)"),
    ("REDIS_PASSWORD", "none (overrides the URL's)"),
    ("REDIS_SENTINEL_PASSWORD", "none"),
    ("REDIS_TIMEOUT_SECONDS", f"{_D.redis_timeout_s:g}"),
    ("BIND_ADDRESS", _D.bind_address),
    ("GRPC_PORT", str(_D.grpc_port)),
    ("METRICS_PORT", str(_D.metrics_port)),
    ("STREAM_INTERVAL_SECONDS", f"{_D.stream_interval_s:g}"),
    ("HEALTH_INTERVAL_SECONDS", f"{_D.health_interval_s:g}"),
    ("SHUTDOWN_GRACE_SECONDS", f"{_D.shutdown_grace_s:g}"),
    ("LOG_LEVEL", _D.log_level),
    ("TLS_CERT_FILE", "none (plaintext gRPC)"),
    ("TLS_KEY_FILE", "none"),
    ("TLS_CLIENT_CA_FILE", "none (no client certificates required)"),
    ("MAX_MESSAGE_BYTES", str(_D.max_message_bytes)),
    ("MAX_STREAMS", str(_D.max_streams)),
    ("SERIES_IDLE_SECONDS", f"{_D.series_idle_s:g}"),
    ("MAX_TARGET_SERIES", str(_D.max_target_series)),
    ("WATCH_PODS", "auto (on in a cluster)"),
)


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """The scaler's Settings from the environment; SettingsError naming a bad variable."""
    d = Settings()
    redis_url = check_redis_url("REDIS_URL", env.get("REDIS_URL", d.redis_url), SettingsError)
    log_level = env.get("LOG_LEVEL", d.log_level).upper()
    if log_level not in LOG_LEVELS:
        raise SettingsError(f"LOG_LEVEL = {shown(log_level)}, must be one of {LOG_LEVELS}")

    tls_cert = env.get("TLS_CERT_FILE") or None
    tls_key = env.get("TLS_KEY_FILE") or None
    tls_client_ca = env.get("TLS_CLIENT_CA_FILE") or None
    if (tls_cert is None) != (tls_key is None):
        raise SettingsError(
            "TLS_CERT_FILE and TLS_KEY_FILE must be set together "
            f"(TLS_CERT_FILE = {tls_cert!r}, TLS_KEY_FILE = {tls_key!r})"
        )
    if tls_client_ca is not None and tls_cert is None:
        raise SettingsError(
            f"TLS_CLIENT_CA_FILE = {tls_client_ca!r} needs TLS_CERT_FILE and TLS_KEY_FILE too"
        )

    watch_pods = env.get("WATCH_PODS", "auto").strip().lower()
    if watch_pods not in SWITCHES:
        raise SettingsError(f"WATCH_PODS = {shown(watch_pods)}, must be one of {SWITCHES}")

    def integer(name: str, default: int, low: int, high: int) -> int:
        return int_in_range(name, env.get(name, str(default)), low, high, error=SettingsError)

    def port(name: str, default: int) -> int:
        return integer(name, default, 0, 65535)

    def seconds(name: str, default: float, low: float, high: float) -> float:
        raw = env.get(name, str(default))
        return number_in_range(name, raw, low, high, low_open=True, error=SettingsError)

    stream_interval_s = seconds("STREAM_INTERVAL_SECONDS", d.stream_interval_s, 0, 60)
    series_idle_s = seconds("SERIES_IDLE_SECONDS", d.series_idle_s, 0, 7 * 86400)
    # An open StreamIsActive decides every STREAM_INTERVAL_SECONDS: a watched target
    # must not lose its series between two of those.
    if series_idle_s < 2 * stream_interval_s:
        raise SettingsError(
            f"SERIES_IDLE_SECONDS = {series_idle_s:g}, must be at least twice "
            f"STREAM_INTERVAL_SECONDS ({stream_interval_s:g})"
        )

    return Settings(
        redis_url=redis_url,
        redis_password=env.get("REDIS_PASSWORD") or None,
        redis_sentinel_password=env.get("REDIS_SENTINEL_PASSWORD") or None,
        bind_address=env.get("BIND_ADDRESS", d.bind_address),
        grpc_port=port("GRPC_PORT", d.grpc_port),
        metrics_port=port("METRICS_PORT", d.metrics_port),
        redis_timeout_s=seconds("REDIS_TIMEOUT_SECONDS", d.redis_timeout_s, 0, 30),
        stream_interval_s=stream_interval_s,
        health_interval_s=seconds("HEALTH_INTERVAL_SECONDS", d.health_interval_s, 0, 300),
        shutdown_grace_s=seconds("SHUTDOWN_GRACE_SECONDS", d.shutdown_grace_s, 0, 300),
        log_level=log_level,
        tls_cert_file=tls_cert,
        tls_key_file=tls_key,
        tls_client_ca_file=tls_client_ca,
        max_message_bytes=integer("MAX_MESSAGE_BYTES", d.max_message_bytes, 1024, 16 * 1024 * 1024),
        max_streams=integer("MAX_STREAMS", d.max_streams, 1, 1_000_000),
        watch_pods=switched_on(watch_pods, env),
        series_idle_s=series_idle_s,
        max_target_series=integer("MAX_TARGET_SERIES", d.max_target_series, 1, 1_000_000),
    )


def configure_logging(settings: Settings) -> None:
    """Root logging at the settings' LOG_LEVEL, one line per record."""
    logging.basicConfig(
        level=getattr(logging, settings.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
