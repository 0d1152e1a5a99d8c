"""All a scaling decision remembers between polls (`PolicyState`), and the bound on its size.

A value of its own, apart from the decision that computes it (scaler.policy), so that
what stores and encodes it (scaler.state_codec, scaler.store) reads it without the
decision. No logic here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scaler import window

# Buckets per window: memory per target is bounded by this, and a sample is held
# at most one bucket (window / 60) longer than asked.
BUCKETS_PER_WINDOW = 60


@dataclass(frozen=True)
class PolicyState:
    """All a decision remembers; stored in Redis so every scaler replica shares it.

    Each window is (bucket index, maximum) pairs; every field merges across
    replicas by maximum (see `scaler.state_codec`), so two replicas saving at
    once cannot lose each other's samples."""

    bucket_s: float = 0.0  # width of the needed, in_system and in_flight buckets
    needed: window.Buckets = field(default=())  # capacity needed, kept scaleDownDelaySeconds
    in_system: window.Buckets = field(default=())  # requests in the system, kept a cold start
    # Requests in flight (being served now; not completions, which are
    # scaler.service_record.Served), kept a cold start. Stored under the "s:" fields
    # (scaler.state_codec), its first name.
    in_flight: window.Buckets = field(default=())
    active_until: float = 0.0  # IsActive holds true until then
    # The SLO-aware hold: burst sizes over the horizon, in buckets of their own width.
    peak_bucket_s: float = 0.0
    peak_buckets: window.Buckets = field(default=())
    # With tokenLatencyMs: 1 / the per-replica concurrency, kept scaleDownDelaySeconds in the
    # needed window's buckets; its maximum is the smallest concurrency, so a rise waits.
    inverse_concurrency: window.Buckets = field(default=())
