"""Whether Triton and the configured models are ready: the KServe v2 readiness calls.

Two transports ask the same two questions (server ready? each model ready?), and
give a model's configuration (which sidecar.selection reads):

- `http` (the default): Triton's `GET /v2/health/ready` and `GET /v2/models/<m>/ready`,
  the endpoints Kubernetes probes of Triton use; 200 is ready, 400 (and 404 for a
  model) is not, anything else is no answer. Shares the metrics scrape's tiny
  HTTP client, so the sidecar imports neither grpc nor numpy (about 35 MB less).
- `grpc`: Triton's gRPC API (ServerReady, ModelReady) over grpc.aio,
  for a Triton serving no HTTP; imported only when chosen (sidecar.readiness_grpc).

A server that does not answer, or answers what Triton never does, is `TritonUnavailable`,
distinct from one that answers "not ready": the first is missing data (nothing is
written), the second is a pod that is starting.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sidecar.readiness_types import Readiness, ReadinessProbe, TritonUnavailable
from sidecar.scrape import HttpGetter, ScrapeError

if TYPE_CHECKING:
    from sidecar.config import SidecarConfig

# The answer's types live in sidecar.readiness_types, which the gRPC transport imports
# too (no cycle through this module); they stay importable from here.
__all__ = [
    "HttpReadinessProbe",
    "Readiness",
    "ReadinessProbe",
    "TritonUnavailable",
    "readiness_probe",
]


# What Triton's HTTP server answers (and tritonclient's HTTP client reads): 200 ready,
# 400 not ready; a model it does not know may also come back 404. Anything else (a
# proxy's 503, a wrong port's 404 on the server path) is no answer about readiness.
_NOT_READY_SERVER = frozenset({400})
_NOT_READY_MODEL = frozenset({400, 404})


class HttpReadinessProbe:
    """Asks Triton's HTTP endpoint: is the server ready, and is every model in `models`?"""

    def __init__(self, http_url: str, models: tuple[str, ...], timeout_s: float) -> None:
        self._http = HttpGetter(http_url, timeout_s)
        self._models = models
        self._timeout_s = timeout_s

    async def check(self) -> Readiness:
        # One bound for the whole check, as one Triton call is budgeted in the report loop.
        try:
            async with asyncio.timeout(self._timeout_s):
                if not await self._ready("/v2/health/ready", _NOT_READY_SERVER):
                    return Readiness(server_ready=False, models_not_ready=self._models)
                not_ready = [
                    m
                    for m in self._models
                    if not await self._ready(f"/v2/models/{quote(m)}/ready", _NOT_READY_MODEL)
                ]
        except ScrapeError as exc:
            raise TritonUnavailable(f"triton: {exc}") from None
        except TimeoutError:
            raise TritonUnavailable(
                f"triton readiness: no answer within {self._timeout_s:g} s"
            ) from None
        return Readiness(server_ready=True, models_not_ready=tuple(not_ready))

    async def model_config(self, model: str) -> Mapping[str, Any]:
        path = f"/v2/models/{quote(model)}/config"
        try:
            status, body = await self._http.get(path)
        except ScrapeError as exc:
            raise TritonUnavailable(f"triton: {exc}") from None
        if status != 200:
            raise TritonUnavailable(f"triton: {path} answered HTTP {status}")
        try:
            config = json.loads(body)
        except ValueError:
            raise TritonUnavailable(f"triton: {path} answered no JSON") from None
        if not isinstance(config, Mapping):
            raise TritonUnavailable(f"triton: {path} answered no JSON object")
        return config

    async def _ready(self, path: str, not_ready: frozenset[int]) -> bool:
        status, _ = await self._http.get(path)
        if status == 200:
            return True
        if status in not_ready:
            return False
        raise ScrapeError(f"{path} answered HTTP {status}, not Triton's 200 or 400")

    async def close(self) -> None:
        pass  # one connection per call: nothing held open


def readiness_probe(config: SidecarConfig) -> ReadinessProbe:
    """The readiness probe of the transport TRITON_READINESS chose (HTTP unless grpc)."""
    if config.readiness == "grpc":
        from sidecar.readiness_grpc import GrpcReadinessProbe

        return GrpcReadinessProbe(config.triton_grpc_url, config.models, config.triton_timeout_s)
    return HttpReadinessProbe(config.triton_http_url, config.models, config.triton_timeout_s)
