"""How the scaler and the sidecar reach Redis: one Redis, Sentinel or Cluster, named by one URL.

    redis://[[user]:password@]host[:port][/db]        one Redis (rediss:// with TLS)
    unix://[[user]:password@]/path/to/socket[?db=N]
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]
                                                      the master Sentinel names `service`
    redis+cluster://[[user]:password@]host[:port][,host[:port]...]
                                                      a Redis Cluster, from any of its nodes
    rediss+sentinel://, rediss+cluster://             the same over TLS, with the TLS query
                                                      options below

Credentials in the URL are those of the data nodes; REDIS_PASSWORD (a Secret)
overrides the password so the URL can live in a ConfigMap. Sentinels are asked
without credentials unless REDIS_SENTINEL_PASSWORD is set. TLS query options
(rediss+ only): ssl_ca_certs, ssl_certfile, ssl_keyfile (file paths),
ssl_cert_reqs (required, optional, none), ssl_check_hostname (true, false).

The topology is redis-py's: `Sentinel.master_for` asks the sentinels for the
master at every new connection, so a failover is followed at the next reconnect;
`RedisCluster` maps slots to nodes and re-reads the map when a node fails or a
slot moves. Every call fails within `timeout_s`; the caller decides what next.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

from scaler.parsing import shown

AnyRedis = Redis | RedisCluster
# What a call to Redis can fail with: a Cluster none of whose nodes answers raises
# RedisClusterException, which is no RedisError.
REDIS_ERRORS = (RedisError, RedisClusterException, OSError)
# Connections one client may open to one Redis node. Each call holds one only while it runs,
# so this bounds the calls in flight at once: redis-py's default of 100 made a gateway under
# a burst of clients, or a worker with over 100 slots busy, fail calls with "Too many
# connections" instead of making them.
MAX_CONNECTIONS = 2000
Kind = Literal["single", "sentinel", "cluster"]

URL_FORMS = (
    "a redis://, rediss:// or unix:// URL, or redis+sentinel://host:port[,host:port...]/service"
    " or redis+cluster://host:port[,host:port...] (rediss+ for TLS)"
)
_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "unix": ("single", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
_DEFAULT_PORT = {"sentinel": 26379, "cluster": 6379}
_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_CERT_REQS = ("required", "optional", "none")
_BOOLEANS = {"true": True, "false": False}


class RedisUrlError(ValueError):
    """A URL that names no Redis we can reach; the message says what is expected."""


@dataclass(frozen=True)
class RedisAddress:
    """What a REDIS_URL names, checked; `single` URLs are left to redis-py's own parser."""

    kind: Kind
    url: str
    nodes: tuple[tuple[str, int], ...] = ()  # sentinels, or cluster startup nodes
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: dict[str, Any] = field(default_factory=dict)  # ssl=True and its options, or empty


