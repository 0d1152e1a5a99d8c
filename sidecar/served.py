"""What this pod completed since its last report write. Pure: no I/O, no clock.

The scaler learns the mean service time from every write's `scaler.service_record.Served`:
the requests this pod completed since its previous successful write, and the seconds
they executed. Both come from Triton's cumulative counters, per model version
(`nv_inference_request_success`; `nv_inference_request_duration_us` -
`nv_inference_queue_duration_us`), of the models in `Selection.served`
(sidecar.selection says which, each user request once).

The rules:
- A delta is the difference of two successive samples of one model version. The
  first sample of a version is a baseline, never a delta: what completed before it
  is known only as a sum over an unknown past (and a restarted sidecar would count
  it twice). So is a sample whose counters went down (Triton restarted, the model
  reloaded) and one after `rebase` (Triton went away): never a negative or invented
  delta. A version missing from a sample loses its baseline.
- Deltas accumulate until a write that carries them succeeds (`written`); a failed
  write keeps them for the next. Nothing is lost, nothing counted twice.
- No counters, no completions: `pending` is None, not a zero passed off as data.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

from scaler.service_record import Served
from sidecar.completions import Counters
from sidecar.triton_metrics import ModelKey


class ServedTally:
    """Completions and execution time of the served models since the last successful write."""

    def __init__(self) -> None:
        self._baselines: dict[ModelKey, Counters] = {}
        self._completed = 0.0
        self._busy_us = 0.0

    def observe(self, counters: Mapping[ModelKey, Counters], models: Collection[str]) -> None:
        """Adds what the versions of `models` completed since their previous sample."""
        baselines: dict[ModelKey, Counters] = {}
        for key, now in counters.items():
            if key[0] not in models or not math.isfinite(now.requests + now.busy_us):
                continue
            baselines[key] = now
            before = self._baselines.get(key)
            if before is None or now.requests < before.requests or now.busy_us < before.busy_us:
                continue  # a baseline: the first sample, or the counters started again
            self._completed += now.requests - before.requests
            self._busy_us += now.busy_us - before.busy_us
        self._baselines = baselines

    def rebase(self) -> None:
        """Triton went away: its next samples are baselines. What is pending stays."""
        self._baselines.clear()

    def pending(self) -> Served | None:
        """What the next write carries; None while nothing completed."""
        if self._completed <= 0:
            return None
        return Served(self._completed, self._busy_us / 1e6)

    def written(self, served: Served | None) -> None:
        """`served`, the latest `pending`, is stored: counting starts again from zero."""
        if served is not None:
            self._completed = self._busy_us = 0.0
