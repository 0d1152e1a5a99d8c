"""What the demo records every sample: the client's books, the streams, the answers, the fleet."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    t_s: float  # wall seconds since traffic started
    sent: int  # requests the client sent the gateway
    answered: int  # answered by a pod, relayed by the gateway
    errors: int  # ended with a named error
    queue: int  # waiting in the gateway's streams, not yet taken by a worker
    inflight: int  # taken by a pod's worker, not yet answered
    metric: float  # the scaler's last GetMetrics answer
    active: bool  # its last IsActive answer
    desired: int  # replicas KEDA/HPA set
    ready: int
    starting: int
    draining: int
    reason: str  # the scaler's latest decision reason

    @property
    def demand(self) -> int:
        return self.queue + self.inflight


def write_csv(samples: list[Sample], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[f.name for f in fields(Sample)])
        writer.writeheader()
        for sample in samples:
            writer.writerow(asdict(sample))
