"""The master killed under a Sentinel deployment and a Redis Cluster: the scaler and the
sidecars follow the new master by themselves, and the metric never drops for it.

Real deployments (tests.redis_deployments), real sidecar processes, the scaler on
Redis's clock as deployed. Failure detection is set to 1 s, so a failover takes a
few seconds; the time from the kill to the first good answer is printed for the
record (`make bench` measures it over several trials, BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
import redis

from scaler.local_redis import LocalRedis
from scaler.reports import report_keys
from scaler.service import target_config_of
from scaler.state_codec import policy_key
from tests.harness import NAMESPACE, RunningScaler, ref, scaler_settings
from tests.redis_deployments import Deployment
from tests.test_sidecar_process import eventually, pods

RECOVERY_LIMIT_S = 15.0
FAILOVER_DEPLOYMENTS = pytest.mark.parametrize("deployment", ["sentinel", "cluster"], indirect=True)


@dataclass(frozen=True)
class Answer:
    at: float  # seconds after the kill
    value: float | None  # None: an error status
    code: grpc.StatusCode


def _scaler(deployment: Deployment) -> RunningScaler:
    settings = scaler_settings(deployment.url, redis_sentinel_password=deployment.sentinel_password)
    return RunningScaler(settings, None)  # Redis's clock, as deployed


def _sidecar_env(deployment: Deployment) -> dict[str, str]:
    password = deployment.sentinel_password
    return {} if password is None else {"REDIS_SENTINEL_PASSWORD": password}


@contextlib.contextmanager
def _replication_cut(deployment: Deployment, master: LocalRedis) -> Iterator[None]:
    """Writes the master acknowledges from here on never reach its replicas.

    Replication is asynchronous, so a master can die with writes its replicas lack;
    this makes it certain instead of a race: the replicas are frozen (SIGSTOP, well
    under the 1 s failure detection) and the master drops their links, so what it
    writes next dies with it. The caller kills the master before leaving the block."""
    replicas = deployment.replicas_of(master)
    for replica in replicas:
        os.kill(replica.pid, signal.SIGSTOP)  # type: ignore[arg-type]
    try:
        with deployment.direct(master) as client:
            client.client_kill_filter(_type="replica")
        yield
    finally:
        for replica in replicas:
            os.kill(replica.pid, signal.SIGCONT)  # type: ignore[arg-type]


def _poll_through_failover(scaler: RunningScaler, so: object, killed_at: float) -> list[Answer]:
    """KEDA's polls every 50 ms until answers have been good for a second (or the limit)."""
    answers: list[Answer] = []
    while time.monotonic() - killed_at < RECOVERY_LIMIT_S + 1:
        at = time.monotonic() - killed_at
        try:
            value: float | None = scaler.keda.poll(so).value_float  # type: ignore[arg-type]
            code = grpc.StatusCode.OK
        except grpc.RpcError as err:
            value, code = None, err.code()
        answers.append(Answer(at, value, code))
        good_since = next(
            (a.at for a in reversed(answers) if a.value is None), None
        )  # the last error
        if value is not None and (good_since is None or at - good_since > 1.0):
            break
        time.sleep(0.05)  # KEDA's pace stand-in: real time, the failover is real
    return answers


