"""Queueing through a Redis Sentinel failover under load, with real processes throughout.

Sentinel (tests/redis_deployments.py: 1 master, 2 replicas, 3 sentinels), `python -m
gateway` and one pod (`python -m sidecar` with WORKER=on beside a real tritonserver) on its
redis+sentinel:// URL, and closed-loop HTTP clients of the gateway. The master is killed
mid-load: every call must end, with the right answer or a named error status (a request or
reply lost with the old master ends in the gateway's 504 at its deadline), and the gateway's
books must account for every call. The other end-to-end cases of queueing are in
tests/test_queueing_e2e.py.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.queueing_stack import (
    SLEEPER,
    GatewayBooks,
    GatewayProcess,
    Outcome,
    WorkerPod,
    client_session,
    infer,
    queue_state,
    sample,
    slept_s,
    until,
)
from tests.real_triton import Repository, TritonServer, serving
from tests.redis_deployments import PASSWORD, SentinelDeployment

CLIENTS = 8
REQUEST_S = 0.05
DEADLINE_S = 8  # X-Request-Timeout: a request lost with the old master ends in 504 by then
NAMED_ERRORS = (502, 503, 504)
RETRY_BACKOFF_S = 0.05


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    root = tmp_path_factory.mktemp("queueing_failover")
    Repository(root / "models").sleeper(SLEEPER, instances=CLIENTS)
    with serving(root / "models", root) as server:
        yield server


def test_every_request_completes_or_gets_a_named_error_through_a_sentinel_failover(
    sentinel_deployment: SentinelDeployment, triton: TritonServer, tmp_path: Path
) -> None:
    deployment = sentinel_deployment
    with deployment.client() as client:
        client.flushall()
    auth = {"REDIS_SENTINEL_PASSWORD": deployment.sentinel_password or ""}
    gateway = GatewayProcess(tmp_path, deployment.url, name="gw-failover", **auth)
    pod = WorkerPod(tmp_path, triton, deployment.url, "failover-0", slots=CLIENTS, **auth)
    results: list[tuple[float, float, float, Outcome]] = []  # sent, ended, DURATION_S, outcome
    calls_sent = [0]

    async def body() -> tuple[GatewayBooks, float, float]:
        """The gateway's books, when the master was killed, seconds to elect a new one."""
        await gateway.start()
        pod.start()
        stop = asyncio.Event()

        async def client_loop(index: int) -> None:
            async with client_session() as session:
                n = 0
                while not stop.is_set():
                    seconds = REQUEST_S + (index * 1000 + n) / 1e6  # distinct per call
                    n += 1
                    sent = time.monotonic()
                    calls_sent[0] += 1
                    headers = {"X-Request-Timeout": str(DEADLINE_S)}
                    outcome = await infer(session, gateway.url, seconds, headers)
                    results.append((sent, time.monotonic(), seconds, outcome))
                    if outcome.status == 503:  # a client backs off before it retries
                        await asyncio.sleep(RETRY_BACKOFF_S)

        def answered_since(moment: float) -> int:
            return sum(1 for _, end, _, o in results if end > moment and o.status == 200)

        loops = [asyncio.create_task(client_loop(i)) for i in range(CLIENTS)]
        try:
            began = time.monotonic()

            async def warmed_up() -> bool:
                return answered_since(began) >= 40

            await until(warmed_up, 30, "40 answers before the failover")
            old = deployment.master_of("")
            killed_at = time.monotonic()
            deployment.kill(old)

            async def new_master() -> bool:
                try:
                    now = await asyncio.to_thread(deployment.master_of, "")
                except Exception:  # the sentinels are electing
                    return False
                return now.port != old.port

            elected_s = await until(new_master, 30, "a new master elected")

            async def recovered() -> bool:
                return answered_since(killed_at + elected_s) >= 40

            await until(recovered, 30, "40 answers after the failover")
        finally:
            stop.set()
            async with asyncio.timeout(DEADLINE_S + 10):  # every call ends by its deadline
                await asyncio.gather(*loops)
        return await gateway.books(), killed_at, elected_s

    try:
        books, killed_at, elected_s = asyncio.run(body())
    finally:
        pod_status = pod.stop()
        gateway_status = gateway.stop()
        deployment.heal()
    ok = [(s, o) for _, _, s, o in results if o.status == 200]
    errors = [o for _, _, _, o in results if o.status != 200]
    for seconds, outcome in ok:  # each answer is its own request's
        assert abs(slept_s(outcome) - seconds) < 1e-5, (seconds, outcome)
    # None vanished: every call ended with an HTTP answer, 200 or a named error.
    assert len(results) == calls_sent[0]
    assert not [o for o in errors if o.status not in NAMED_ERRORS or not o.error_reason()], errors
    reasons = Counter(f"{o.status} {o.error_reason()}" for o in errors)
    gap = _longest_gap_s(results, killed_at)
    print(
        f"\nsentinel failover: {len(results)} calls, {len(ok)} answered, {len(errors)} named "
        f"errors; new master after {elected_s:.1f} s, longest stretch without an "
        f"answer {gap:.1f} s; errors: {dict(reasons)}"
    )
    # The gateway's books hold every call: answered, failed after acceptance, or refused.
    assert books.inflight == 0 and books.balanced, books
    assert books.accepted + sum(books.refused.values()) == len(results), (books, len(results))
    assert books.answered == {"2xx": len(ok)}, books
    assert pod_status == 0, pod.log_tail()
    assert gateway_status == 0, gateway.log_tail()


