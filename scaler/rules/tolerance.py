"""The HPA's tolerance: a one-replica rise that a small fleet's band would swallow.

The HPA (AverageValue) keeps its n replicas while |metric / (n x target) - 1| <= 0.1
(`hpaTolerance`: the kube-controller-manager's default `--horizontal-pod-autoscaler-tolerance`,
or the ScaledObject's `behavior.scaleUp.tolerance` where the cluster allows one) and
otherwise asks for ceil(metric / target). Below 10 replicas that band is wider than a
replica: a need for n + 1 (metric in (n x target, 1.1 x n x target]) goes unheard until
it grows past 1.1 n, while the queue it is for waits. So when the need asks for more
replicas than run and the band would swallow it, the metric is reported just past the
band, which the HPA turns into exactly n + 1 (ceil(1.1 n + a little) = n + 1 for n < 10).

From 10 replicas just past the band is n + 2 or more, more than the need asks: the
metric is left as it is. A scale-down is never swallowed below 10 (n - 1 <= 0.9 n), and
with `hpaTolerance` larger than the HPA's the lifted metric still asks for no more than
the need; smaller, it may not be enough, and nothing is worse than without it; 0 turns
the rule off (there is no band).

Worked example (target 6.4 per replica, 2 replicas): need 13.5 -> ceil(2.11) = 3 wanted,
but 13.5 / 12.8 = 1.05 is within the band and the HPA keeps 2; lifted to 14.1 (just past
2 x 6.4 x 1.1 = 14.08) it asks for ceil(2.2) = 3.
"""

from __future__ import annotations

import math

_JUST_PAST = 1.001  # a thousandth past the band: clear of rounding to KEDA's milli-units


def past_tolerance(metric: float, replicas: int, replica_target: float, tolerance: float) -> float:
    """`metric`, lifted just past the HPA's tolerance band (`hpaTolerance`) when the band
    would keep `replicas` where the metric asks for exactly one more; otherwise as it is."""
    if replicas <= 0 or replica_target <= 0:
        return metric
    wanted = math.ceil(round(metric / replica_target, 9))
    band = (1.0 + tolerance) * replicas * replica_target
    if wanted <= replicas or metric > band:
        return metric
    lifted = band * _JUST_PAST
    return lifted if math.ceil(lifted / replica_target) <= wanted else metric
