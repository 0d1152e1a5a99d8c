"""From zero on a real Triton (issue 23's case): 50 requests reach the gateway while no pod
exists; 10 s later the pod starts (a real tritonserver from nvidia-pytriton, and its
`python -m sidecar` with WORKER=on); every request must be answered with its own value, and
the first one must start executing soon after Triton is ready.

Both ends are on this machine's clock: Triton's readiness is probed here every PROBE_S over
HTTP, and "ready" is taken as the moment the last probe that did not get 200 was sent (so the
figure is an upper bound, never flattered by the probe period); the model stamps the moment
its `execute` began (STARTED_AT, unix seconds) in every answer.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis

from tests.benchmarks.queueing_load import session
from tests.benchmarks.queueing_procs import MODEL, Gateway, Pod
from tests.benchmarks.queueing_wake import WakeRun, until, waiting
from tests.real_triton import TritonServer

RUNS = 5
REQUESTS = 50
POD_AFTER_S = 10.0
PROBE_S = 0.002
SLOTS = 8
START_TIMEOUT_S = 90.0

# One instance: requests execute one after another, each stamping when it began.
_CONFIG = """backend: "python"
max_batch_size: 0
input [ { name: "VALUE" data_type: TYPE_INT64 dims: [ 1 ] } ]
output [ { name: "VALUE_OUT" data_type: TYPE_INT64 dims: [ 1 ] },
         { name: "STARTED_AT" data_type: TYPE_FP64 dims: [ 1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""
_CODE = '''"""Echoes VALUE, and says when its execution began (unix seconds)."""

import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            started = np.array([time.time()], dtype=np.float64)
            value = pb_utils.get_input_tensor_by_name(request, "VALUE").as_numpy()
            outputs = [pb_utils.Tensor("VALUE_OUT", value), pb_utils.Tensor("STARTED_AT", started)]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
'''


def _repository(root: Path) -> Path:
    models = root / "models"
    (models / MODEL / "1").mkdir(parents=True)
    (models / MODEL / "config.pbtxt").write_text(_CONFIG)
    (models / MODEL / "1" / "model.py").write_text(_CODE)
    return models


async def _ask(client: aiohttp.ClientSession, url: str, value: int) -> float | None:
    """Infer through the gateway: when execution began, or None if the answer was wrong."""
    body = {
        "inputs": [{"name": "VALUE", "shape": [1], "datatype": "INT64", "data": [value]}],
        "outputs": [{"name": "VALUE_OUT"}, {"name": "STARTED_AT"}],
    }
    async with client.post(f"{url}/v2/models/{MODEL}/infer", json=body) as answer:
        if answer.status != 200:
            return None
        outputs = {o["name"]: o["data"] for o in json.loads(await answer.read())["outputs"]}
    return float(outputs["STARTED_AT"][0]) if outputs.get("VALUE_OUT") == [value] else None


async def _ready_at(client: aiohttp.ClientSession, triton: TritonServer) -> float:
    """When Triton turned ready: the send time of the last probe not answered 200."""
    last_not_ready = time.time()
    async with asyncio.timeout(START_TIMEOUT_S):
        while True:
            sent = time.time()
            try:
                async with client.get(f"{triton.http_url}/v2/health/ready") as answer:
                    if answer.status == 200:
                        return last_not_ready
            except aiohttp.ClientError:
                pass  # not listening yet
            last_not_ready = sent
            await asyncio.sleep(PROBE_S)


async def from_zero_on_triton(redis_url: str, runs: int = RUNS) -> list[WakeRun]:
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as root:
        triton = TritonServer(_repository(Path(root)), Path(root))
        gateway = Gateway(redis_url)
        r = aioredis.Redis.from_url(redis_url)
        try:
            async with session() as client:
                for run in range(runs):
                    values = range(run * 1000, run * 1000 + REQUESTS)
                    tasks = [asyncio.create_task(_ask(client, gateway.url, v)) for v in values]

                    async def all_queued() -> bool:
                        return await waiting(r) == REQUESTS

                    await until(all_queued, "every request queued")
                    await asyncio.sleep(POD_AFTER_S)  # the scenario: the pod starts 10 s later
                    triton.start()
                    pod = Pod(
                        redis_url,
                        f"echo-triton-{run}",
                        (triton.http_url, triton.metrics_url),
                        SLOTS,
                    )
                    try:
                        ready_at = await _ready_at(client, triton)
                        started = await asyncio.gather(*tasks)
                    finally:
                        await asyncio.to_thread(pod.stop)
                        await asyncio.to_thread(triton.stop)
                    answered = [s for s in started if s is not None]
                    if not answered:
                        raise RuntimeError(f"from zero on Triton, run {run}: nothing answered")
                    first_ms = (min(answered) - ready_at) * 1000
                    last_ms = (max(answered) - ready_at) * 1000
                    results.append(WakeRun(first_ms, last_ms, len(answered), REQUESTS))
        finally:
            await r.aclose()
            gateway.stop()
            triton.stop()
    return results
