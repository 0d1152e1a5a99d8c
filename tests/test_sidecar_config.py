"""The sidecar's configuration: flags beat environment beat defaults; bad values stop the start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sidecar.config import ConfigError, SidecarConfig, load_config

DOWNWARD_API = {
    "POD_NAME": "llama-7b-5d9c-x2x",
    "POD_NAMESPACE": "inference",
    "TARGET_NAME": "llama",
}


def test_defaults_with_only_the_pod_identity_given() -> None:
    config = load_config([], DOWNWARD_API)
    assert config == SidecarConfig(pod="llama-7b-5d9c-x2x", namespace="inference", target="llama")
    assert config.triton_metrics_url == "http://localhost:8002/metrics"
    assert config.triton_grpc_url == "localhost:8001"
    assert (config.readiness, config.triton_http_url) == ("http", "http://localhost:8000")


def test_grpc_readiness_is_chosen_by_name_in_any_case() -> None:
    config = load_config([], {**DOWNWARD_API, "TRITON_READINESS": "gRPC"})
    assert config.readiness == "grpc"
    assert (config.interval_s, config.poll_interval_s) == (1.0, 0.5)


def test_flags_win_over_environment() -> None:
    env = {**DOWNWARD_API, "REPORT_INTERVAL_SECONDS": "5", "TRITON_MODELS": "a"}
    config = load_config(["--interval", "2", "--models", "ensemble, tensorrt_llm,ensemble"], env)
    assert config.interval_s == 2.0
    assert config.models == ("ensemble", "tensorrt_llm")


def test_poll_interval_defaults_to_the_interval_when_shorter() -> None:
    assert load_config(["--interval", "0.1"], DOWNWARD_API).poll_interval_s == 0.1


def test_redis_password_comes_from_the_environment_and_never_shows() -> None:
    config = load_config([], {**DOWNWARD_API, "REDIS_PASSWORD": "s3cret"})
    assert config.redis_password == "s3cret"
    assert "s3cret" not in repr(config)


BAD = [
    ("no-pod-name", [], {"POD_NAME": ""}, "--pod-name (env POD_NAME) is required"),
    ("no-target", [], {"TARGET_NAME": ""}, "--target (env TARGET_NAME) is required"),
    (
        "pod-name-shape",
        ["--pod-name", "Llama_0"],
        {},
        "--pod-name (env POD_NAME) = 'Llama_0', must be a Kubernetes object name",
    ),
    (
        "interval-zero",
        ["--interval", "0"],
        {},
        "--interval (env REPORT_INTERVAL_SECONDS) = '0', must be a number in (0; 60]",
    ),
    (
        "interval-env-text",
        [],
        {"REPORT_INTERVAL_SECONDS": "1s"},
        "--interval (env REPORT_INTERVAL_SECONDS) = '1s', must be a number in (0; 60]",
    ),
    (
        "poll-above-interval",
        ["--interval", "1", "--poll-interval", "2"],
        {},
        "--poll-interval (env POLL_INTERVAL_SECONDS) = '2', must be a number in (0; 1]",
    ),
    (
        "capacity-negative",
        ["--capacity", "-1"],
        {},
        "--capacity (env CAPACITY) = '-1', must be a number in [0; 1e6]",
    ),
    (
        "redis-scheme",
        [],
        {"REDIS_URL": "http://user:pw@redis:6379"},
        "--redis-url (env REDIS_URL) = 'http://user:***@redis:6379', must be a redis://",
    ),
    (
        "grpc-with-scheme",
        ["--triton-grpc-url", "http://localhost:8001"],
        {},
        "--triton-grpc-url (env TRITON_GRPC_URL) = 'http://localhost:8001', must be host:port",
    ),
    (
        "metrics-not-http",
        [],
        {"TRITON_METRICS_URL": "localhost:8002/metrics"},
        "(env TRITON_METRICS_URL) = 'localhost:8002/metrics', must be an http:// URL",
    ),
    (
        "http-not-http",
        ["--triton-http-url", "localhost:8000"],
        {},
        "--triton-http-url (env TRITON_HTTP_URL) = 'localhost:8000', must be an http:// URL, "
        "e.g. http://localhost:8000",
    ),
    (
        "readiness-transport",
        [],
        {"TRITON_READINESS": "tcp"},
        "--readiness (env TRITON_READINESS) = 'tcp', must be one of ('http', 'grpc')",
    ),
    ("model-name", ["--models", "a,b c"], {}, "model 'b c' must be letters"),
    (
        "metrics-port",
        ["--metrics-port", "99999"],
        {},
        "--metrics-port (env METRICS_PORT) = '99999', must be an integer in [0; 65535]",
    ),
    (
        "log-level",
        [],
        {"LOG_LEVEL": "chatty"},
        "--log-level (env LOG_LEVEL) = 'CHATTY', must be one of",
    ),
]


@pytest.mark.parametrize(("argv", "env", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_setting_is_refused_naming_flag_and_variable(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(argv, {**DOWNWARD_API, **env})
    assert message in str(err.value)
    assert "pw@" not in str(err.value)


def test_bad_configuration_exits_non_zero_with_the_message() -> None:
    env = {k: v for k, v in os.environ.items() if k not in DOWNWARD_API}
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "--interval", "0"],
        env={**env, **DOWNWARD_API},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--interval (env REPORT_INTERVAL_SECONDS) = '0', must be a number in (0; 60]" in (
        result.stderr
    )


def test_missing_pod_identity_exits_non_zero_with_the_message() -> None:
    env = {k: v for k, v in os.environ.items() if k not in DOWNWARD_API}
    result = subprocess.run(
        [sys.executable, "-m", "sidecar"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "--pod-name (env POD_NAME) is required" in result.stderr
