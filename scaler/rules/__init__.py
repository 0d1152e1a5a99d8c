"""The rules the decision combines, one module each, each a pure function of numbers.

- `forecast`: the capacity needed one cold start from now (what the metric sizes for);
- `slo`: SLO-aware mode's warm slots for the bursts of a horizon;
- `activation`: when the target is awake (IsActive) and when it may go to zero;
- `tolerance`: the metric lifted past the HPA's tolerance band where a small fleet's band
  would swallow a one-replica rise.

`scaler.policy.decide` reads the signals and the stored windows, calls these, and
combines their answers; none of them knows about Redis, gRPC or the clock.
"""
