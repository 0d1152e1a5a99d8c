"""A real Triton Inference Server for the tests, with models of the tests' own.

`nvidia-pytriton` (a dev dependency) ships `tritonserver` 2.51 with its Python backend,
which runs on the CPU. It is run here directly on a model repository written by
`Repository` from tests/triton_models/ (Python-backend `model.py` files), with:
- a backend directory of its own: the wheel's `backends/` plus the Python backend's
  stub for this interpreter (the wheel keeps one per Python version aside, as PyTriton
  itself copies it into place);
- the running interpreter's own LIBDIR first on LD_LIBRARY_PATH, then the wheel's
  libraries: the stub links libpython3.X.so, and with an interpreter that is not the
  system's it would load the system library and fail on a stdlib mismatch
  ('_thread.RLock' object has no attribute '_recursion_count').

`ClosedLoop` clients keep a number of requests in the system over Triton's HTTP API,
and `SidecarProcess` runs `python -m sidecar` against the server.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

from scaler.local_redis import free_port
from scaler.reports import PodReport, report_keys
from tests.harness import NAMESPACE

MODELS_DIR = Path(__file__).parent / "triton_models"
START_TIMEOUT_S = 90.0


def _pytriton_dir() -> Path:
    spec = importlib.util.find_spec("pytriton")  # found, not imported: it is heavy
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nvidia-pytriton is not installed: `make venv` installs it")
    return Path(next(iter(spec.submodule_search_locations)))


class Repository:
    """A model repository in `root`, written model by model."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _model(self, name: str, config: str, code: str | None) -> None:
        (self.root / name / "1").mkdir(parents=True, exist_ok=True)
        (self.root / name / "config.pbtxt").write_text(config)
        if code is not None:
            shutil.copy(MODELS_DIR / code, self.root / name / "1" / "model.py")

    def sleeper(self, name: str, instances: int) -> None:
        """Plain model: `instances` requests execute at once, each DURATION_S seconds."""
        self._model(name, _python_config(instances, decoupled=False), "sleeper.py")

    def batcher(
        self,
        name: str,
        instances: int,
        max_batch_size: int,
        max_queue_delay_us: int = 0,
        preferred_batch_sizes: tuple[int, ...] = (),
    ) -> None:
        """Plain model with Triton's dynamic batcher (PyTriton's `@batch` default):
        `instances` batches execute at once, each of up to `max_batch_size` requests
        that all take the batch's DURATION_S; requests send shape [1, 1]."""
        preferred = (
            f"preferred_batch_size: [ {', '.join(map(str, preferred_batch_sizes))} ] "
            if preferred_batch_sizes
            else ""
        )
        config = (
            f'backend: "python"\nmax_batch_size: {max_batch_size}\n'
            + _IO
            + f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n"
            + f"dynamic_batching {{ {preferred}"
            + f"max_queue_delay_microseconds: {max_queue_delay_us} }}\n"
        )
        self._model(name, config, "batcher.py")

    def streamer(self, name: str) -> None:
        """Decoupled model, one instance: 3 events over DURATION_S (an LLM's stream)."""
        self._model(name, _python_config(1, decoupled=True), "streamer.py")

    def engine(self, name: str, max_running: int, gauges: str = "vllm") -> None:
        """Decoupled model with the vLLM backend's gauges (`gauges="none"`: without)."""
        parameters = (
            f'parameters [ {{ key: "max_running" value: {{ string_value: "{max_running}" }} }},'
            f' {{ key: "gauges" value: {{ string_value: "{gauges}" }} }} ]\n'
        )
        self._model(name, _python_config(1, decoupled=True) + parameters, "engine.py")

    def decoder(
        self, name: str, base_ms: float, per_sequence_ms: float, max_running: int = 64
    ) -> None:
        """Decoupled model decoding as a continuous batcher: a step of B sequences takes
        base_ms + per_sequence_ms x B; the vLLM backend's token-time histogram and gauges
        (tests/triton_models/decoder.py). Requests send OUTPUT_TOKENS."""
        parameters = ", ".join(
            f'{{ key: "{key}" value: {{ string_value: "{value}" }} }}'
            for key, value in (
                ("base_ms", base_ms),
                ("per_sequence_ms", per_sequence_ms),
                ("max_running", max_running),
            )
        )
        config = (
            'backend: "python"\nmax_batch_size: 0\n'
            "model_transaction_policy { decoupled: true }\n"
            'input [ { name: "OUTPUT_TOKENS" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
            'output [ { name: "OUTPUT_TOKENS" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
            "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
            f"parameters [ {parameters} ]\n"
        )
        self._model(name, config, "decoder.py")

    def ensemble(self, name: str, *steps: str) -> None:
        """An ensemble calling `steps` in turn, DURATION_S passed along."""
        step = (
            '{{ model_name: "{0}" model_version: -1 input_map {{ key: "DURATION_S" value: "{1}" }}'
            ' output_map {{ key: "SLEPT_S" value: "{2}" }} }}'
        )
        tensors = ["DURATION_S", *(f"STEP_{i}" for i in range(len(steps) - 1)), "SLEPT_S"]
        chain = ", ".join(step.format(s, tensors[i], tensors[i + 1]) for i, s in enumerate(steps))
        config = (
            'platform: "ensemble"\nmax_batch_size: 0\n'
            + _IO
            + f"ensemble_scheduling {{ step [ {chain} ] }}\n"
        )
        self._model(name, config, None)


