"""What a readiness check answers, whichever transport asks: `Readiness`, the probe's
interface, and `TritonUnavailable` for no answer. Shared by sidecar.readiness (HTTP, and
the choice of transport) and sidecar.readiness_grpc, so neither imports the other's module
for them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class TritonUnavailable(Exception):
    """Triton did not answer in time, or answered with an error."""


@dataclass(frozen=True)
class Readiness:
    server_ready: bool
    models_not_ready: tuple[str, ...] = ()

    @property
    def ready(self) -> bool:
        return self.server_ready and not self.models_not_ready


class ReadinessProbe(Protocol):
    async def check(self) -> Readiness: ...

    async def model_config(self, model: str) -> Mapping[str, Any]:
        """Triton's configuration of `model` (JSON); TritonUnavailable when not given."""
        ...

    async def close(self) -> None: ...
