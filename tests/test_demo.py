"""`python -m scaler demo`, short, as a real process tree: every request goes over HTTP to the
real gateway, through the target's Redis streams to the pods' real workers (python -m
sidecar, WORKER=on) and their Triton stand-ins; the target scales up from zero on the first
requests and back to zero after the delay once the traffic is over; the books balance on
both sides of the gateway (sent = answered + named errors, none lost); the plot is written,
and no process is left behind (run to the end, or stopped by Ctrl-C). The stand-in's KServe
v2 infer, which the workers call through tritonclient, is tested on its own as well.

Every process a run starts carries LLM_SCALER_DEMO_RUN=<id> in its environment
(inherited by its own children), so a scan of /proc finds any survivor, orphans included.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http.aio as triton_http
from tritonclient.utils import InferenceServerException

from scaler.demo.figures import fleet_vs_need
from scaler.demo.pod import INPUT_TOKENS, OUTPUT_TOKENS, service_time
from scaler.demo.timeline import Sample
from scaler.demo.triton_standin import InferModel, ModelFigures, TritonStandIn, TrtFigures

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# Demo time shrunk further: 8 s of traffic (160 s of the trace at 20x), pods ready 1 s
# after they are asked for.
SHORT = [
    "--duration-s", "8", "--speedup", "20", "--rate-scale", "0.3", "--cold-start-s", "1",
    "--scale-down-delay", "2", "--scale-to-zero-delay", "2", "--polling-interval", "0.5",
    "--cooldown-period", "1", "--hpa-sync", "0.5", "--tail-s", "30", "--no-view",
]  # fmt: skip


def survivors(run_id: str) -> list[str]:
    marker = f"LLM_SCALER_DEMO_RUN={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()!r}")
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


@contextmanager
def demo(out: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    run_id = uuid.uuid4().hex
    env = {**os.environ, "LLM_SCALER_DEMO_RUN": run_id}
    process = subprocess.Popen(
        [sys.executable, "-m", "scaler", "demo", *SHORT, "--out", str(out), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process, run_id
    finally:
        if process.poll() is None:  # the test failed first: do not leave it behind either
            process.kill()
            process.wait()


def test_short_run_scales_up_from_zero_and_back_loses_nothing_and_cleans_up(
    tmp_path: Path,
) -> None:
    with demo(tmp_path) as (process, run_id):
        output, _ = process.communicate(timeout=90)
        assert process.returncode == 0, output
        assert survivors(run_id) == []
    summary = json.loads((tmp_path / "summary.json").read_text())
    timeline = list(csv.DictReader((tmp_path / "timeline.csv").open()))
    desired = [int(row["desired"]) for row in timeline]
    ready = [int(row["ready"]) for row in timeline]

    assert summary["outcome"] == "finished"
    # The books balance through the gateway: every request the client sent was answered by a
    # pod (no named error either), and the gateway counted the same; the streams are empty.
    books = summary["books"]
    assert books["sent"] == summary["planned_requests"] > 0
    assert (books["answered"], books["errors"], books["unanswered"]) == (books["sent"], {}, 0)
    gateway = summary["gateway_books"]
    assert gateway["accepted"] == books["sent"]
    assert gateway["answered"] == {"2xx": books["sent"]}
    assert (gateway["failed"], gateway["refused"], gateway["inflight_left"]) == ({}, {}, 0)
    assert summary["streams_left"] == {"waiting": 0, "inflight": 0}
    # Waits measured at the engine: the first request was sent before any pod existed, so it
    # waited at least the cold start (1 s); an answer comes after its start.
    wait, latency = summary["wait_s"], summary["latency_s"]
    assert 0 <= wait["p50"] <= wait["p99"] <= wait["max"] and wait["max"] >= 1.0
    assert latency["p50"] > wait["p50"] and latency["max"] > wait["max"]
    assert summary["fleet_vs_need"]["samples"] > 0
    assert summary["fleet_vs_need"]["max_ratio"] >= summary["fleet_vs_need"]["mean_ratio"] > 0
    # The timeline's demand is the gateway's streams: it rose with the wake and fell to 0.
    demand = [int(row["queue"]) + int(row["inflight"]) for row in timeline]
    assert max(demand) > 8 and demand[-1] == 0
    # Up from zero, woken by StreamIsActive, with pods that became ready.
    assert desired[0] == 0
    assert summary["replicas"]["peak"] >= 2
    assert max(ready) >= 2
    assert summary["scaler"]["stream_pushes"] >= 1
    assert summary["scaler"]["rpc_rounds_failed"] == 0
    # Back to zero once the traffic is over, and not before the scale-to-zero delay (2 s).
    timing = summary["timing_s"]
    assert desired[-1] == ready[-1] == 0
    assert timing["zero_replicas"] > timing["demand_zero"] >= 8 * 0.5
    assert timing["demand_zero_to_zero_replicas"] >= 2.0
    assert summary["replicas"]["pods_deleted"] == summary["replicas"]["pods_created"]
    # The plot.
    png = (tmp_path / "demo.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_ctrl_c_stops_everything_it_started(tmp_path: Path) -> None:
    with demo(tmp_path, "--duration-s", "60") as (process, run_id):
        # Every kind of process is running: the demo, redis, 2 scalers, the gateway, a pod and
        # its sidecar (which the pod starts once it has imported its stand-in).
        deadline = time.monotonic() + 30
        while len(survivors(run_id)) < 7 or not (tmp_path / "logs" / "llm-1.log").exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 1, output
        assert survivors(run_id) == []
    assert json.loads((tmp_path / "summary.json").read_text())["outcome"] == "interrupted"


def test_stand_in_executes_kserve_infer_for_the_service_time_of_its_inputs() -> None:
    """What the workers call: tritonclient's HTTP client against the stand-in's infer."""
    asyncio.run(_stand_in_executes_infer())


async def _stand_in_executes_infer() -> None:
    standin = TritonStandIn()
    # 200 input tokens at 1000/s + 10 output tokens at 20 ms, 2x faster: 0.2 s.
    model = InferModel(slots=1, service_s=service_time(1000.0, 20.0, 2.0))
    standin.set_models({"llm": ModelFigures(trt=TrtFigures(active=0, max=1, waiting=0))})
    standin.serve_infer("llm", model)
    standin.start()
    client = triton_http.InferenceServerClient(standin.http_url.removeprefix("http://"))
    try:

        def inputs(tokens_in: int, tokens_out: int) -> list[triton_http.InferInput]:
            tensors = []
            for name, value in ((INPUT_TOKENS, tokens_in), (OUTPUT_TOKENS, tokens_out)):
                tensor = triton_http.InferInput(name, [1, 1], "INT32")
                tensor.set_data_from_numpy(np.array([[value]], dtype=np.int32), binary_data=False)
                tensors.append(tensor)
            return tensors

        with pytest.raises(InferenceServerException, match="'llm' is not ready") as refused:
            await client.infer("llm", inputs(200, 10))
        assert refused.value.status() == "400"
        standin.set_ready(server=True, models=("llm",))

        # Two requests on one slot: the second waits for the first, as in the engine's queue,
        # and the metrics page shows one active and one waiting meanwhile.
        first = asyncio.create_task(client.infer("llm", inputs(200, 10)))
        second = asyncio.create_task(client.infer("llm", inputs(200, 10)))
        deadline = time.monotonic() + 5
        while "waiting" not in _trt(standin):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert _trt(standin) == {"active": 1.0, "waiting": 1.0}
        results = [await first, await second]
        started = sorted(float(r.as_numpy("started_at")[0]) for r in results)
        held = [float(r.as_numpy("service_s")[0]) for r in results]
        assert all(0.2 <= h < 0.4 for h in held)
        assert started[1] - started[0] >= 0.2
        page = standin._page()[0]
        assert 'nv_inference_request_success{model="llm",version="1"} 2' in page

        with pytest.raises(InferenceServerException, match=OUTPUT_TOKENS) as bad:
            await client.infer("llm", inputs(200, 10)[:1])
        assert bad.value.status() == "400"
    finally:
        await client.close()
        standin.stop()


def _trt(standin: TritonStandIn) -> dict[str, float]:
    """The stand-in's TensorRT-LLM active and waiting gauges (non-zero ones), as scraped."""
    found = {}
    for line in standin._page()[0].splitlines():
        if line.startswith("nv_trt_llm_request_metrics{"):
            kind = line.split('request_type="')[1].split('"')[0]
            value = float(line.rsplit(" ", 1)[1])
            if kind in ("active", "waiting") and value:
                found[kind] = value
    return found