@FAILOVER_DEPLOYMENTS
def test_master_killed_under_steady_polling_never_lowers_the_metric(
    deployment: Deployment, redis_client: redis.Redis
) -> None:
    target, queue = "llama", "requests:llama"
    keys = report_keys(NAMESPACE, target)
    so = ref(
        "llama-so",
        targetName=target,
        queueKey=queue,
        staleAfterSeconds="5",
        scaleDownDelaySeconds="300",
    )
    state_key = policy_key(target_config_of(so))
    scaler = _scaler(deployment)
    try:
        with pods(
            "llama-0",
            "llama-1",
            target=target,
            redis_url=deployment.url,
            **_sidecar_env(deployment),
        ) as (a, b):
            a.load(active=1)
            b.load(active=1)
            assert eventually(lambda: scaler.keda.poll(so).value_float, lambda d: d == 2) == 2

            victim = deployment.master_of(keys.reports)
            with _replication_cut(deployment, victim):
                # A burst the old master alone hears of: the state it saves (the window's
                # 10, held for the scale-down delay) dies with it, and so does the queue.
                redis_client.rpush(queue, *range(8))
                assert scaler.keda.poll(so).value_float == 10
                redis_client.delete(queue)
                assert scaler.keda.poll(so).value_float == 10  # held by the window
                deployment.kill(victim)
            killed_at, killed_wall = time.monotonic(), time.time()
            answers = _poll_through_failover(scaler, so, killed_at)

            good = [x for x in answers if x.value is not None]
            assert good, f"no good answer within {RECOVERY_LIMIT_S} s: {answers[-3:]}"
            recovered_at = good[0].at
            print(f"{deployment.name}: first good answer {recovered_at:.2f} s after the kill")
            # Never lower: the new master lacks the burst (demand there is 2), the scaler's
            # memory of its decision refills the state.
            assert {x.value for x in good} == {10}
            # Errors only during the failover, UNAVAILABLE (KEDA's fallback), never a zero.
            assert all(x.code is grpc.StatusCode.UNAVAILABLE for x in answers if x.value is None)
            assert all(x.value is not None for x in answers if x.at >= recovered_at)
            assert recovered_at < RECOVERY_LIMIT_S
            assert redis_client.exists(state_key)  # written back, for every replica

            # The sidecars write on the new master by themselves.
            for pod in (a, b):
                assert (
                    eventually(
                        lambda p=pod: redis_client.zscore(keys.seen, p.name) or 0,  # type: ignore[misc]
                        lambda seen: seen > killed_wall,
                        timeout_s=RECOVERY_LIMIT_S,
                    )
                    > killed_wall
                )
    finally:
        scaler.stop()
        deployment.heal()


@FAILOVER_DEPLOYMENTS
def test_master_killed_under_an_open_stream_is_followed_to_the_new_master(
    deployment: Deployment, redis_client: redis.Redis
) -> None:
    queue = "requests:mistral"
    so = ref("mistral", queueKey=queue, scaleToZeroDelaySeconds="0")
    scaler = _scaler(deployment)  # streams re-check every 30 s: what wakes them is events
    try:
        stream = scaler.stub.StreamIsActive(so, timeout=60)
        assert next(stream).result is False
        victim = deployment.master_of(queue)
        deployment.kill(victim)
        killed_at = time.monotonic()

        channel = f"__keyspace@0__:{queue}"

        def new_master_listening() -> bool:
            try:
                master = deployment.master_of(queue)
                if master is victim:
                    return False
                with deployment.direct(master) as client:
                    return bool(dict(client.pubsub_numsub(channel))[channel] >= 1)
            except (redis.RedisError, OSError, StopIteration, LookupError):
                return False  # mid-failover

        assert eventually(new_master_listening, bool, timeout_s=RECOVERY_LIMIT_S)
        print(
            f"{deployment.name}: subscribed on the new master {time.monotonic() - killed_at:.2f} s"
        )
        pushed_at = time.monotonic()
        eventually(lambda: _pushed(redis_client, queue), bool, timeout_s=5)
        assert next(stream).result is True  # no False was sent meanwhile: this is the next
        assert time.monotonic() - pushed_at < 5  # an event, not the 30 s re-check
        assert time.monotonic() - killed_at < RECOVERY_LIMIT_S
        stream.cancel()
    finally:
        scaler.stop()
        deployment.heal()


def _pushed(client: redis.Redis, queue: str) -> bool:
    try:
        client.rpush(queue, "request")
        return True
    except (redis.RedisError, OSError):
        return False
