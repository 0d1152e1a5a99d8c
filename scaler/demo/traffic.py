"""The traffic generator: a slice of a request trace, sped up, sent to the gateway over HTTP.

Each request of the plan is a KServe v2 infer request to the real gateway (`python -m
gateway`) on the stand-in's model, sent at its time whatever is still outstanding (open
loop: many held at once, on an aiohttp client with its own event loop on its own thread),
carrying its input and output token counts as the two INT32 inputs the stand-in's service
time reads (scaler.demo.pod). Why infer and not generate: it is the path through
tritonclient, the worker's runtime dependency, and the one KServe clients of Triton use;
a demo request has nothing to stream, and generate's SSE would only add bytes.

Every answer is recorded: latency (sent to the last byte), status, and for an answer the
wait (sent to the engine starting it: the stand-in's `started_at` output, on this
machine's clock). The books are the client's: sent = answered + errors, each error named
(`reason`), none lost; a request still outstanding when the run stops is the error
`unanswered_at_stop`.

The slice is `[start_s; start_s + duration_s x speedup)` of the trace (trace
seconds), thinned or superposed by `rate_scale` first; request i is pushed
`(arrival_i - start_s) / speedup` wall seconds after the generator starts. Its
service time is divided by the same speed-up in the pod, so concurrency (rate x
service time) is the trace's own: speeding up changes how long the demo takes,
not how many replicas it needs. Worked example: the conversation trace at 5.5
req/s x 6.4 s mean service = 35 requests in flight; `rate_scale` 0.5 -> 18 ->
ceil(18 / (8 x 0.8)) = 3 replicas, whatever the speed-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

from scaler.demo.pod import INPUT_TOKENS, OUTPUT_TOKENS
from scaler.simulator.trace import Trace, scale_rate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrafficPlan:
    offsets_s: list[float]  # wall seconds after the start, ascending
    input_tokens: list[int]
    output_tokens: list[int]
    duration_s: float
    trace_start_s: float
    trace_end_s: float

    def __len__(self) -> int:
        return len(self.offsets_s)


def plan(
    trace: Trace, start_s: float, duration_s: float, speedup: float, rate_scale: float = 1.0
) -> TrafficPlan:
    if rate_scale != 1.0:
        trace = scale_rate(trace, rate_scale)
    end_s = start_s + duration_s * speedup
    keep = (trace.arrival_s >= start_s) & (trace.arrival_s < end_s)
    offsets = (trace.arrival_s[keep] - start_s) / speedup
    return TrafficPlan(
        offsets_s=[float(x) for x in offsets],
        input_tokens=[int(x) for x in trace.input_tokens[keep]],
        output_tokens=[int(x) for x in np.asarray(trace.output_tokens[keep])],
        duration_s=duration_s,
        trace_start_s=start_s,
        trace_end_s=end_s,
    )


# The gateway's statuses, named (its answers: gateway.app, gateway.answers).
_REASONS = {
    400: "bad_request",
    404: "not_found",
    413: "too_large",
    415: "content_type",
    429: "queue_full",
    500: "server_error",
    502: "worker_error",
    503: "unavailable",
    504: "deadline",
}
UNANSWERED = "unanswered_at_stop"


def infer_body(request_id: int, input_tokens: int, output_tokens: int) -> bytes:
    """One KServe v2 infer request for the stand-in's model."""

    def tensor(name: str, value: int) -> dict[str, Any]:
        return {"name": name, "shape": [1, 1], "datatype": "INT32", "data": [value]}

    request = {
        "id": str(request_id),
        "inputs": [tensor(INPUT_TOKENS, input_tokens), tensor(OUTPUT_TOKENS, output_tokens)],
        "outputs": [{"name": "started_at"}],
    }
    return json.dumps(request).encode()


@dataclass(frozen=True)
class Outcome:
    sent_s: float  # monotonic
    latency_s: float  # sent to the last byte of the answer (or the error)
    wait_s: float | None  # sent to the engine starting it; answered requests only
    status: int  # 0: no HTTP answer
    reason: str  # "" when answered, else the named error


