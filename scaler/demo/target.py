"""The demo's one target: its names, its pods' states, and what its gateway streams hold.

Requests reach the pods only through the real gateway (`python -m gateway`), which puts
each on the target's Redis Streams (gateway.contract, one per priority class), and the
pods' workers (`python -m sidecar`, WORKER=on), which take them into free slots. So at
any moment, summed over the classes,

    waiting  = XLEN - pending   requests no worker has taken yet (the scaler's queue depth)
    in flight = pending          taken by a worker, not yet answered and acknowledged

(workers XDEL an entry when they acknowledge it, so a stream holds exactly the unanswered
requests). Both are read in one script, on Redis's side, so they are one consistent moment.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from gateway.contract import STREAM_LOAD_LUA, request_streams

NAMESPACE = "demo"
TARGET = "llm"
MODEL = "llm"
# pod -> starting | ready | draining, each pod's own word (the emulated Deployment's view).
POD_STATES = "llm-demo:pods"

# KEYS: the target's streams. Returns {waiting, pending}, summed over them.
_STREAMS_LUA = (
    STREAM_LOAD_LUA
    + """
local waiting, pending = 0, 0
for i = 1, #KEYS do
  local w, held = stream_load(KEYS[i])
  if not w then return redis.error_reply(held.err) end
  waiting = waiting + w
  pending = pending + held
end
return {waiting, pending}
"""
)


@dataclass(frozen=True)
class StreamLoad:
    waiting: int  # queued at the gateway's streams, not yet taken by any worker
    inflight: int  # taken by a worker, not yet answered

    @property
    def demand(self) -> int:
        return self.waiting + self.inflight


class StreamReader:
    """Reads the target's streams on a (synchronous) client of the demo's main loop."""

    def __init__(self, client: redis.Redis) -> None:
        self._script = client.register_script(_STREAMS_LUA)
        self._keys = request_streams(NAMESPACE, TARGET)

    def read(self) -> StreamLoad:
        waiting, pending = self._script(keys=self._keys)
        return StreamLoad(int(waiting), int(pending))
