"""One run: a trace, a cluster and a controller on one simulated clock, event by event.

Events are arrivals (from the trace), pod readiness and request completions
(from the cluster, processed in time order whenever the clock moves), the
controller's own moments (polls, syncs, stream checks, schedule steps) and a
timeline sample every `sample_s` for the plot. At equal times, cluster events
come first, then samples, then arrivals, then the controller. The run ends once
every request has been served and the horizon has passed; requests a
controller never serves (no replica ever) stay unserved, counted as SLO misses.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import numpy as np

from scaler.service_record import NOTHING_LEARNED, ServiceRecord
from scaler.simulator.batching import BatchingCluster
from scaler.simulator.cluster import Accounts, Cluster, ClusterParams
from scaler.simulator.controllers import Controller
from scaler.simulator.trace import FloatArray, Trace
from scaler.token_curve import NOTHING_MEASURED, TokenCurve

_MAX_OVERRUN_S = 7 * 86400.0  # a run that has not drained by then never will


@dataclass(frozen=True)
class Timeline:
    t: FloatArray
    demand: FloatArray  # queue + in flight
    desired: FloatArray  # replicas asked for
    ready: FloatArray
    queue: FloatArray


@dataclass(frozen=True)
class RunResult:
    name: str
    trace: Trace
    params: ClusterParams
    horizon_s: float
    start_s: FloatArray  # NaN: never served
    accounts: Accounts
    scale_events: int
    decisions: int
    peak_replicas: int
    timeline: Timeline
    wall_s: float
    learned: ServiceRecord  # the service record found at the start
    served: ServiceRecord  # the service record at the end: what the run taught
    # With a pod profile: tokens by step time (`batching`), the token curve at the end,
    # and (t, per-replica concurrency) of every decision sized by a token-latency objective.
    tokens: FloatArray | None = None
    tokens_late: FloatArray | None = None  # decoded after the first 5 minutes
    curve: TokenCurve = NOTHING_MEASURED
    concurrency: tuple[tuple[float, float], ...] = ()

    @property
    def wait_s(self) -> FloatArray:
        return self.start_s - self.trace.arrival_s


def run(
    trace: Trace,
    params: ClusterParams,
    controller: Controller,
    horizon_s: float,
    initial_replicas: int,
    seed: int = 0,
    sample_s: float = 15.0,
    served: ServiceRecord = NOTHING_LEARNED,
    curve: TokenCurve = NOTHING_MEASURED,
) -> RunResult:
    started = time.perf_counter()
    # The batching cluster is the plain one with a pod profile, and the pods' token curve.
    make = Cluster if params.profile is None else functools.partial(BatchingCluster, curve=curve)
    cluster = make(
        trace,
        params,
        horizon_s,
        initial_ready=initial_replicas,
        seed=seed,
        remove_starting_first=controller.remove_starting_first,
        served=served,
    )
    controller.start(initial_replicas)
    controller.publish_admission(cluster)
    arrivals = trace.arrival_s.tolist()
    n, i = len(arrivals), 0
    next_sample = 0.0
    peak = initial_replicas
    samples: list[tuple[float, float, float, float, float]] = []
    give_up = max(horizon_s, arrivals[-1] if arrivals else 0.0) + _MAX_OVERRUN_S
    while True:
        t_arrival = arrivals[i] if i < n else math.inf
        t_control = controller.next_tick_s()
        t_sample = next_sample if next_sample <= horizon_s else math.inf
        t = min(t_arrival, t_control, t_sample)
        if i >= n and (cluster.idle or t == math.inf) and t > horizon_s:
            break
        if t > give_up:
            break
        if t == t_sample:
            cluster.advance_to(t)
            queue = len(cluster.queue)
            samples.append(
                (t, queue + cluster.inflight, controller.desired, cluster.pods_ready, queue)
            )
            next_sample += sample_s
        elif t == t_arrival:
            cluster.arrive(i, t)
            i += 1
            controller.on_arrival(t, cluster)
        else:
            cluster.advance_to(t)
            controller.tick(t, cluster)
        peak = max(peak, controller.desired)
    cluster.advance_to(math.inf)  # let the draining pods finish
    accounts = cluster.close()
    columns = np.array(samples, dtype=np.float64).reshape(-1, 5).T
    timeline = Timeline(*columns)
    return RunResult(
        name=controller.name,
        trace=trace,
        params=params,
        horizon_s=horizon_s,
        start_s=cluster.start_s,
        accounts=accounts,
        scale_events=controller.scale_events,
        decisions=controller.decisions,
        peak_replicas=peak,
        timeline=timeline,
        wall_s=time.perf_counter() - started,
        learned=served,
        served=cluster.served,
        tokens=cluster.tokens if isinstance(cluster, BatchingCluster) else None,
        tokens_late=cluster.tokens_late if isinstance(cluster, BatchingCluster) else None,
        curve=cluster.curve if isinstance(cluster, BatchingCluster) else NOTHING_MEASURED,
        concurrency=tuple(controller.concurrency_log),
    )