def _at(t_s: float, demand: int, ready: int) -> Sample:
    return Sample(t_s, 0, 0, 0, demand, 0, 0.0, True, ready, ready, 0, 0, "")


def test_fleet_against_the_need_per_sample_and_over_a_cold_start() -> None:
    # Demand per replica 6.4: demand 19 needs 3, demand 5 needs 1, demand 0 counts as 1.
    samples = [_at(0.0, 19, 4), _at(1.0, 19, 4), _at(2.0, 5, 4), _at(3.0, 0, 4), _at(9.0, 99, 9)]
    found = fleet_vs_need(samples, 1.0, 3.0, 6.4, smooth_s=2.0)
    assert found["samples"] == 3  # the window is [1; 3] s
    assert found["max_ratio"] == 4.0  # 4 ready for a need of 1
    assert found["mean_ratio"] == round((4 / 3 + 4 + 4) / 3, 3)
    # Over the 2 s before each: (19+19)/2 -> 3, (19+5)/2 -> 2, (5+0)/2 -> 1.
    assert found["smoothed"]["max_ratio"] == 4.0
    assert found["smoothed"]["mean_ratio"] == round((4 / 3 + 2 + 4) / 3, 3)
    assert fleet_vs_need(samples, None, 3.0, 6.4, smooth_s=2.0) == {"samples": 0}
