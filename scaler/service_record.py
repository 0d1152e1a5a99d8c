"""The service record: the mean service time the pods' completions teach (`ServiceRecord`),
and what one write adds to it (`Served`).

The mean service time is the time a request holds its slot. The record is kept in the
target's `:service` key (`scaler.reports`), past the pods themselves: after a
quiet night at zero replicas the first wake plans with what yesterday measured.
A write may carry `Served` (requests completed since the pod's previous write and
the seconds they executed); the write script adds it to the record with an
exponential decay by request count, so the record is the mean over about the last
SERVICE_MEMORY_REQUESTS completions, whatever their pace:
    f = exp(-n / SERVICE_MEMORY_REQUESTS); completed = completed f + n; busy_s = busy_s f + b
It expires SERVICE_TTL_S after its last update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scaler.reports import ReportError

# About 10,000 completions: a mean within ~1 % of the true one (service times vary by about
# their own size), and a new model version is learned within an hour of traffic or so.
SERVICE_MEMORY_REQUESTS = 10_000
SERVICE_TTL_S = 7 * 24 * 3600  # a week without a completion forgets the service time


@dataclass(frozen=True)
class Served:
    """What a pod completed since its previous write: requests, and the seconds they executed
    (Triton's request duration less its queue duration)."""

    completed: float
    busy_s: float

    def __post_init__(self) -> None:
        for name in ("completed", "busy_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ReportError(f"served {name} = {value!r}, must be a finite number >= 0")


@dataclass(frozen=True)
class ServiceRecord:
    """The service record's two fields; `add` is the write script's rule in Python (the
    simulator keeps one per run; tests hold the two to the same cases)."""

    completed: float = 0.0
    busy_s: float = 0.0

    def add(self, served: Served) -> ServiceRecord:
        if served.completed <= 0:
            return self
        f = math.exp(-served.completed / SERVICE_MEMORY_REQUESTS)
        return ServiceRecord(self.completed * f + served.completed, self.busy_s * f + served.busy_s)

    @property
    def mean_s(self) -> float:
        """The mean service time the record holds; 0 when it holds none."""
        return self.busy_s / self.completed if self.completed > 0 and self.busy_s > 0 else 0.0


NOTHING_LEARNED = ServiceRecord()  # a target no pod has completed a request for
