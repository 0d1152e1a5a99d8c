"""The demo's request queue in Redis, and the books that prove no request was lost.

The traffic generator RPUSHes requests onto the queue key the ScaledObject
names (`queueKey`, a list: the scaler measures it with LLEN) and counts them;
pods take up to their free slots with one script (LPOP with a count, counted
in the same step) and count each completion. So at any moment

    pushed = queue length + in flight + completed,  in flight = taken - completed - requeued

and a run lost nothing when, at the end, queue and in flight are 0 and
completed == pushed. A pod that must stop before its requests finish puts them
back at the head of the queue (`requeued`), as a gateway would retry them.

A request is `id arrival_wall_s input_tokens output_tokens`, space separated.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

NAMESPACE = "demo"
TARGET = "llm"
MODEL = "llm"
QUEUE_KEY = "requests:llm"
_PREFIX = "llm-demo:"
PUSHED = f"{_PREFIX}pushed"
TAKEN = f"{_PREFIX}taken"
COMPLETED = f"{_PREFIX}completed"
REQUEUED = f"{_PREFIX}requeued"
WAITS = f"{_PREFIX}waits"  # seconds each request waited in the queue, one entry per request
POD_STATES = f"{_PREFIX}pods"  # pod -> starting | ready | draining (the pod's own word)

# Up to ARGV[1] requests from the head, counted as taken in the same step.
TAKE_LUA = """
local items = redis.call('LPOP', KEYS[1], ARGV[1])
if not items then return {} end
redis.call('INCRBY', KEYS[2], #items)
return items
"""


@dataclass(frozen=True)
class Request:
    id: int
    arrival_wall_s: float
    input_tokens: int
    output_tokens: int

    def encode(self) -> str:
        return f"{self.id} {self.arrival_wall_s:.6f} {self.input_tokens} {self.output_tokens}"

    @classmethod
    def decode(cls, text: str | bytes) -> Request:
        raw = text.decode() if isinstance(text, bytes) else text
        rid, at, inp, out = raw.split()
        return cls(int(rid), float(at), int(inp), int(out))


@dataclass(frozen=True)
class Books:
    pushed: int
    taken: int
    completed: int
    requeued: int
    queue: int

    @property
    def inflight(self) -> int:
        return self.taken - self.completed - self.requeued

    @property
    def demand(self) -> int:
        """Requests queued or being served: what the scaler should be measuring."""
        return self.queue + self.inflight

    @property
    def lost(self) -> int:
        """Requests neither queued, nor served, nor being served (0 when all is well)."""
        return self.pushed - self.completed - self.queue - self.inflight


def read_books(client: redis.Redis) -> Books:
    pipe = client.pipeline(transaction=True)
    pipe.mget(PUSHED, TAKEN, COMPLETED, REQUEUED)
    pipe.llen(QUEUE_KEY)
    counters, queue = pipe.execute()
    pushed, taken, completed, requeued = (int(v or 0) for v in counters)
    return Books(pushed, taken, completed, requeued, int(queue))
