"""Request traces: loaded from CSV as published, or synthesised.

A trace is three aligned arrays (arrival time in seconds from the first
arrival, input tokens, output tokens), sorted by arrival. Two CSV layouts are
read as they are:

- Azure LLM inference traces (Patel et al., Splitwise, ISCA 2024):
  `TIMESTAMP` (`YYYY-MM-DD HH:MM:SS.fffffff`), `ContextTokens`, `GeneratedTokens`;
- our own plain layout: `arrival_s` (seconds, any origin), `input_tokens`,
  `output_tokens`.

Synthesis keeps the published trace out of the repository: `repeat_to` tiles a
trace to a longer span (a day from the one-hour sample, for timing),
`scale_rate` thins or superposes it to change the traffic level, `bursty`
makes quiet minutes broken by bursts of 10-30x the mean rate, `diurnal`
lays the same bursts under a day's envelope (busy afternoon, quiet night), and
`surge` is a low steady rate with one or two one-off surges of 100-500 requests.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_LAYOUTS = (
    ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
    ("arrival_s", "input_tokens", "output_tokens"),
)


class TraceError(ValueError):
    """A trace file that cannot be read as one of the known layouts."""


@dataclass(frozen=True)
class Trace:
    name: str
    arrival_s: FloatArray  # seconds from the trace's origin (a file's first arrival), ascending
    input_tokens: IntArray
    output_tokens: IntArray

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    @property
    def span_s(self) -> float:
        return float(self.arrival_s[-1]) if len(self) else 0.0

    @property
    def mean_rate(self) -> float:
        """Requests per second over the span (arrivals / span)."""
        return len(self) / self.span_s if self.span_s > 0 else 0.0


def make_trace(
    name: str, arrival_s: npt.ArrayLike, input_tokens: npt.ArrayLike, output_tokens: npt.ArrayLike
) -> Trace:
    """A trace from unsorted arrays: sorted by arrival (stable) and shifted to start at 0."""
    arrivals = np.asarray(arrival_s, dtype=np.float64)
    order = np.argsort(arrivals, kind="stable")
    arrivals = arrivals[order]
    if arrivals.size:
        arrivals = arrivals - arrivals[0]
    return Trace(
        name=name,
        arrival_s=arrivals,
        input_tokens=np.asarray(input_tokens, dtype=np.int64)[order],
        output_tokens=np.asarray(output_tokens, dtype=np.int64)[order],
    )


def load_csv(path: Path) -> Trace:
    with path.open(newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None:
            raise TraceError(f"{path}: empty file")
        columns = [h.strip() for h in header]
        layout = next((lay for lay in _LAYOUTS if set(lay) <= set(columns)), None)
        if layout is None:
            known = " or ".join(", ".join(lay) for lay in _LAYOUTS)
            raise TraceError(f"{path}: columns {columns}, must include {known}")
        at, inp, out = (columns.index(c) for c in layout)
        body = list(rows)
    if not body:
        raise TraceError(f"{path}: no requests")
    try:
        if layout[0] == "TIMESTAMP":
            # numpy parses 'YYYY-MM-DD HH:MM:SS.fffffff' to the nanosecond, fast.
            stamps = np.array([r[at] for r in body], dtype="datetime64[ns]")
            arrivals = (stamps - stamps.min()).astype(np.int64) / 1e9
        else:
            arrivals = np.array([float(r[at]) for r in body])
        inputs = np.array([int(r[inp]) for r in body], dtype=np.int64)
        outputs = np.array([int(r[out]) for r in body], dtype=np.int64)
    except (ValueError, IndexError) as exc:
        raise TraceError(f"{path}: unreadable row: {exc}") from None
    if (inputs < 0).any() or (outputs < 0).any():
        raise TraceError(f"{path}: negative token counts")
    return make_trace(path.stem, arrivals, inputs, outputs)


def repeat_to(trace: Trace, span_s: float) -> Trace:
    """The trace tiled end to end until it covers `span_s` (a day from an hour).

    Copies are spaced by the span plus one mean inter-arrival gap, so the seam
    looks like any other gap."""
    if len(trace) == 0 or span_s <= trace.span_s:
        return trace
    period = trace.span_s + 1.0 / max(trace.mean_rate, 1e-9)
    copies = math.ceil(span_s / period)
    arrivals = np.concatenate([trace.arrival_s + k * period for k in range(copies)])
    keep = arrivals <= span_s
    return Trace(
        name=f"{trace.name} x{copies}",
        arrival_s=arrivals[keep],
        input_tokens=np.tile(trace.input_tokens, copies)[keep],
        output_tokens=np.tile(trace.output_tokens, copies)[keep],
    )


def starting_at(trace: Trace, start_s: float) -> Trace:
    """The trace from `start_s` on, as if it began there: a wake from zero into traffic
    already going (a trace begins with its own first arrival, often a ramp from nothing)."""
    if not start_s >= 0:
        raise ValueError(f"start = {start_s}, must be >= 0 seconds")
    keep = trace.arrival_s >= start_s
    return make_trace(
        f"{trace.name} from {start_s:g} s",
        trace.arrival_s[keep],
        trace.input_tokens[keep],
        trace.output_tokens[keep],
    )


def scale_context_after(trace: Trace, at_s: float, factor: float) -> Trace:
    """The same arrivals, the input tokens of every request arriving at or after `at_s`
    multiplied by `factor` (rounded, at least 1): a context that changes mid-trace."""
    if factor <= 0:
        raise ValueError(f"context scale = {factor}, must be > 0")
    late = trace.arrival_s >= at_s
    scaled = np.maximum(1, np.rint(trace.input_tokens * factor)).astype(np.int64)
    inputs = np.where(late, scaled, trace.input_tokens)
    name = f"{trace.name}, input x{factor:g} from {at_s:g} s"
    return replace(trace, name=name, input_tokens=inputs)


def scale_rate(trace: Trace, factor: float, seed: int = 0) -> Trace:
    """The same traffic shape at `factor` times the rate.

    Below 1 each request is kept with probability `factor` (thinning keeps the
    shape). Above 1, whole copies circularly shifted by random offsets are laid
    over the original, then a thinned copy adds the fraction."""
    if factor <= 0:
        raise ValueError(f"rate factor = {factor}, must be > 0")
    if factor == 1 or len(trace) == 0:
        return trace
    rng = np.random.default_rng(seed)
    span = trace.span_s + 1.0 / max(trace.mean_rate, 1e-9)
    parts: list[tuple[FloatArray, IntArray, IntArray]] = []
    whole, fraction = int(factor), factor - int(factor)
    for k in range(whole):
        shift = 0.0 if k == 0 else float(rng.uniform(0, span))
        parts.append(((trace.arrival_s + shift) % span, trace.input_tokens, trace.output_tokens))
    if fraction > 0:
        keep = rng.random(len(trace)) < fraction
        shift = float(rng.uniform(0, span)) if whole else 0.0
        parts.append(
            (
                (trace.arrival_s[keep] + shift) % span,
                trace.input_tokens[keep],
                trace.output_tokens[keep],
            )
        )
    return make_trace(
        f"{trace.name} x{factor:g}",
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )


def bursty(
    span_s: float,
    mean_rate: float,
    seed: int = 0,
    burst_factor: tuple[float, float] = (10.0, 30.0),
    burst_s: tuple[float, float] = (2.0, 10.0),
    tokens_from: Trace | None = None,
    envelope: Callable[[float], float] | None = None,
    name: str | None = None,
) -> Trace:
    """Quiet minutes, then bursts of 10-30x `mean_rate` for a few seconds; Poisson inside.

    Silence between bursts is exponential with the mean that makes the overall
    rate come out at `mean_rate`: a burst of mean length B at mean factor F
    carries F * mean_rate * B requests, so bursts must start every F * B
    seconds on average. Worked example: F = 20, B = 6 s -> a burst every
    120 s, i.e. 114 s of silence on average, with some gaps of many minutes
    (exactly what scale-to-zero bets on). Tokens are drawn from `tokens_from`
    (pairs kept together) or from log-normals shaped like the conversation
    trace (input median 1,020, output median 129).

    `envelope(t)` (default 1) multiplies the rate of a burst starting at t: the
    level changes, the shape (silences, burst lengths, 10-30x the local mean)
    does not. An envelope averaging 1 over the span keeps `mean_rate`."""
    rng = np.random.default_rng(seed)
    mean_factor = sum(burst_factor) / 2
    mean_burst = sum(burst_s) / 2
    mean_silence = max(mean_factor * mean_burst - mean_burst, 0.0)
    arrivals: list[FloatArray] = []
    t = float(rng.exponential(mean_silence)) if mean_silence else 0.0
    while t < span_s:
        length = float(rng.uniform(*burst_s))
        rate = float(rng.uniform(*burst_factor)) * mean_rate
        if envelope is not None:
            rate *= envelope(t)
        count = int(rng.poisson(rate * length))
        arrivals.append(np.sort(rng.uniform(t, min(t + length, span_s), count)))
        t += length + (float(rng.exponential(mean_silence)) if mean_silence else 0.0)
    times = np.concatenate(arrivals) if arrivals else np.zeros(0)
    n = times.size
    if tokens_from is not None and len(tokens_from):
        pick = rng.integers(0, len(tokens_from), n)
        inputs, outputs = tokens_from.input_tokens[pick], tokens_from.output_tokens[pick]
    else:
        inputs = np.maximum(1, rng.lognormal(math.log(1020), 0.6, n)).astype(np.int64)
        outputs = np.maximum(1, rng.lognormal(math.log(129), 0.9, n)).astype(np.int64)
    # Keep the clock: the first burst comes after a silence, which is part of the story.
    return Trace(
        name=name or f"bursty {mean_rate:g} req/s",
        arrival_s=times,
        input_tokens=inputs,
        output_tokens=outputs,
    )


# The diurnal envelope: the rate at its lowest (night) as a share of the day's mean,
# and the hour of the day it peaks at; the trace starts at midnight.
DIURNAL_TROUGH = 0.1
DIURNAL_PEAK_HOUR = 15.0


def diurnal_envelope(
    t: float, trough: float = DIURNAL_TROUGH, peak_hour: float = DIURNAL_PEAK_HOUR
) -> float:
    """A day's traffic level at `t` seconds after midnight, averaging 1 over a day.

    A raised cosine from `trough` (3 a.m. at the defaults) to 2 - trough (3 p.m.):
    trough 0.1 -> 0.1x the mean at night, 1.9x in the afternoon, 19x apart; at
    midnight and 6 a.m. it is 0.36x, at 9 a.m. and 9 p.m. 1.0x."""
    phase = 2 * math.pi * (t / 3600.0 - peak_hour) / 24.0
    return trough + (1.0 - trough) * (1.0 + math.cos(phase))


def diurnal(
    span_s: float,
    mean_rate: float,
    seed: int = 0,
    trough: float = DIURNAL_TROUGH,
    tokens_from: Trace | None = None,
) -> Trace:
    """`bursty` traffic under a day's envelope: quiet minutes, then bursts of 10-30x the
    *local* mean for 2-10 s, the local mean rising from `trough` x `mean_rate` at 3 a.m.
    to (2 - `trough`) x `mean_rate` at 3 p.m. (see `diurnal_envelope`).

    Worked example (mean 0.84 req/s, trough 0.1): a 6 s burst at 20x carries about
    100 requests at 9 a.m. (level 1.0), 190 at 3 p.m. (1.9) and 10 at 3 a.m. (0.1),
    while bursts keep coming every 2 minutes on average day and night. A fixed fleet
    must be sized for the afternoon; a policy that follows the level need not."""
    if not 0 <= trough <= 1:
        raise ValueError(f"trough = {trough}, must be in [0; 1]")
    return bursty(
        span_s,
        mean_rate,
        seed=seed,
        tokens_from=tokens_from,
        envelope=lambda t: diurnal_envelope(t, trough),
        name=f"diurnal bursty {mean_rate:g} req/s",
    )


# The surge shape: how many surges an hour brings and how many requests each carries, and
# how long one lasts (a burst's 2-10 s). A surge is a one-off: it is not meant to recur.
SURGES = (1, 2)
SURGE_REQUESTS = (100, 500)
SURGE_S = (2.0, 10.0)


def _tokens(rng: np.random.Generator, n: int) -> tuple[IntArray, IntArray]:
    """Token counts shaped like the conversation trace (input median 1,020, output 129)."""
    inputs = np.maximum(1, rng.lognormal(math.log(1020), 0.6, n)).astype(np.int64)
    outputs = np.maximum(1, rng.lognormal(math.log(129), 0.9, n)).astype(np.int64)
    return inputs, outputs


def surge(span_s: float, steady_rate: float, seed: int = 0) -> Trace:
    """A low steady Poisson rate `steady_rate` with one or two one-off surges per hour of
    100-500 requests each, within 2-10 s, at uniform times in the middle 80 % of the span
    (a surge at the first request would be a wake, not a surge).

    What a hold sized on the hour's largest burst gets wrong: the surge never comes back.
    Worked example (seed 0, an hour, 1 req/s): about 3,600 steady requests and one or two
    surges of a few hundred; the steady traffic needs one or two replicas, a surge 20-60."""
    if steady_rate < 0:
        raise ValueError(f"steady rate = {steady_rate}, must be >= 0 requests per second")
    rng = np.random.default_rng(seed)
    hours = max(1, round(span_s / 3600.0))
    steady = np.sort(rng.uniform(0.0, span_s, int(rng.poisson(steady_rate * span_s))))
    parts = [steady]
    for _ in range(hours):
        for _ in range(int(rng.integers(SURGES[0], SURGES[1] + 1))):
            start = float(rng.uniform(0.1, 0.9)) * span_s
            length = float(rng.uniform(*SURGE_S))
            size = int(rng.integers(SURGE_REQUESTS[0], SURGE_REQUESTS[1] + 1))
            parts.append(np.sort(rng.uniform(start, start + length, size)))
    times = np.concatenate(parts)
    inputs, outputs = _tokens(rng, times.size)
    trace = make_trace(f"surge {steady_rate:g} req/s", times, inputs, outputs)
    # make_trace shifts to the first arrival; keep the clock of the steady traffic instead.
    return replace(trace, arrival_s=trace.arrival_s + float(times.min()))