_IO = (
    'input [ { name: "DURATION_S" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
    'output [ { name: "SLEPT_S" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
)


def _python_config(instances: int, decoupled: bool) -> str:
    policy = "model_transaction_policy { decoupled: true }\n" if decoupled else ""
    return (
        'backend: "python"\nmax_batch_size: 0\n'
        + policy
        + _IO
        + f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n"
    )


@contextlib.contextmanager
def serving(repository: Path, workdir: Path) -> Iterator[TritonServer]:
    """A tritonserver on `repository`, ready, stopped on the way out (a module fixture's body)."""
    server = TritonServer(repository, workdir).start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


class TritonServer:
    """One tritonserver process on free ports; `stop` and `start` again keep them."""

    def __init__(self, repository: Path, workdir: Path, *extra_args: str) -> None:
        self.repository = repository
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.log_path = workdir / "tritonserver.log"
        self._extra_args = extra_args
        self._process: subprocess.Popen[bytes] | None = None
        pytriton = _pytriton_dir() / "tritonserver"
        self._binary = pytriton / "bin" / "tritonserver"
        self._libs = pytriton.parent.parent / "nvidia_pytriton.libs"
        # The Python backend's shared-memory regions carry this prefix, so the ones a
        # killed server leaves in /dev/shm can be removed.
        self._shm_prefix = f"llm_keda_test_{os.getpid()}_{self.http_port}_"
        self._backends = workdir / "backends"
        if not self._backends.exists():
            shutil.copytree(pytriton / "backends", self._backends)
            version = f"{sys.version_info.major}.{sys.version_info.minor}"
            stub = pytriton / "python_backend_stubs" / version / "triton_python_backend_stub"
            shutil.copy(stub, self._backends / "python" / stub.name)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> TritonServer:
        if self.running:
            raise RuntimeError("tritonserver is already running")
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        inherited = os.environ.get("LD_LIBRARY_PATH", "")
        env = {
            **os.environ,
            "LD_LIBRARY_PATH": ":".join(p for p in (libdir, str(self._libs), inherited) if p),
            # The stub runs model.py with the python found first: this interpreter's.
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        }
        argv = [
            str(self._binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={self._backends}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--exit-timeout-secs=1",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            "--log-verbose=0",
            *self._extra_args,
        ]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> float:
        """Seconds until /v2/health/ready answered 200."""
        began = time.monotonic()
        while time.monotonic() - began < timeout_s:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"tritonserver exited: {self.log_tail()}")
            if self.get("/v2/health/ready")[0] == 200:
                return time.monotonic() - began
            time.sleep(0.1)
        raise RuntimeError(f"tritonserver not ready within {timeout_s} s: {self.log_tail()}")

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (SIGKILL when `kill`, as a crash) to the server and its stubs."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)
        # The stubs are in the server's session: none outlives it.
        for _ in range(100):
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.killpg(process.pid, signal.SIGKILL)
        for region in Path("/dev/shm").glob(f"{self._shm_prefix}*"):
            region.unlink(missing_ok=True)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=2) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError:
            return 0, ""

    def post(self, path: str, body: object = None) -> int:
        data = json.dumps(body or {}).encode()
        request = urllib.request.Request(self.http_url + path, data, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


class ClosedLoop:
    """`clients` threads, each sending its next request of `duration_s` when the last ends."""

    def __init__(
        self,
        server: TritonServer,
        model: str,
        duration_s: float,
        *,
        generate: bool = False,
        batched: bool = False,
    ) -> None:
        self._server = server
        self._shape = [1, 1] if batched else [1]  # a batched model's inputs lead with the batch
        self._model = model
        self._duration_s = duration_s
        self._generate = generate  # decoupled models answer on /generate
        self._wanted = 0
        self._alive: set[int] = set()  # client indices with a thread running
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.errors: list[str] = []
        self.completed = 0
        self.last_end_s = 0.0  # time.monotonic() when the latest request ended

    def set_clients(self, clients: int) -> None:
        """Grows at once; shrinks as each surplus client's request ends."""
        with self._lock:
            self._wanted = clients
            for index in set(range(clients)) - self._alive:
                self._alive.add(index)
                thread = threading.Thread(target=self._client, args=(index,), daemon=True)
                self._threads.append(thread)
                thread.start()

    def stop(self, timeout_s: float = 60) -> None:
        self.set_clients(0)
        for thread in self._threads:
            thread.join(timeout_s)

    def _client(self, index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self._server.http_port, timeout=120)
        if self._generate:
            path, body = "generate", {"DURATION_S": [self._duration_s]}
        else:
            path = "infer"
            body = {
                "inputs": [
                    {"name": "DURATION_S", "shape": self._shape, "datatype": "FP32",
                     "data": [self._duration_s]}
                ]
            }  # fmt: skip
        payload = json.dumps(body)
        try:
            while True:
                with self._lock:
                    if index >= self._wanted:
                        self._alive.discard(index)
                        return
                connection.request("POST", f"/v2/models/{self._model}/{path}", payload)
                answer = connection.getresponse()
                text = answer.read()
                if answer.status != 200:
                    self.errors.append(f"{answer.status}: {text[:200]!r}")
                    return
                with self._lock:
                    self.completed += 1
                    self.last_end_s = time.monotonic()
        except OSError as exc:
            self.errors.append(repr(exc))
        finally:
            with self._lock:
                self._alive.discard(index)
            connection.close()


class SidecarProcess:
    """`python -m sidecar` for one pod of `target`, reading `server`'s `models`."""

    def __init__(
        self, server: TritonServer, redis_url: str, pod: str, models: str, target: str = "llm"
    ) -> None:
        self.pod = pod
        self.keys = report_keys(NAMESPACE, target)
        env = {
            **os.environ,
            "POD_NAME": pod,
            "POD_NAMESPACE": NAMESPACE,
            "TARGET_NAME": target,
            "REDIS_URL": redis_url,
            "TRITON_HTTP_URL": server.http_url,
            "TRITON_METRICS_URL": server.metrics_url,
            "TRITON_MODELS": models,
            "BIND_ADDRESS": "127.0.0.1",
            "METRICS_PORT": str(metrics_port := free_port()),
            "DELETION_COST": "off",
        }
        self.healthz_url = f"http://127.0.0.1:{metrics_port}/healthz"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "--interval", "1", "--poll-interval", "0.5"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def serving(self) -> bool:
        """Whether the sidecar is up: its reporter exists once it serves /healthz."""
        try:
            with urllib.request.urlopen(self.healthz_url, timeout=1) as answer:
                return bool(answer.status)
        except urllib.error.HTTPError:
            return True  # answering, if not healthy (Triton down): up all the same
        except OSError:
            return False

    def report(self, client: redis.Redis) -> PodReport | None:
        payload = client.hget(self.keys.reports, self.pod)
        return None if payload is None else PodReport.from_json(payload)  # type: ignore[arg-type]

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=15)
        return output


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Real time, bounded: a real server's pace. Returns the seconds it took."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if condition():
            return time.monotonic() - began
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s} s")


