"""Replay a request trace through the real scaling decision, against a simulated cluster.

`python -m scaler simulate` answers "which knobs, and what will they cost me": it
feeds `scaler.policy.decide` (the very function the server runs) with signals
from a simulated cluster, on a simulated clock, and compares the outcome with
baselines on the same trace. One concern per module:

- `trace`: loading CSV traces as they are published, synthesising bursty ones.
- `cluster`: pods (cold start, continuous batching), the FIFO queue, the
  service-time model, and the bookkeeping of cost and waits.
- `profile`: pod profiles: `simple` (the constant model) or a measured table of decode
  step time by batch and context (`profiles/`, with their provenance).
- `batching`: the cluster with a measured profile: a step clock per replica, the token
  side of the SLO, and the pods' token curve.
- `keda_hpa`: KEDA's activation and cooldown and the HPA's AverageValue rule,
  tolerance and behavior; pure, knows nothing of traces or pods (the local demo
  drives real pods with it).
- `controllers`: who decides the replica count: our scaler, the baselines.
- `oracle`: the clairvoyant floor, the denominator of every cost figure.
- `engine`: the event loop joining a trace, a cluster and a controller.
- `summary`: the figures of one run, as JSON and as a table.
- `plot`: the PNG (matplotlib, imported lazily).
- `sweep`: the knob grid, its cost/SLO frontier and the scale-to-zero break-even.
- `cli`, `run`, `presets`: the `simulate` subcommand, its run and its named presets.
"""