def parse_redis_url(url: str) -> RedisAddress:
    """Raises RedisUrlError naming what is wrong and the forms expected."""
    try:
        parts = urlsplit(url)
        kind, tls = _SCHEMES[parts.scheme]
    except (KeyError, ValueError):
        raise RedisUrlError(f"must be {URL_FORMS}") from None
    if kind == "single":
        return RedisAddress(kind="single", url=url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    path = [p for p in parts.path.split("/") if p]
    db = 0
    if kind == "sentinel":
        if not path:
            raise RedisUrlError(
                "names no service: redis+sentinel://host:port[,host:port...]/<service>[/<db>]"
            )
        if len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise RedisUrlError(f"path /{'/'.join(path)} must be /<service>[/<db number>]")
        db = int(path[1]) if len(path) == 2 else 0
    elif path not in ([], ["0"]):
        raise RedisUrlError("a Redis Cluster has database 0 only: drop the path")
    return RedisAddress(
        kind=kind,
        url=url,
        nodes=tuple(_host_port(h, _DEFAULT_PORT[kind]) for h in hosts.split(",")),
        service=unquote(path[0]) if kind == "sentinel" else "",
        db=db,
        username=unquote(username) or None,
        password=unquote(password) or None,
        tls=_tls_options(tls, parse_qsl(parts.query, keep_blank_values=True)),
    )


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = text.partition(":")
    if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise RedisUrlError(f"node {text!r} must be host[:port]")
    return host, int(port) if port else default_port


def _tls_options(tls: bool, query: list[tuple[str, str]]) -> dict[str, Any]:
    options: dict[str, Any] = {"ssl": True} if tls else {}
    for name, value in query:
        if not tls:
            raise RedisUrlError(f"option {name} needs TLS: the scheme must start with rediss+")
        if name in _TLS_FILES or (name == "ssl_cert_reqs" and value in _CERT_REQS):
            options[name] = value
        elif name == "ssl_check_hostname" and value in _BOOLEANS:
            options[name] = _BOOLEANS[value]
        else:
            raise RedisUrlError(
                f"option {name}={value!r} is not one of ssl_ca_certs, ssl_certfile, "
                f"ssl_keyfile (paths), ssl_cert_reqs {_CERT_REQS}, ssl_check_hostname (true, false)"
            )
    return options


class RedisLink:
    """The client for one REDIS_URL, and what key events need to hear every master."""

    def __init__(
        self,
        url: str,
        password: str | None,
        timeout_s: float,
        sentinel_password: str | None = None,
        *,
        decode_responses: bool = True,
    ) -> None:
        """`password` (from a Secret) overrides one in the URL. Raises RedisUrlError.

        `decode_responses=False`: replies as bytes (the gateway's request bodies and chunks)."""
        self.address = parse_redis_url(url)
        self._sentinel: Sentinel | None = None
        # One quick retry covers a connection a restarted Redis closed; anything longer
        # is the caller's to handle, not ours to wait out.
        self._options: dict[str, Any] = {
            "decode_responses": decode_responses,
            "socket_connect_timeout": timeout_s,
            "socket_timeout": timeout_s,
            "retry": Retry(NoBackoff(), 1),
            "max_connections": MAX_CONNECTIONS,
        }
        address = self.address
        if address.kind != "single":
            self._options |= {"username": address.username, "password": address.password}
            self._options |= address.tls
        if password is not None:
            self._options["password"] = password
        self.client: AnyRedis
        if address.kind == "single":
            single: Redis = Redis.from_url(url, **self._options)
            if password is not None:  # from_url lets the URL's password win: not ours
                single.connection_pool.connection_kwargs["password"] = password
            self.client = single
        elif address.kind == "sentinel":
            sentinel_options = {
                k: v for k, v in self._options.items() if k not in ("username", "max_connections")
            }
            sentinel_options["password"] = sentinel_password
            self._sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]  # untyped in older redis-py
                list(address.nodes), sentinel_kwargs=sentinel_options, **self._options
            )
            self.client = self._sentinel.master_for(address.service, db=address.db)
        else:
            nodes = [ClusterNode(host, port) for host, port in address.nodes]
            # Its retry re-reads the slot map after a failed node, then tries once more.
            self.client = RedisCluster(startup_nodes=nodes, **self._options)

    @property
    def is_cluster(self) -> bool:
        return self.address.kind == "cluster"

    @property
    def db(self) -> int:
        if isinstance(self.client, RedisCluster):
            return 0
        return int(self.client.connection_pool.connection_kwargs.get("db", 0))

    def same_slot(self, *keys: str) -> bool:
        """Whether one script may touch all of `keys` (always, outside a Cluster)."""
        if not self.is_cluster:
            return True
        return len({key_slot(key.encode()) for key in keys}) == 1

    async def primaries(self) -> set[tuple[str, int]]:
        """The masters now, re-read from the Cluster (the one master elsewhere)."""
        if not isinstance(self.client, RedisCluster):
            return set()
        await self.client.initialize()  # first use: builds the slot map
        await self.client.nodes_manager.initialize()  # later: re-reads it
        return {(node.host, int(node.port)) for node in self.client.get_primaries()}

    def node_client(self, host: str, port: int) -> Redis:
        """A plain client to one Cluster node, with the link's credentials and TLS."""
        return Redis(host=host, port=port, **self._options)

    async def ping(self) -> None:
        if isinstance(self.client, RedisCluster):
            await self.client.ping(target_nodes=RedisCluster.PRIMARIES)
        else:
            await self.client.ping()

    def describe(self) -> str:
        """The URL fit for a log line or an error message."""
        return without_password(self.address.url)

    async def aclose(self) -> None:
        await self.client.aclose()
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                with contextlib.suppress(Exception):
                    await sentinel.aclose()


class RedisSettings(Protocol):
    """Where Redis is and how to log in: the scaler's Settings and the sidecar's config."""

    @property
    def redis_url(self) -> str: ...
    @property
    def redis_password(self) -> str | None: ...
    @property
    def redis_sentinel_password(self) -> str | None: ...
    @property
    def redis_timeout_s(self) -> float: ...


def connect(settings: RedisSettings, *, decode_responses: bool = True) -> RedisLink:
    """A RedisLink for the settings' REDIS_URL (one Redis, Sentinel or Cluster)."""
    return RedisLink(
        settings.redis_url,
        settings.redis_password,
        settings.redis_timeout_s,
        settings.redis_sentinel_password,
        decode_responses=decode_responses,
    )


def check_redis_url(name: str, url: str, error: type[ValueError]) -> str:
    """`url` if it names a Redis; else `error` naming the variable `name` and the forms."""
    try:
        parse_redis_url(url)
    except RedisUrlError as exc:
        raise error(f"{name} = {shown(without_password(url))}, {exc}") from None
    return url


def without_password(url: str) -> str:
    """`url` fit for a log line or an error message."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return url
    if password is None:
        return url
    return url.replace(f":{password}@", ":***@", 1)