class TokenLoop:
    """`clients` threads on `port`, each asking `model` for its next request of output
    tokens when the last is answered: a number drawn evenly from `tokens`, so the answers
    spread out and the batch keeps about `clients` sequences. `generate`: Triton's generate
    endpoint (a decoupled model); else KServe v2 infer with JSON tensors."""

    def __init__(
        self, port: int, model: str, tokens: tuple[int, int], *, generate: bool, seed: int = 0
    ) -> None:
        self._port = port
        self._model = model
        self._tokens = tokens
        self._generate = generate
        self._seed = seed
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[str] = []
        self.completed = 0

    def start(self, clients: int) -> TokenLoop:
        for index in range(clients):
            thread = threading.Thread(target=self._client, args=(index,), daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self, timeout_s: float = 60) -> None:
        """No new request; each client's last one ends on its own."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout_s)

    def _body(self, tokens: int) -> str:
        if self._generate:
            return json.dumps({"OUTPUT_TOKENS": [tokens]})
        tensor = {"name": "OUTPUT_TOKENS", "shape": [1], "datatype": "INT32", "data": [tokens]}
        return json.dumps({"inputs": [tensor]})

    def _client(self, index: int) -> None:
        draw = random.Random(self._seed * 100_003 + index)
        path = f"/v2/models/{self._model}/{'generate' if self._generate else 'infer'}"
        connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=300)
        try:
            while not self._stopping.is_set():
                connection.request("POST", path, self._body(draw.randint(*self._tokens)))
                answer = connection.getresponse()
                text = answer.read()
                if answer.status != 200:
                    self.errors.append(f"{answer.status}: {text[:200]!r}")
                    return
                self.completed += 1
        except OSError as exc:
            self.errors.append(repr(exc))
        finally:
            connection.close()
