"""`python -m scaler.demo.pod`: one simulated inference pod, as one process group.

The pod is a Triton stand-in (`scaler.demo.triton_standin`: Triton's real gRPC
API and metrics page) whose load is the requests this process serves, and a real
`python -m sidecar` pointed at it, exactly as in a Triton pod. The pod is not
ready until `--cold-start-s` after it was created (`--created-at`, the moment
the emulated Deployment asked for it), which is what the sidecar sees through
ServerReady / ModelReady and reports as a starting pod.

Serving: while ready, every tick it takes up to its free slots from the queue
(one script, counted; see `scaler.demo.queue`) and holds each request for
(input / prefill_tps + output x decode_ms) / speedup seconds, the simulator's
service model. The stand-in publishes the count as TensorRT-LLM's `active`
(`max` = slots), which the sidecar reports as in flight.

SIGTERM (the pod is deleted; its sidecar, in the same process group, gets it
too and removes the report): take nothing more, finish what is in flight, then
exit. Requests still unfinished after `--grace-s` go back to the head of the
queue, so none is lost.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import logging
import os
import signal
import sys
import time

import redis

from scaler.demo import queue
from scaler.demo.queue import Request
from scaler.demo.supervise import Child
from scaler.demo.triton_standin import ModelFigures, TritonStandIn, TrtFigures

log = logging.getLogger("demo.pod")
_TICK_S = 0.01


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scaler.demo.pod", description=__doc__)
    p.add_argument("--name", required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--slots", type=int, default=8)
    p.add_argument("--cold-start-s", type=float, default=3.0)
    p.add_argument("--created-at", type=float, help="unix time the pod was asked for")
    p.add_argument("--speedup", type=float, default=1.0)
    p.add_argument("--prefill-tps", type=float, default=10_000.0)
    p.add_argument("--decode-ms", type=float, default=30.0)
    p.add_argument("--grace-s", type=float, default=10.0)
    p.add_argument("--sidecar-poll-interval", type=float, default=0.25)
    return p


class Pod:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.name: str = args.name
        self.client = redis.Redis.from_url(args.redis_url, socket_timeout=2)
        self.take = self.client.register_script(queue.TAKE_LUA)
        self.triton = TritonStandIn()
        self.inflight: list[tuple[float, int, str]] = []  # (done at, id, request) heap
        self.ready_at = (args.created_at or time.time()) + args.cold_start_s
        self.ready = False
        # A plain flag: a signal handler must not take a lock (Event.set would, and
        # deadlock with a wait() it interrupted on the same thread).
        self.stopping = False

    def service_s(self, request: Request) -> float:
        a = self.args
        seconds = request.input_tokens / a.prefill_tps + request.output_tokens * a.decode_ms / 1e3
        return float(seconds / a.speedup)

    def publish_load(self) -> None:
        trt = TrtFigures(active=len(self.inflight), max=self.args.slots, waiting=0)
        self.triton.set_models({queue.MODEL: ModelFigures(trt=trt)})

    def run(self) -> None:
        self.client.hset(queue.POD_STATES, self.name, "starting")
        self.triton.start()
        self.publish_load()
        self.triton.set_ready(server=False)
        argv = [sys.executable, "-m", "sidecar"]
        sidecar = Child("sidecar", argv, self.sidecar_env(), None, own_group=False)
        try:
            self.serve()
            self.drain()
        finally:
            sidecar.stop(5.0)
            self.triton.stop()
            with contextlib.suppress(redis.RedisError):  # Redis went first: nothing to tell
                self.client.hdel(queue.POD_STATES, self.name)
            self.client.close()

    def sidecar_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "POD_NAME": self.name,
            "POD_NAMESPACE": queue.NAMESPACE,
            "TARGET_NAME": queue.TARGET,
            "REDIS_URL": self.args.redis_url,
            "TRITON_HTTP_URL": self.triton.http_url,
            "TRITON_METRICS_URL": self.triton.metrics_url,
            "TRITON_MODELS": queue.MODEL,
            "CAPACITY": str(self.args.slots),
            "POLL_INTERVAL_SECONDS": str(self.args.sidecar_poll_interval),
            "BIND_ADDRESS": "127.0.0.1",
            "METRICS_PORT": "0",
            "LOG_LEVEL": "WARNING",
        }

    def serve(self) -> None:
        while not self.stopping:
            now = time.time()
            if not self.ready and now >= self.ready_at:
                self.triton.set_ready(server=True, models=(queue.MODEL,))
                self.client.hset(queue.POD_STATES, self.name, "ready")
                self.ready = True
                log.info("%s ready", self.name)
            changed = self.complete(now)
            free = self.args.slots - len(self.inflight)
            if self.ready and free > 0:
                changed |= self.take_some(free, now)
            if changed:
                self.publish_load()
            time.sleep(_TICK_S)

    def take_some(self, free: int, now: float) -> bool:
        items = self.take(keys=[queue.QUEUE_KEY, queue.TAKEN], args=[free])
        if not items:
            return False
        waits = []
        for item in items:
            request = Request.decode(item)
            done_at = now + self.service_s(request)
            raw = item.decode() if isinstance(item, bytes) else str(item)
            heapq.heappush(self.inflight, (done_at, request.id, raw))
            waits.append(f"{max(0.0, now - request.arrival_wall_s):.4f}")
        self.client.rpush(queue.WAITS, *waits)
        return True

    def complete(self, now: float) -> bool:
        done = 0
        while self.inflight and self.inflight[0][0] <= now:
            heapq.heappop(self.inflight)
            done += 1
        if done:
            self.client.incrby(queue.COMPLETED, done)
        return done > 0

    def drain(self) -> None:
        self.client.hset(queue.POD_STATES, self.name, "draining")
        deadline = time.monotonic() + self.args.grace_s
        while self.inflight and time.monotonic() < deadline:
            if self.complete(time.time()):
                self.publish_load()
            time.sleep(_TICK_S)
        if self.inflight:  # out of time: give them back, a gateway would retry them
            raw = [r for _, _, r in sorted(self.inflight)]
            pipe = self.client.pipeline(transaction=True)
            pipe.lpush(queue.QUEUE_KEY, *reversed(raw))
            pipe.incrby(queue.REQUEUED, len(raw))
            pipe.execute()
            log.warning("%s: %d requests back to the queue", self.name, len(raw))
            self.inflight.clear()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    pod = Pod(args)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: setattr(pod, "stopping", True))
    pod.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
