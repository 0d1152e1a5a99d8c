"""The scaler and the sidecar's reporter run without numpy, matplotlib and tritonclient.

matplotlib comes with the `sim` extra only; tritonclient (and numpy, which it needs) is a
runtime dependency for the worker alone (`WORKER=on`: the KServe v2 client to Triton). A
scaler or a reporter that imported one would carry it for nothing, or fail where it is left
out. Here the real processes run with stand-ins for those packages first on their path that
fail on import: the scaler serves KEDA's polls and the sidecar (gRPC readiness, the heaviest
path) writes reports.
"""

from __future__ import annotations

import os
import time
import tomllib
from pathlib import Path

import grpc
import redis

from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from scaler.local_redis import LocalRedis
from tests.benchmarks.common import scaler_process
from tests.harness import KedaClient, ReportPublisher, pod_report, ref
from tests.test_sidecar_process import eventually, pods

ROOT = Path(__file__).resolve().parents[1]
SIMULATOR_ONLY = ("numpy", "matplotlib", "tritonclient")  # poisoned below
WORKER_ONLY = ("tritonclient",)


def _poisoned_path(tmp_path: Path) -> str:
    for name in SIMULATOR_ONLY:
        package = tmp_path / name
        package.mkdir()
        (package / "__init__.py").write_text(
            f"raise ImportError('{name} imported by a runtime process')\n"
        )
    return os.pathsep.join([str(tmp_path), str(ROOT)])


def test_runtime_dependencies_leave_the_simulator_packages_to_the_sim_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"])
    assert "matplotlib" not in runtime and "numpy" not in runtime
    assert all(name in runtime for name in WORKER_ONLY)
    sim = " ".join(project["optional-dependencies"]["sim"])
    assert all(name in sim for name in ("numpy", "matplotlib"))


def test_scaler_serves_keda_without_numpy(
    tmp_path: Path, redis_server: LocalRedis, publisher: ReportPublisher
) -> None:
    # Stamped with this machine's clock, which is Redis's: the scaler decides on Redis time.
    publisher.publish("llama", pod_report("llama-0", inflight=12), at=time.time())
    with (
        scaler_process(redis_server.url, PYTHONPATH=_poisoned_path(tmp_path)) as port,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        poll = KedaClient(pb_grpc.ExternalScalerStub(channel)).poll(ref("llama"))
    assert (poll.value_float, poll.active) == (12, True)


def test_sidecar_reports_over_grpc_readiness_without_numpy(
    tmp_path: Path, redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    with pods(
        "llama-0",
        target="llama",
        redis_url=redis_server.url,
        PYTHONPATH=_poisoned_path(tmp_path),
        TRITON_READINESS="grpc",
    ) as (pod,):
        pod.load(active=3)
        report = eventually(lambda: pod.report(redis_client), lambda r: r is not None)
        assert report is not None and report.ready
        assert pod.process.poll() is None
