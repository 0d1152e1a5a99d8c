"""The request queue contract: how the gateway hands a request to a pod and gets the reply.

One definition, imported by the producer (`gateway`) and the consumer (`sidecar.worker`), so
the two cannot drift. Per target (one inference Deployment, named as its ScaledObject's
namespace/name) and per priority class there is one Redis Stream, in the target's hash slot
(the `{...}` tag of `scaler.reports`), so the scaler measures every class in its one read:

    llm-scaler:{<namespace>/<target>}:requests:<priority>   STREAM  requests (REQUEST_FIELDS)
    llm-scaler:{<namespace>/<target>}:streamed              SET     request ids whose first
                                                                    chunk was sent: never replayed
                                                                    (not entry ids: those repeat
                                                                    across the classes' streams)
    llm-scaler:{<namespace>/<target>}:cancelled             ZSET    request id -> expiry (ms):
                                                                    its client is gone

Each stream has one consumer group, `workers`, created at id 0 by the first enqueue (or the
first worker), so a request put there while no pod exists is delivered to the first pod.
A worker takes entries with XREADGROUP, highest class first, only as many as it has free
slots; it acknowledges (XACK + XDEL) once the final reply is written. The stream therefore
holds exactly the requests not yet answered: XLEN - pending = not yet taken by any pod.

Per gateway process (a name, stable across restarts of one pod, and an incarnation, new at
every start), in the gateway's own hash slot:

    llm-gateway:{<gateway>}:live      STRING  the running incarnation, PX LIVE_TTL_MS, refreshed
    llm-gateway:{<gateway>}:replies   STREAM  reply messages (REPLY_FIELDS) for its requests

A worker starts a request only if its gateway's `live` key still holds the incarnation that
enqueued it (a restarted gateway overwrites it at once: its old clients are gone), the request
is not cancelled, and its deadline (Redis time, ms) has not passed.

Reply messages, in order per request: either one `full` (status, content type, body), or a
`head` (status, content type) then `chunk`s (data, seq from 0) then `end`; or at any point an
`error` (status, reason). Every message carries the attempt (the delivery count) that wrote
it: the gateway follows the first attempt that answers and ignores any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from scaler.reports import target_key_base

# Served in this order; the header `X-Priority` picks one, absent: DEFAULT_PRIORITY.
PRIORITIES = ("high", "normal", "low")
DEFAULT_PRIORITY = "normal"
CONSUMER_GROUP = "workers"
LIVE_TTL_MS = 3000  # a gateway gone this long (no refresh) has lost its clients
LIVE_REFRESH_S = 1.0
REPLY_STREAM_MAXLEN = 100_000  # approximate cap of a gateway's reply stream (XADD MAXLEN ~)


class Kind(StrEnum):
    """Which API a request came in on: decides how the worker forwards it to the engine."""

    INFER = "infer"  # KServe v2 /v2/models/{m}[/versions/{v}]/infer (tritonclient)
    GENERATE = "generate"  # /v2/models/{m}/generate and generate_stream (HTTP, SSE)
    OPENAI = "openai"  # /v1/completions, /v1/chat/completions (HTTP, SSE when streaming)


class ReplyType(StrEnum):
    FULL = "full"
    HEAD = "head"
    CHUNK = "chunk"
    END = "end"
    ERROR = "error"


def request_stream(namespace: str, target: str, priority: str) -> str:
    """The stream of a target's requests of one priority class."""
    return f"{target_key_base(namespace, target)}:requests:{priority}"


def request_streams(namespace: str, target: str) -> list[str]:
    """Every class's stream of a target, highest priority first."""
    return [request_stream(namespace, target, p) for p in PRIORITIES]


def streamed_key(namespace: str, target: str) -> str:
    """The set of a target's request ids whose first chunk was sent: never replayed."""
    return f"{target_key_base(namespace, target)}:streamed"


def cancelled_key(namespace: str, target: str) -> str:
    """A target's request ids whose client is gone, by expiry (ms)."""
    return f"{target_key_base(namespace, target)}:cancelled"


def live_key(gateway: str) -> str:
    """The key holding a gateway's running incarnation while it lives."""
    return f"llm-gateway:{{{gateway}}}:live"


def reply_stream(gateway: str) -> str:
    """The stream a gateway reads its requests' replies from."""
    return f"llm-gateway:{{{gateway}}}:replies"


