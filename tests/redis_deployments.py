"""Redis as production runs it, on this machine: Sentinel and Cluster deployments of real
redis-server processes, on free ports, in temporary directories, for tests and benchmarks.

Failure detection is set fast (down-after 1 s, cluster-node-timeout 1 s) so a failover
takes seconds, not the production defaults' tens of seconds; nothing else differs.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Protocol

import redis
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from scaler.local_redis import LocalRedis, find_redis_server, free_port

NODE_TIMEOUT_MS = 1000
SERVICE = "mymaster"
PASSWORD = "data-secret"
SENTINEL_PASSWORD = "sentinel-secret"


class Deployment(Protocol):
    name: str
    url: str  # REDIS_URL for the scaler and the sidecars
    sentinel_password: str | None

    def client(self) -> redis.Redis | RedisCluster:
        """A test's own client (decoded responses), following failovers as ours do."""

    def master_of(self, key: str) -> LocalRedis:
        """The process holding `key` now."""

    def direct(self, node: LocalRedis) -> redis.Redis:
        """A client to that one process, whatever its role."""

    def replicas_of(self, master: LocalRedis) -> list[LocalRedis]: ...

    def kill(self, node: LocalRedis) -> None:
        """As on a crash: at once, nothing saved."""

    def heal(self) -> None:
        """Start again what a test killed; it rejoins as a replica (Sentinel: in its own time,
        the other replica stands by meanwhile)."""

    def data_pids(self) -> list[int]:
        """The masters' process ids (benchmarks read their CPU)."""

    def close(self) -> None: ...


def _wait(condition: object, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"redis deployment: {what} not within {timeout_s} s")
        time.sleep(0.05)  # real processes settling: no clock to inject


def _redis_cli() -> str:
    found = shutil.which("redis-cli") or str(Path(find_redis_server()).with_name("redis-cli"))
    if not Path(found).exists():
        raise RuntimeError("no redis-cli next to redis-server: it creates the test Cluster")
    return found


def _replicas(master: redis.Redis, nodes: list[LocalRedis]) -> list[LocalRedis]:
    with master:
        info = master.info("replication")
    ports = {int(info[f"slave{i}"]["port"]) for i in range(int(info["connected_slaves"]))}
    return [node for node in nodes if node.port in ports]


