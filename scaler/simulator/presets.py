"""The simulator's named presets: the baselines, the ScaledObjects and the CLI's shorthands.

Names and numbers only, no simulation (numpy, the models), so the CLI can register
`simulate` without paying for it, and the CLI, the run and the comparison share one copy.
"""

from __future__ import annotations

BASELINES = (
    "first-wake",
    "slo-aware",
    "oracle",
    "fixed-peak",
    "keda-defaults",
    "redis-list",
    "hpa-utilisation",
)

# The pod profiles (`scaler.simulator.profile`): simple is the constant model.
SIMPLE = "simple"
H200 = "h200-llama3-8b"
PROFILES = (SIMPLE, H200)

# (pollingInterval, cooldownPeriod, HPA scale-down stabilizationWindowSeconds)
SCALEDOBJECTS = {
    "recommended": (15.0, 15.0, 0.0),  # the README's ScaledObject
    "keda-defaults": (30.0, 300.0, 300.0),  # KEDA's and the HPA's defaults
}

# (flag, trigger metadata key, default): the metadata keys `simulate` takes as flags.
SHORTHANDS = (
    ("--target-concurrency", "targetConcurrency", "8"),
    ("--target-utilization", "targetUtilization", None),
    ("--scale-down-delay", "scaleDownDelaySeconds", None),
    ("--scale-to-zero-delay", "scaleToZeroDelaySeconds", None),
    ("--activation-threshold", "activationThreshold", None),
    ("--slo-wait", "sloWaitSeconds", None),
)
