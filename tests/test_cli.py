"""`python -m scaler serve` as a real process: settings, start, SIGTERM, a local Redis for dev."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from scaler.local_redis import LocalRedis, answers, free_port
from tests.harness import KedaClient, ref


@contextmanager
def scaler_process(**env: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "scaler", *env.pop("ARGS", "serve").split()],
        env={**os.environ, "LOG_LEVEL": "INFO", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def _wait_ready(port: int) -> grpc.Channel:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    health = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="externalscaler.ExternalScaler")
    for update in health.Watch(request, timeout=20, wait_for_ready=True):
        if update.status == health_pb2.HealthCheckResponse.SERVING:
            return channel
    raise AssertionError("scaler never became ready")


def test_bad_setting_exits_non_zero_naming_the_variable() -> None:
    with scaler_process(GRPC_PORT="ninety") as process:
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "GRPC_PORT = 'ninety', must be an integer in [0; 65535]" in output


def test_serves_keda_then_stops_cleanly_on_sigterm(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    grpc_port, metrics_port = free_port(), free_port()
    redis_client.rpush("q", 1, 2)
    with scaler_process(
        REDIS_URL=redis_server.url, GRPC_PORT=str(grpc_port), METRICS_PORT=str(metrics_port)
    ) as process:
        channel = _wait_ready(grpc_port)
        poll = KedaClient(pb_grpc.ExternalScalerStub(channel)).poll(ref("m", queueKey="q"))
        assert (poll.value_float, poll.active) == (2, True)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        channel.close()
    assert process.returncode == 0, output
    assert "shutting down" in output


def test_start_local_redis_when_nothing_answers_and_stop_it_after() -> None:
    grpc_port, redis_port = free_port(), free_port()
    url = f"redis://127.0.0.1:{redis_port}/0"
    assert not answers(url)
    with scaler_process(
        ARGS="serve --start-local-redis", REDIS_URL=url, GRPC_PORT=str(grpc_port), METRICS_PORT="0"
    ) as process:
        channel = _wait_ready(grpc_port)
        assert answers(url)
        process.send_signal(signal.SIGINT)  # Ctrl-C, as `make run` is stopped
        output, _ = process.communicate(timeout=30)
        channel.close()
    assert "started a local redis-server" in output
    assert process.returncode == 0, output
    assert output.strip().splitlines()[-1].endswith("stopped cleanly"), output
    assert not answers(url)


def test_start_local_redis_says_when_it_uses_a_redis_that_answers_and_what_it_changes() -> None:
    local = LocalRedis(free_port())
    local.start()
    try:
        url = f"redis://127.0.0.1:{local.port}/0"
        redis.Redis.from_url(url).config_set("notify-keyspace-events", "")
        grpc_port = free_port()
        with scaler_process(
            ARGS="serve --start-local-redis",
            REDIS_URL=url,
            GRPC_PORT=str(grpc_port),
            METRICS_PORT="0",
        ) as process:
            channel = _wait_ready(grpc_port)
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=30)
            channel.close()
        assert answers(url), "a Redis the scaler did not start is left running"
    finally:
        local.close()
    assert f"a Redis answers at 127.0.0.1:{local.port}: using it" in output
    assert "Redis notify-keyspace-events '' -> " in output
    assert process.returncode == 0, output


def test_serve_help_lists_every_environment_variable_read_and_points_to_the_docs() -> None:
    from scaler.settings import ENVIRONMENT

    source = (Path(__file__).resolve().parents[1] / "scaler" / "settings.py").read_text()
    body = source.split("def settings_from_env", 1)[1]
    read = set(re.findall(r'(?:env\.get|integer|port|seconds)\(\s*"([A-Z_]+)"', body))
    read -= {"KUBERNETES_SERVICE_HOST"}  # set by Kubernetes, not by the user
    assert {name for name, _ in ENVIRONMENT} == read
    result = subprocess.run(
        [sys.executable, "-m", "scaler", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for name, default in ENVIRONMENT:
        assert re.search(rf"^  {name} +{re.escape(default)}$", result.stdout, re.M), name
    assert "docs/configuration.md" in result.stdout


def test_simulate_scores_runs_with_flags_named_apart_from_the_trigger_keys() -> None:
    """`--slo-wait` sets the key sloWaitSeconds; the SLO the runs are scored by is another
    thing, and a flag beside it called --slo-wait-s (or --slo-target) read as the key."""
    result = subprocess.run(
        [sys.executable, "-m", "scaler", "simulate", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    flags = set(re.findall(r"(--[a-z-]+)", result.stdout))
    assert {"--score-wait-s", "--score-share", "--slo-wait"} <= flags
    assert not {"--slo-wait-s", "--slo-target"} & flags


HELP_TEXT_DEFAULTS = {  # settings whose shown default is not a config field's value
    "sidecar": {"models", "poll_interval_s", "deletion_cost", "worker", "worker_slots"},
    "gateway": {"name", "max_body_bytes"},
}


def _shown(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def test_sidecar_and_gateway_help_show_each_default_as_used_and_mark_the_required() -> None:
    from gateway import config as gateway_config
    from scaler.parsing import REQUIRED
    from sidecar import config as sidecar_config

    root = Path(__file__).resolve().parents[1]
    minimal = {
        "sidecar": {"POD_NAME": "llama-0", "POD_NAMESPACE": "inference", "TARGET_NAME": "llama"},
        "gateway": {"GATEWAY_TARGETS_FILE": str(root / "manifests/gateway/targets.json")},
    }
    for program, module in (("sidecar", sidecar_config), ("gateway", gateway_config)):
        loaded = module.load_config([], minimal[program])
        result = subprocess.run(
            [sys.executable, "-m", program, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={**os.environ, "COLUMNS": "1000"},
        )
        for key, setting in module.SETTINGS.items():
            if setting.default == REQUIRED:
                assert f"[env {setting.env}; required]" in result.stdout, key
                without = {k: v for k, v in minimal[program].items() if k != setting.env}
                with pytest.raises(module.ConfigError, match=re.escape(setting.name)):
                    module.load_config([], without)
                continue
            assert f"[env {setting.env}; default {setting.default}]" in result.stdout, key
            if key not in HELP_TEXT_DEFAULTS[program]:
                assert _shown(getattr(loaded, key)) == setting.default, (program, key)


def test_make_run_installs_the_runtime_only_and_make_test_adds_the_extras(tmp_path: Path) -> None:
    """What each target would run in a fresh clone (make -n, nothing installed): `make run`
    installs the package without extras and the code generators outside .venv; `make test`
    adds the extras before the code is generated, so that code fits what they installed."""
    root = Path(__file__).resolve().parents[1]
    for name in ("Makefile", "pyproject.toml", "proto/externalscaler.proto"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes((root / name).read_bytes())

    def planned(target: str) -> list[str]:
        done = subprocess.run(
            ["make", "-n", "--no-print-directory", target],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return [line for line in done.stdout.splitlines() if "pip install" in line]

    run = planned("run")
    assert any(line.endswith("pip install --quiet -e .") for line in run), run
    assert not any("[dev" in line or "[sim" in line for line in run), run
    (tools,) = [line for line in run if "grpcio-tools" in line or "--target" in line]
    assert '--target "$tools"' in tools  # a throwaway directory, not .venv
    test = planned("test")
    extras = next(i for i, line in enumerate(test) if "'.[dev,sim]'" in line)
    assert extras < next(i for i, line in enumerate(test) if '--target "$tools"' in line)
