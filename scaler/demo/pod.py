"""`python -m scaler.demo.pod`: one simulated inference pod, as one process group.

The pod is what a Triton pod with our sidecar is, with the GPU simulated: a Triton
stand-in (`scaler.demo.triton_standin`: Triton's readiness, metrics page and KServe v2
infer over HTTP) and a real `python -m sidecar` with WORKER=on pointed at it. The pod
takes nothing itself: the sidecar's worker takes the gateway's queued requests into its
free slots and runs each on the stand-in through tritonclient, as in production.

The stand-in executes model `llm`: each request is held for the simulator's service time,
(input_lengths / prefill_tps + request_output_len x decode_ms) / speedup seconds, from the
request's two INT32 inputs (TensorRT-LLM's names), and the count it runs is TensorRT-LLM's
`active` gauge (`max` = slots), which the sidecar reports beside the worker's exact count.
The pod is not ready until `--cold-start-s` after it was created (`--created-at`, the
moment the emulated Deployment asked for it): the sidecar sees it through Triton's
readiness, reports a starting pod, and its worker starts taking the moment it turns ready.

SIGTERM (the pod is deleted) reaches the whole group, as both containers of a pod get it:
the sidecar removes its report, its worker stops taking and finishes what it holds within
WORKER_GRACE_SECONDS (`--grace-s`); the stand-in serves until the sidecar has exited, as
Triton finishes the requests it was given, then stops.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

import redis

from scaler.demo.supervise import Child
from scaler.demo.target import MODEL, NAMESPACE, POD_STATES, TARGET
from scaler.demo.triton_standin import (
    InferModel,
    Inputs,
    ModelFigures,
    TritonStandIn,
    TrtFigures,
)

log = logging.getLogger("demo.pod")
_TICK_S = 0.02
# Inputs of the stand-in's model, as TensorRT-LLM's `tensorrt_llm` model names them.
INPUT_TOKENS = "input_lengths"
OUTPUT_TOKENS = "request_output_len"
ServiceTime = Callable[[Inputs], float]


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


def service_time(prefill_tps: float, decode_ms: float, speedup: float) -> ServiceTime:
    """The simulator's service model, in demo time, read from a request's inputs."""

    def service_s(inputs: Inputs) -> float:
        try:
            tokens_in = int(inputs[INPUT_TOKENS][0])
            tokens_out = int(inputs[OUTPUT_TOKENS][0])
        except (KeyError, IndexError):
            raise KeyError(
                f"inputs {INPUT_TOKENS} and {OUTPUT_TOKENS} (INT32, shape [1, 1]) are required"
            ) from None
        if tokens_in < 0 or tokens_out < 0:
            raise ValueError(f"{INPUT_TOKENS} and {OUTPUT_TOKENS} must be >= 0")
        return (tokens_in / prefill_tps + tokens_out * decode_ms / 1e3) / speedup

    return service_s


class Pod:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.name: str = args.name
        self.client = redis.Redis.from_url(args.redis_url, socket_timeout=2)
        self.triton = TritonStandIn()
        self.ready_at = (args.created_at or time.time()) + args.cold_start_s
        # A plain flag: a signal handler must not take a lock (Event.set would, and
        # deadlock with a wait() it interrupted on the same thread).
        self.stopping = False

    def run(self) -> None:
        self.client.hset(POD_STATES, self.name, "starting")
        a = self.args
        trt = TrtFigures(active=0, max=a.slots, waiting=0)
        self.triton.set_models({MODEL: ModelFigures(trt=trt)})
        self.triton.serve_infer(
            MODEL, InferModel(a.slots, service_time(a.prefill_tps, a.decode_ms, a.speedup))
        )
        self.triton.set_ready(server=False)
        self.triton.start()
        argv = [sys.executable, "-m", "sidecar"]
        sidecar = Child("sidecar", argv, self.sidecar_env(), None, own_group=False)
        try:
            self.wait_ready()
            if not self.stopping:
                self.triton.set_ready(server=True, models=(MODEL,))
                self.client.hset(POD_STATES, self.name, "ready")
                log.info("%s ready", self.name)
            while not self.stopping and sidecar.alive():
                time.sleep(_TICK_S)
            if sidecar.alive():
                self.client.hset(POD_STATES, self.name, "draining")
            # The sidecar got the group's SIGTERM too: its worker drains within the grace.
            sidecar.wait_or_kill(a.grace_s + 5)
        finally:
            sidecar.stop(1.0)
            self.triton.stop()
            with contextlib.suppress(redis.RedisError):  # Redis went first: nothing to tell
                self.client.hdel(POD_STATES, self.name)
            self.client.close()

    def wait_ready(self) -> None:
        while not self.stopping and time.time() < self.ready_at:
            time.sleep(min(_TICK_S, max(0.0, self.ready_at - time.time())))

    def sidecar_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "POD_NAME": self.name,
            "POD_NAMESPACE": NAMESPACE,
            "TARGET_NAME": TARGET,
            "REDIS_URL": self.args.redis_url,
            "TRITON_HTTP_URL": self.triton.http_url,
            "TRITON_METRICS_URL": self.triton.metrics_url,
            "TRITON_MODELS": MODEL,
            "CAPACITY": str(self.args.slots),
            "POLL_INTERVAL_SECONDS": str(self.args.sidecar_poll_interval),
            "BIND_ADDRESS": "127.0.0.1",
            "METRICS_PORT": "0",
            "LOG_LEVEL": "INFO",  # its start, readiness and the worker's exceptions: rare lines
            "WORKER": "on",
            "WORKER_SLOTS": str(self.args.slots),
            "WORKER_GRACE_SECONDS": str(self.args.grace_s),
        }


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