class SentinelDeployment:
    """1 master + 2 replicas + 3 sentinels, passwords on the data nodes and the sentinels."""

    name = "sentinel"
    sentinel_password: str | None = SENTINEL_PASSWORD

    def __init__(self) -> None:
        auth = ("--requirepass", PASSWORD, "--masterauth", PASSWORD)
        self.nodes = [LocalRedis(extra_args=auth)]
        master = self.nodes[0]
        replica_of = ("--replicaof", "127.0.0.1", str(master.port))
        self.nodes += [LocalRedis(extra_args=auth + replica_of) for _ in range(2)]
        self._dir = tempfile.TemporaryDirectory(prefix="llm-scaler-sentinel-")
        self._sentinel_ports = [free_port() for _ in range(3)]
        self._sentinels: list[subprocess.Popen[bytes]] = []
        self._killed: list[LocalRedis] = []
        sentinels = ",".join(f"127.0.0.1:{p}" for p in self._sentinel_ports)
        self.url = f"redis+sentinel://:{PASSWORD}@{sentinels}/{SERVICE}/0"

    def start(self) -> SentinelDeployment:
        for node in self.nodes:
            node.start()
        master_port = self.nodes[0].port
        for port in self._sentinel_ports:
            conf = Path(self._dir.name) / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self._dir.name}\n"
                f"requirepass {SENTINEL_PASSWORD}\nsentinel sentinel-pass {SENTINEL_PASSWORD}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
                f"sentinel auth-pass {SERVICE} {PASSWORD}\n"
                f"sentinel down-after-milliseconds {SERVICE} {NODE_TIMEOUT_MS}\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
            )
            self._sentinels.append(
                subprocess.Popen(
                    [find_redis_server(), str(conf), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        sentinel = self._sentinel()
        _wait(lambda: self._replicas_in_sync(), "replicas in sync")
        _wait(
            lambda: all(
                int(s.sentinel_master(SERVICE)["num-other-sentinels"]) == 2
                for s in sentinel.sentinels
            ),
            "sentinels seeing each other",
        )
        return self

    def _sentinel(self) -> Sentinel:
        return Sentinel(
            [("127.0.0.1", p) for p in self._sentinel_ports],
            sentinel_kwargs={"password": SENTINEL_PASSWORD, "socket_timeout": 0.5},
            password=PASSWORD,
            socket_timeout=0.5,
            decode_responses=True,
        )

    def _replicas_in_sync(self) -> bool:  # at start
        with self.direct(self.nodes[0]) as master:
            return int(master.info("replication")["connected_slaves"]) == 2

    def direct(self, node: LocalRedis) -> redis.Redis:
        return redis.Redis(port=node.port, password=PASSWORD, decode_responses=True)

    def client(self) -> redis.Redis:
        return self._sentinel().master_for(SERVICE, socket_timeout=0.5)

    def master_of(self, key: str) -> LocalRedis:
        _, port = self._sentinel().discover_master(SERVICE)
        return next(node for node in self.nodes if node.port == port)

    def replicas_of(self, master: LocalRedis) -> list[LocalRedis]:
        return _replicas(self.direct(master), self.nodes)

    def heal(self) -> None:
        # The sentinels turn the old master into a replica at their next INFO (up to 10 s);
        # waiting for it buys nothing: the other replica stands by for the next failover.
        for node in self._killed:
            node.start()
        self._killed.clear()

    def kill(self, node: LocalRedis) -> None:
        node.kill()
        self._killed.append(node)

    def settle(self) -> None:
        """Until the master has both replicas again (benchmarks: failover after failover)."""
        _wait(
            lambda: (
                int(self.direct(self.master_of("")).info("replication")["connected_slaves"]) == 2
            ),
            "both replicas linked to the master",
        )

    def data_pids(self) -> list[int]:
        return [p for p in (self.master_of("").pid,) if p is not None]

    def close(self) -> None:
        for process in self._sentinels:
            process.kill()
            process.wait()
        for node in self.nodes:
            node.close()
        self._dir.cleanup()


class ClusterDeployment:
    """3 masters, each with 1 replica, made by `redis-cli --cluster create`."""

    name = "cluster"
    sentinel_password: str | None = None

    def __init__(self) -> None:
        self.nodes: list[LocalRedis] = []
        self._killed: list[LocalRedis] = []
        self.url = ""

    def start(self, attempts: int = 3) -> ClusterDeployment:
        """Free ports are only free when asked: one taken meanwhile fails a node's start or
        the creation, so a failed attempt is made again on other ports."""
        for attempt in range(attempts):
            self.nodes = [_cluster_node(port, bus) for port, bus in _distinct_ports(6, 2)]
            self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])
            try:
                self._create()
                return self
            except (RuntimeError, TimeoutError, OSError):
                self.close()
                if attempt == attempts - 1:
                    raise
        return self

    def _create(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        create = ["--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"]
        done = subprocess.run(
            [_redis_cli(), *create], capture_output=True, text=True, timeout=60, check=False
        )
        try:
            # Its own final check can fail on a loaded machine while the nodes still agree
            # a moment later: the cluster's state decides, the exit status only explains.
            _wait(self._settled, "cluster state ok on every node")
        except TimeoutError:
            output = f"{done.stdout}{done.stderr}"
            raise RuntimeError(f"redis-cli --cluster create: {done.returncode}\n{output}") from None

    def _settled(self) -> bool:
        for node in self.nodes:
            if node in self._killed:
                continue
            with redis.Redis(port=node.port, decode_responses=True) as direct:
                info = direct.cluster("INFO")
                if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != 6:
                    return False
                roles = direct.info("replication")
                if roles["role"] == "slave" and roles["master_link_status"] != "up":
                    return False
        return True

    def client(self) -> RedisCluster:
        return RedisCluster(
            host="127.0.0.1", port=self.nodes[0].port, decode_responses=True, socket_timeout=0.5
        )

    def master_of(self, key: str) -> LocalRedis:
        with redis.Redis(port=self._alive().port, decode_responses=True) as direct:
            slot = direct.cluster("KEYSLOT", key)
            for start, end, master, *_ in direct.cluster("SLOTS"):
                if start <= slot <= end:
                    return next(node for node in self.nodes if node.port == master[1])
        raise LookupError(f"no master holds slot {slot}")

    def direct(self, node: LocalRedis) -> redis.Redis:
        return redis.Redis(port=node.port, decode_responses=True)

    def replicas_of(self, master: LocalRedis) -> list[LocalRedis]:
        return _replicas(self.direct(master), self.nodes)

    def _alive(self) -> LocalRedis:
        return next(node for node in self.nodes if node not in self._killed)

    def kill(self, node: LocalRedis) -> None:
        node.kill()
        self._killed.append(node)

    def heal(self) -> None:
        for node in self._killed:
            node.start()
        self._killed.clear()
        _wait(self._settled, "the restarted node back as a replica", 30)

    def data_pids(self) -> list[int]:
        masters = {self.master_of(f"{{{i}}}").port for i in range(64)}
        return [n.pid for n in self.nodes if n.port in masters and n.pid is not None]

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def _distinct_ports(count: int, each: int) -> list[tuple[int, ...]]:
    ports: list[int] = []
    while len(ports) < count * each:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return [tuple(ports[i : i + each]) for i in range(0, len(ports), each)]


def _cluster_node(port: int, bus_port: int) -> LocalRedis:
    return LocalRedis(
        port,
        extra_args=(
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
            "--cluster-port",
            str(bus_port),
        ),
    )


class SingleDeployment:
    """The suite's one redis-server, seen as a deployment."""

    name = "single"
    sentinel_password: str | None = None

    def __init__(self, server: LocalRedis) -> None:
        self.server = server
        self.url = server.url

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

    def master_of(self, key: str) -> LocalRedis:
        return self.server

    def direct(self, node: LocalRedis) -> redis.Redis:
        return self.client()

    def replicas_of(self, master: LocalRedis) -> list[LocalRedis]:
        return []

    def kill(self, node: LocalRedis) -> None:
        node.kill()

    def heal(self) -> None:
        if self.server.pid is None:
            self.server.start()

    def data_pids(self) -> list[int]:
        return [p for p in (self.server.pid,) if p is not None]

    def close(self) -> None:
        pass