def _longest_gap_s(results: list[tuple[float, float, float, Outcome]], after: float) -> float:
    ends = sorted(end for _, end, _, o in results if o.status == 200 and end > after)
    marks = [after, *ends]
    return max((b - a for a, b in itertools.pairwise(marks)), default=0.0)


def test_replies_computed_while_the_master_fails_over_reach_their_clients(
    sentinel_deployment: SentinelDeployment, triton: TritonServer, tmp_path: Path
) -> None:
    """A request running on the engine when the master dies has its answer in hand a moment
    later; it must reach its client once a new master is elected, not wait for a reclaim
    after CLAIM_IDLE_SECONDS (default 30 s) and a second execution, or the deadline's 504."""
    deployment = sentinel_deployment
    with deployment.client() as client:
        client.flushall()
    auth = {"REDIS_SENTINEL_PASSWORD": deployment.sentinel_password or ""}
    gateway = GatewayProcess(tmp_path, deployment.url, name="gw-inflight", **auth)
    pod = WorkerPod(tmp_path, triton, deployment.url, "inflight-0", slots=CLIENTS, **auth)
    # Shorter than Sentinel's down-after (1 s): every one ends while no master exists.
    seconds = [0.5 + i / 1000 for i in range(CLIENTS)]

    async def body() -> tuple[list[Outcome], float, float]:
        await gateway.start()
        pod.start()
        master = deployment.master_of("")
        direct = Redis(port=master.port, password=PASSWORD)
        try:
            async with client_session() as session:
                headers = {"X-Request-Timeout": str(DEADLINE_S)}
                calls = [
                    asyncio.create_task(infer(session, gateway.url, s, headers)) for s in seconds
                ]

                async def all_running() -> bool:
                    return (await queue_state(direct)).held == {pod.name: CLIENTS}

                await until(all_running, 30, "every request taken by the pod")
                # A replica has it all (after an earlier failover the master may have one).
                assert await direct.wait(1, 300) >= 1
                assert not any(c.done() for c in calls), "ended before the kill: no case shown"
                killed_at = time.monotonic()
                deployment.kill(master)
                async with asyncio.timeout(DEADLINE_S + 10):
                    outcomes = await asyncio.gather(*calls)
                ended_s = time.monotonic() - killed_at
        finally:
            await direct.aclose()
        return outcomes, killed_at, ended_s

    try:
        outcomes, _, ended_s = asyncio.run(body())
        worker = asyncio.run(pod.metrics())
    finally:
        pod_status = pod.stop()
        gateway_status = gateway.stop()
        deployment.heal()
    print(
        f"\nin flight at the failover: {sum(o.status == 200 for o in outcomes)} of {CLIENTS} "
        f"answered, all ended {ended_s:.1f} s after the kill; worker ran "
        f"{sample(worker, 'llm_sidecar_worker_taken_total'):.0f} takes"
    )
    wrong = [(s, o) for s, o in zip(seconds, outcomes, strict=True) if o.status != 200]
    assert not wrong, wrong
    for s, outcome in zip(seconds, outcomes, strict=True):
        assert abs(slept_s(outcome) - s) < 1e-5, outcome
    assert pod_status == 0, pod.log_tail()
    assert gateway_status == 0, gateway.log_tail()
