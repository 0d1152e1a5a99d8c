"""Readiness over Triton's gRPC API (`TRITON_READINESS=grpc`), through tritonclient.

Imported only when chosen: tritonclient imports numpy and grpc (about 35 MB of RSS).
Uses tritonclient's asyncio client (`tritonclient.grpc.aio`, beta in tritonclient
2.41 but a thin layer over grpc.aio), so no call blocks the event loop. A server
that does not answer is `TritonUnavailable`, distinct from one that answers "not
ready": the first is missing data, the second is a pod that is starting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from sidecar.readiness import Readiness, TritonUnavailable

_UNREACHABLE = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED")


class GrpcReadinessProbe:
    """Asks one Triton server: is it ready, and is every model in `models` ready?"""

    def __init__(self, grpc_url: str, models: tuple[str, ...], timeout_s: float) -> None:
        self._url = grpc_url
        self._models = models
        self._timeout_s = timeout_s
        self._client: InferenceServerClient | None = None

    async def check(self) -> Readiness:
        # Created on first use (its grpc.aio channel binds to the running loop) and
        # again after a failure: a channel that failed to connect waits out a growing
        # reconnect backoff (up to minutes), and a restarted Triton must be seen at once.
        if self._client is None:
            self._client = InferenceServerClient(self._url)
        try:
            async with asyncio.timeout(self._timeout_s):
                server_ready = bool(
                    await self._client.is_server_ready(client_timeout=self._timeout_s)
                )
                if not server_ready:
                    return Readiness(server_ready=False, models_not_ready=self._models)
                not_ready = [m for m in self._models if not await self._model_ready(m)]
        except InferenceServerException as exc:
            await self.close()
            raise TritonUnavailable(f"triton at {self._url}: {_short(exc)}") from None
        except TimeoutError:
            await self.close()
            raise TritonUnavailable(
                f"triton at {self._url} did not answer within {self._timeout_s:g} s"
            ) from None
        return Readiness(server_ready=True, models_not_ready=tuple(not_ready))

    async def model_config(self, model: str) -> Mapping[str, Any]:
        if self._client is None:
            self._client = InferenceServerClient(self._url)
        try:
            async with asyncio.timeout(self._timeout_s):
                answer = await self._client.get_model_config(
                    model, as_json=True, client_timeout=self._timeout_s
                )
        except (InferenceServerException, TimeoutError) as exc:
            await self.close()
            raise TritonUnavailable(f"triton at {self._url}: config of {model}: {exc}") from None
        config = answer.get("config") if isinstance(answer, Mapping) else None
        if not isinstance(config, Mapping):
            raise TritonUnavailable(f"triton at {self._url}: config of {model} is not an object")
        return config

    async def _model_ready(self, model: str) -> bool:
        assert self._client is not None
        try:
            return bool(await self._client.is_model_ready(model, client_timeout=self._timeout_s))
        except InferenceServerException as exc:
            # A server that answers about the server but errs about one model (not in
            # its repository, say) is up: that model is not ready, the pod is starting.
            if exc.status() in _UNREACHABLE:
                raise
            return False

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing a broken channel: nothing to save
                await client.close()


def _short(exc: InferenceServerException) -> str:
    # tritonclient's message can carry a multi-line gRPC debug string; the first line says it.
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