@dataclass(frozen=True)
class QueuedRequest:
    """One request as it sits in a target's stream (all fields are stream field values).

    `path` is as the client sent it, `headers` the ones forwarded to the engine (JSON
    object), `deadline_ms` Redis time (set by the enqueue script from its TIME), and
    `max_deliveries` how many times it may be taken before the client is told why not."""

    request_id: str
    kind: Kind
    model: str
    version: str  # "" unless the path named one
    path: str
    stream: bool  # the reply is an event stream (SSE)
    content_type: str
    headers: str
    body: bytes
    gateway: str
    incarnation: str
    max_deliveries: int
    deadline_ms: int = 0

    def fields(self) -> dict[str, str | bytes]:
        """The stream entry, without `deadline_ms` (the enqueue script adds it)."""
        return {
            "id": self.request_id,
            "kind": self.kind.value,
            "model": self.model,
            "version": self.version,
            "path": self.path,
            "stream": "1" if self.stream else "0",
            "ctype": self.content_type,
            "headers": self.headers,
            "body": self.body,
            "gw": self.gateway,
            "inc": self.incarnation,
            "maxdel": str(self.max_deliveries),
        }

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> QueuedRequest:
        """Parse an entry as XREADGROUP returns it (bytes); KeyError/ValueError if broken."""

        def text(name: str) -> str:
            return fields[name.encode()].decode()

        return cls(
            request_id=text("id"),
            kind=Kind(text("kind")),
            model=text("model"),
            version=text("version"),
            path=text("path"),
            stream=text("stream") == "1",
            content_type=text("ctype"),
            headers=text("headers"),
            body=fields[b"body"],
            gateway=text("gw"),
            incarnation=text("inc"),
            max_deliveries=int(text("maxdel")),
            deadline_ms=int(text("deadline")),
        )


@dataclass(frozen=True)
class Reply:
    """One message on a gateway's reply stream."""

    request_id: str
    type: ReplyType
    attempt: int
    status: int = 0  # full, head, error
    content_type: str = ""  # full, head
    data: bytes = b""  # full (the body), chunk (the chunk's bytes as the engine sent them)
    seq: int = 0  # chunk: 0, 1, ...
    reason: str = ""  # error: says why, for the client

    def fields(self) -> dict[str, str | bytes]:
        return {
            "id": self.request_id,
            "t": self.type.value,
            "a": str(self.attempt),
            "st": str(self.status),
            "ct": self.content_type,
            "d": self.data,
            "seq": str(self.seq),
            "r": self.reason,
        }

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> Reply:
        return cls(
            request_id=fields[b"id"].decode(),
            type=ReplyType(fields[b"t"].decode()),
            attempt=int(fields[b"a"]),
            status=int(fields[b"st"]),
            content_type=fields[b"ct"].decode(),
            data=fields[b"d"],
            seq=int(fields[b"seq"]),
            reason=fields[b"r"].decode(),
        )


# Defines stream_load(key) -> waiting, taken: a request stream's entries not yet taken by a
# worker and those taken (pending in the group); nil and the error where the key is not a
# stream. The stream holds exactly the unanswered requests (workers XDEL on acknowledging), so
# waiting = XLEN - pending. The enqueue script, the scaler's queue depth (queueType gateway)
# and the demo's view all count with it.
STREAM_LOAD_LUA = f"""
local function stream_load(key)
  local len = redis.pcall('XLEN', key)
  if type(len) ~= 'number' then return nil, len end
  local taken = 0
  if len > 0 then
    local p = redis.pcall('XPENDING', key, '{CONSUMER_GROUP}')
    if type(p) == 'table' and not p.err then taken = tonumber(p[1]) end
  end
  return len - taken, taken
end
"""

# Enqueue one request, atomically: refused when the target's waiting requests (every class,
# not yet taken by a pod) reach the limit; the group is created at id 0 where missing, so the
# first pod reads what was queued before it existed. The deadline is stamped on Redis's clock.
# KEYS: the target's streams (every class), then the one to add to.
# ARGV: queue limit, timeout ms, then field, value pairs.
# Returns {'ok', entry id, waiting before} or {'full', waiting}.
ENQUEUE_LUA = (
    STREAM_LOAD_LUA
    + """
local limit = tonumber(ARGV[1])
local waiting = 0
for i = 1, #KEYS - 1 do
  local w, err = stream_load(KEYS[i])
  if not w then return redis.error_reply(err.err) end
  waiting = waiting + w
end
if waiting >= limit then return {'full', tostring(waiting)} end
local target = KEYS[#KEYS]
if redis.call('EXISTS', target) == 0 then
  redis.call('XGROUP', 'CREATE', target, 'workers', '0', 'MKSTREAM')
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
fields[#fields + 1] = 'deadline'
fields[#fields + 1] = tostring(now_ms + tonumber(ARGV[2]))
local id = redis.call('XADD', target, '*', unpack(fields))
return {'ok', id, tostring(waiting)}
"""
)
