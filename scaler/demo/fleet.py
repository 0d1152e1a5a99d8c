"""The emulated Deployment: pod processes brought to the replica count KEDA/HPA set.

Scale-up starts `python -m scaler.demo.pod` processes (each its own process
group: the pod and its sidecar), created now and ready after the cold start.
Scale-down deletes as a ReplicaSet does: pods not yet ready first, then the
newest; a deleted pod gets SIGTERM (it and its sidecar, as both containers of
a pod do): its worker takes no more and finishes what it holds, then it exits.
It is no longer counted as a replica but is shown as draining until it is gone.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass, field

import redis

from scaler.demo.supervise import Child, Supervisor
from scaler.demo.target import POD_STATES

_POD_LAYER = 3  # stopped first: above the gateway (2), the scalers (1) and Redis (0)


@dataclass
class PodProcess:
    name: str
    child: Child
    created_at: float  # monotonic
    deleted_at: float | None = None


@dataclass(frozen=True)
class FleetCounts:
    ready: int = 0
    starting: int = 0
    draining: int = 0


@dataclass
class Fleet:
    supervisor: Supervisor
    client: redis.Redis
    redis_url: str
    pod_args: list[str]  # e.g. ["--slots", "8", "--cold-start-s", "3", ...]
    grace_s: float = 10.0
    pods: list[PodProcess] = field(default_factory=list)
    created: int = 0
    deleted: int = 0

    def scale_to(self, replicas: int) -> None:
        live = [p for p in self.pods if p.deleted_at is None]
        for _ in range(replicas - len(live)):
            self._create()
        if len(live) > replicas:
            states = self._states()
            # Not ready first, then newest first (a ReplicaSet's order, roughly).
            order = sorted(live, key=lambda p: (states.get(p.name) == "ready", -p.created_at))
            for pod in order[: len(live) - replicas]:
                pod.deleted_at = time.monotonic()
                pod.child.signal(signal.SIGTERM)
                self.deleted += 1

    def reap(self) -> None:
        """Forget pods that exited; SIGKILL the ones past their grace period."""
        now = time.monotonic()
        for pod in list(self.pods):
            if not pod.child.alive():
                pod.child.wait_or_kill(0)
                self.pods.remove(pod)
                self.supervisor.forget(pod.child)
            elif pod.deleted_at is not None and now - pod.deleted_at > self.grace_s + 5:
                pod.child.signal(signal.SIGKILL)

    def counts(self) -> FleetCounts:
        states = self._states()
        live = [p for p in self.pods if p.deleted_at is None]
        ready = sum(1 for p in live if states.get(p.name) == "ready")
        return FleetCounts(
            ready=ready, starting=len(live) - ready, draining=len(self.pods) - len(live)
        )

    def _states(self) -> dict[str, str]:
        raw = self.client.hgetall(POD_STATES)
        return {_text(k): _text(v) for k, v in raw.items()}

    def _create(self) -> None:
        self.created += 1
        name = f"llm-{self.created}"
        argv = [sys.executable, "-m", "scaler.demo.pod", "--name", name]
        argv += ["--redis-url", self.redis_url, "--created-at", f"{time.time():.6f}"]
        argv += ["--grace-s", str(self.grace_s), *self.pod_args]
        child = self.supervisor.start(name, argv, layer=_POD_LAYER)
        self.pods.append(PodProcess(name, child, time.monotonic()))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
