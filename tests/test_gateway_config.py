"""The gateway's configuration: the targets file and the process settings, each bad value
refused naming its key and what was expected; the target match; Retry-After's arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from gateway.drain import RETRY_AFTER_MAX_S, RETRY_AFTER_UNKNOWN_S, DrainRate, retry_after_s
from gateway.targets import Router, Target, TargetsError, parse_targets

LLAMA = {"namespace": "inference", "name": "llama", "models": ["llama"]}


def test_defaults_live_in_one_place() -> None:
    (target,) = parse_targets(json.dumps({"targets": [LLAMA]}))
    assert target == Target(namespace="inference", name="llama", models=("llama",))
    assert (target.queue_limit, target.timeout_s, target.max_deliveries) == (1000, 300.0, 3)


BAD_TARGETS = [
    ("not-json", "{", "targets file is not JSON"),
    ("no-targets-key", "{}", 'one key, "targets"'),
    ("empty", '{"targets": []}', "targets must be a non-empty list"),
    (
        "unknown-key",
        {**LLAMA, "queuelimit": 3},
        "targets[0].queuelimit is not a known key: one of namespace, name",
    ),
    ("no-namespace", {"name": "llama", "models": ["x"]}, "targets[0].namespace is required"),
    (
        "name-shape",
        {**LLAMA, "name": "Llama_7b"},
        'targets[0].name = "Llama_7b", must be a Kubernetes object name',
    ),
    (
        "queue-limit",
        {**LLAMA, "queueLimit": 0},
        "targets[0].queueLimit = 0, must be an integer in [1; 1000000]",
    ),
    (
        "queue-limit-type",
        {**LLAMA, "queueLimit": "10"},
        'targets[0].queueLimit = "10", must be an integer',
    ),
    (
        "timeout",
        {**LLAMA, "timeoutSeconds": 0},
        "targets[0].timeoutSeconds = 0, must be a number in (0; 86400]",
    ),
    (
        "max-deliveries",
        {**LLAMA, "maxDeliveries": True},
        "targets[0].maxDeliveries = true, must be an integer in [1; 100]",
    ),
    (
        "models-type",
        {**LLAMA, "models": "llama"},
        'targets[0].models = "llama", must be a list of strings',
    ),
    (
        "path",
        {**LLAMA, "paths": ["v1"]},
        "targets[0].paths holds \"v1\", must be paths starting with '/'",
    ),
    ("host", {**LLAMA, "hosts": ["a.example.com:80"]}, "must be host names without a port"),
    (
        "matches-nothing",
        {"namespace": "inference", "name": "llama"},
        "targets[0] matches no request",
    ),
]


@pytest.mark.parametrize(
    ("document", "message"), [c[1:] for c in BAD_TARGETS], ids=[c[0] for c in BAD_TARGETS]
)
def test_bad_targets_are_refused_naming_the_key(document: object, message: str) -> None:
    text = document if isinstance(document, str) else json.dumps({"targets": [document]})
    with pytest.raises(TargetsError) as caught:
        parse_targets(text)
    assert message in str(caught.value)


def test_a_model_claimed_twice_is_refused() -> None:
    second = {"namespace": "inference", "name": "llama-2", "models": ["llama"]}
    with pytest.raises(
        TargetsError, match=r"targets\[1\].models holds 'llama', already claimed by targets\[0\]"
    ):
        parse_targets(json.dumps({"targets": [LLAMA, second]}))


def test_router_prefers_host_then_longest_path_then_model() -> None:
    targets = parse_targets(
        json.dumps(
            {
                "targets": [
                    LLAMA,
                    {
                        "namespace": "inference",
                        "name": "lab",
                        "hosts": ["lab.example.com"],
                        "paths": ["/v2/models/exp"],
                    },
                    {
                        "namespace": "inference",
                        "name": "exp-big",
                        "paths": ["/v2/models/exp-big"],
                        "models": ["exp-big-1"],
                    },
                ]
            }
        )
    )
    router = Router(targets)

    def found(host: str | None, path: str, model: str) -> str | None:
        target = router.find(host, path, model)
        return None if target is None else target.name

    assert found(None, "/v1/completions", "llama") == "llama"
    assert found("LAB.example.com:8000", "/v1/completions", "llama") == "lab"
    assert found(None, "/v2/models/exp-1/infer", "exp-1") == "lab"
    assert found(None, "/v2/models/exp-big-1/infer", "exp-big-1") == "exp-big"
    assert found(None, "/v2/models/exp-big-2/infer", "exp-big-2") is None  # not among its models
    assert found("other.example.com", "/v1/completions", "gpt") is None


def write_targets(tmp_path: Path) -> str:
    path = tmp_path / "targets.json"
    path.write_text(json.dumps({"targets": [LLAMA]}))
    return str(path)


def test_settings_flags_beat_environment_beat_defaults(tmp_path: Path) -> None:
    env = {"GATEWAY_TARGETS_FILE": write_targets(tmp_path), "GATEWAY_NAME": "gw-0", "PORT": "9000"}
    config = load_config(["--port", "8080"], env)
    assert (config.name, config.port, config.metrics_port) == ("gw-0", 8080, 9103)
    assert (config.max_body_bytes, config.shutdown_delay_s, config.shutdown_grace_s) == (
        8 << 20,
        2.0,
        30.0,
    )
    assert config.targets[0].label == "inference/llama"
    assert load_config([], {**env, "REDIS_PASSWORD": "s3cret"}).redis_password == "s3cret"
    assert "s3cret" not in repr(load_config([], {**env, "REDIS_PASSWORD": "s3cret"}))


BAD_SETTINGS = [
    ("no-targets", [], {}, "--targets (env GATEWAY_TARGETS_FILE) is required"),
    ("missing-file", ["--targets", "/nonexistent.json"], {}, "cannot be read"),
    (
        "port",
        ["--port", "70000"],
        {},
        "--port (env PORT) = '70000', must be an integer in [0; 65535]",
    ),
    (
        "body",
        [],
        {"MAX_BODY_BYTES": "10"},
        "--max-body-bytes (env MAX_BODY_BYTES) = '10', must be an integer in [1024;",
    ),
    (
        "grace",
        ["--shutdown-grace", "-1"],
        {},
        "--shutdown-grace (env SHUTDOWN_GRACE_SECONDS) = '-1', must be a number in [0; 3600]",
    ),
    ("name", ["--name", "gw{0}"], {}, "--name (env GATEWAY_NAME) = 'gw{0}', must be letters"),
    (
        "redis",
        [],
        {"REDIS_URL": "http://redis"},
        "--redis-url (env REDIS_URL) = 'http://redis', must be a redis://",
    ),
    (
        "log-level",
        ["--log-level", "loud"],
        {},
        "--log-level (env LOG_LEVEL) = 'LOUD', must be one of",
    ),
]


@pytest.mark.parametrize(
    ("argv", "env", "message"), [c[1:] for c in BAD_SETTINGS], ids=[c[0] for c in BAD_SETTINGS]
)
def test_bad_settings_are_refused_naming_flag_and_variable(
    tmp_path: Path, argv: list[str], env: dict[str, str], message: str
) -> None:
    own_targets = message.startswith("--targets") or "--targets" in argv
    base = {} if own_targets else {"GATEWAY_TARGETS_FILE": write_targets(tmp_path)}
    with pytest.raises(ConfigError) as caught:
        load_config(argv, {"GATEWAY_NAME": "gw", **base, **env})
    assert message in str(caught.value)


def test_retry_after_follows_the_measured_drain_rate() -> None:
    rate = DrainRate()
    assert retry_after_s(100, rate.per_second(1000.0)) == RETRY_AFTER_UNKNOWN_S
    for i in range(50):  # 50 answers over 5 s: 5 per second over the 10 s window
        rate.record(1000.0 + i / 10)
    assert rate.per_second(1004.9) == 5.0
    assert retry_after_s(100, rate.per_second(1004.9)) == 20
    assert retry_after_s(1, rate.per_second(1004.9)) == 1
    assert retry_after_s(10_000, rate.per_second(1004.9)) == RETRY_AFTER_MAX_S
    # Answers older than the window no longer count.
    assert rate.per_second(1015.0) == 0.0
