"""`python -m scaler demo`, short, as a real process tree: it scales up from zero on the
first requests, back to zero after the delay once the traffic is over, loses no request,
writes its plot, and leaves no process behind (run to the end, or stopped by Ctrl-C).

Every process a run starts carries LLM_SCALER_DEMO_RUN=<id> in its environment
(inherited by its own children), so a scan of /proc finds any survivor, orphans included.
"""

from __future__ import annotations

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

import pytest

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
    # No request lost: every one pushed was completed, nothing is left queued or in flight.
    requests = summary["requests"]
    assert requests["pushed"] == summary["planned_requests"] > 0
    assert requests["completed"] == requests["pushed"]
    assert (requests["queue_left"], requests["inflight_left"], requests["lost"]) == (0, 0, 0)
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
        deadline = time.monotonic() + 30
        while not (tmp_path / "logs" / "llm-1.log").exists():  # pods are running
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.0)
        assert len(survivors(run_id)) >= 5  # the demo, redis, 2 scalers, a pod (+ its sidecar)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 1, output
        assert survivors(run_id) == []
    assert json.loads((tmp_path / "summary.json").read_text())["outcome"] == "interrupted"
