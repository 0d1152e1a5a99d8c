"""When the target is awake (IsActive), and until when it stays so.

IsActive is true while demand exceeds `activationThreshold`, and stays true
until demand has been exactly zero for the scale-to-zero delay, however low it
was before. Worked example (delay 300 s): demand 3 at t=100, 0 from t=200 ->
active until t=500.
"""

from __future__ import annotations

import math

# A deadline is rounded up to a 60th of its delay, so the stored deadline changes
# 60 times per delay rather than on every poll (fewer state writes).
DEADLINE_STEPS = 60


def awake_until(
    demand: float, threshold: float, active_until: float, now: float, delay_s: float
) -> tuple[bool, float]:
    """(active now, the new active-until deadline)."""
    wakes = demand > threshold
    if wakes or (now < active_until and demand > 0):
        active_until = max(active_until, deadline(now, delay_s))
    return wakes or now < active_until, active_until


def deadline(now: float, delay_s: float) -> float:
    """now + delay_s, rounded up to a 60th of the delay: never earlier than asked
    (at most 1.7% later)."""
    if delay_s <= 0:
        return now
    quantum = delay_s / DEADLINE_STEPS
    return math.ceil((now + delay_s) / quantum) * quantum
