"""The traffic generator: a slice of a request trace, sped up, RPUSHed into the queue.

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

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import redis

from scaler.demo.queue import PUSHED, QUEUE_KEY, Request
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


class TrafficGenerator:
    """Pushes `plan` on its own thread and Redis connection, on time, in batches."""

    def __init__(self, traffic: TrafficPlan, redis_url: str) -> None:
        self._plan = traffic
        self._client = redis.Redis.from_url(redis_url, socket_timeout=5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self.pushed = 0
        self.first_push_s: float | None = None  # on the monotonic clock
        self.last_push_s: float | None = None
        self.error: BaseException | None = None

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._client.close()

    def _run(self) -> None:
        try:
            self._push_all()
        except BaseException as exc:  # reported by the run, which stops
            log.exception("traffic generator failed")
            self.error = exc

    def _push_all(self) -> None:
        p = self._plan
        i = 0
        while i < len(p) and not self._stop.is_set():
            now = time.monotonic()
            elapsed = now - self._started
            j = i
            while j < len(p) and p.offsets_s[j] <= elapsed:
                j += 1
            if j > i:
                wall = time.time()
                batch = [
                    Request(k, wall, p.input_tokens[k], p.output_tokens[k]).encode()
                    for k in range(i, j)
                ]
                pipe = self._client.pipeline(transaction=True)
                pipe.rpush(QUEUE_KEY, *batch)
                pipe.incrby(PUSHED, len(batch))
                pipe.execute()
                self.pushed += len(batch)
                self.first_push_s = self.first_push_s or now
                self.last_push_s = now
                i = j
            if i < len(p):
                wait = p.offsets_s[i] - (time.monotonic() - self._started)
                self._stop.wait(min(max(wait, 0.002), 0.1))
        # Silence for the rest of the traffic phase, as the trace would have had.
        while not self._stop.is_set() and time.monotonic() - self._started < p.duration_s:
            self._stop.wait(0.1)