class TrafficGenerator:
    """Sends `traffic` to `url` (the gateway's infer route) on its own thread and loop."""

    def __init__(self, traffic: TrafficPlan, url: str, timeout_s: float) -> None:
        self._plan = traffic
        self._url = url
        self._timeout_s = timeout_s
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._started = 0.0
        self.sent = 0
        self.all_sent = False
        self.outcomes: list[Outcome] = []  # appended on the traffic thread only
        self.errors: Counter[str] = Counter()
        self.error_examples: dict[str, str] = {}  # reason -> the first message seen
        self.first_send_s: float | None = None  # on the monotonic clock
        self.last_send_s: float | None = None
        self.error: BaseException | None = None

    @property
    def answered(self) -> int:
        return len(self.outcomes) - sum(self.errors.values())

    @property
    def outstanding(self) -> int:
        return self.sent - len(self.outcomes)

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        """Stops sending; what is still outstanding is counted `unanswered_at_stop`."""
        self._stop_requested = True
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stopping.set)
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the run, which stops
            log.exception("traffic generator failed")
            self.error = exc

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = stopping = asyncio.Event()
        if self._stop_requested:
            return
        # No pool limit: requests are held open while the target wakes, as clients would.
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            tasks: set[asyncio.Task[None]] = set()
            p = self._plan
            i = 0
            while i < len(p) and not stopping.is_set():
                elapsed = time.monotonic() - self._started
                while i < len(p) and p.offsets_s[i] <= elapsed:
                    task = asyncio.create_task(self._send(session, i))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    i += 1
                if i < len(p):
                    wait_s = p.offsets_s[i] - (time.monotonic() - self._started)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), max(wait_s, 0.001))
            self.all_sent = i == len(p)
            stop_task = asyncio.create_task(stopping.wait())
            while tasks and not stopping.is_set():
                await asyncio.wait({*tasks, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            stop_task.cancel()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, stop_task, return_exceptions=True)

    async def _send(self, session: aiohttp.ClientSession, k: int) -> None:
        p = self._plan
        body = infer_body(k, p.input_tokens[k], p.output_tokens[k])
        sent = time.monotonic()
        sent_wall = time.time()
        self.sent += 1
        self.first_send_s = self.first_send_s or sent
        self.last_send_s = sent
        status, reason, message, wait_s = 0, "", "", None
        try:
            async with session.post(
                self._url, data=body, headers={"Content-Type": "application/json"}
            ) as answer:
                status = answer.status
                payload = await answer.read()
            if status == 200:
                try:
                    wait_s = max(0.0, _started_at(payload) - sent_wall)
                except (ValueError, KeyError, TypeError, IndexError) as exc:
                    reason, message = "bad_answer", f"{type(exc).__name__}: {exc}"
            else:
                reason = f"{status} {_REASONS.get(status, 'http_error')}"
                message = payload[:300].decode(errors="replace")
        except asyncio.CancelledError:
            self._record(sent, 0, UNANSWERED, "the run stopped first", None)
            raise
        except TimeoutError:
            reason, message = "client_timeout", f"no answer within {self._timeout_s:g} s"
        except aiohttp.ClientError as exc:
            reason, message = "connection_error", f"{type(exc).__name__}: {exc}"
        self._record(sent, status, reason, message, wait_s)

    def _record(
        self, sent: float, status: int, reason: str, message: str, wait_s: float | None
    ) -> None:
        latency_s = time.monotonic() - sent
        if reason:
            self.errors[reason] += 1
            self.error_examples.setdefault(reason, message)
        self.outcomes.append(Outcome(sent, latency_s, wait_s, status, reason))


def _started_at(payload: bytes) -> float:
    """The stand-in's `started_at` output, relayed by worker and gateway as KServe v2 JSON."""
    answer: Any = json.loads(payload)
    for output in answer["outputs"]:
        if output["name"] == "started_at":
            return float(output["data"][0])
    raise KeyError("no output started_at in the answer")
