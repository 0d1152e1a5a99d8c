"""The token-time curve: how long one output token takes on a replica as a function of how
many sequences it decodes together, learned from the pods (`TokenCurve`), and the concurrency
one replica should carry under a token-latency objective (`replica_concurrency`).

Why a curve: decode is memory-bound. Each step reads the weights once for the whole batch
and each sequence's KV cache, so the step time is about a + b x sequences at a given context
(measured on an H200, docs/simulator.md): more sequences per replica cost little per token
until the KV reads dominate. The concurrency target trades on that slope, and it moves with
context length and engine version, so it is measured live rather than asked for.

What a pod measures (`Decoded`): since its previous write, `steps` decode steps taking
`seconds`, with `sequences` decoded together on average. The write script adds it to the
target's `:tokens` hash (`scaler.reports`), so every pod and scaler replica shares one curve.

Bins: sequences are binned on a log scale, BINS_PER_DOUBLING a doubling (bin k holds
sequences near 2^(k / BINS_PER_DOUBLING)); each bin keeps the decayed step count `w` and the
decayed sums of sequences x steps and milliseconds (per step) x steps, so its point is the
step-weighted mean, and the decayed sums of their squares and product (x steps), so it also
knows the spread of the token time at its mean sequences: the objective is a promise per
token, and half the tokens of a batch at the mean time are slower than it (longer contexts).
At most MAX_BIN + 1 bins: the hash stays bounded.

Forgetting: at every write that decoded something, every bin is worth
    f = exp(-min(t - t_last, MAX_GAP_S) / TOKEN_MEMORY_S)
of what it was, with t the Redis time of the write and t_last that of the previous one: the
curve forgets with a time constant of TOKEN_MEMORY_S seconds of traffic, and a quiet night (no
writes with steps) forgets nothing, so the morning's first wake plans with what yesterday
measured. A bin is known once its weight reaches KNOWN_STEPS; a bin nobody visits fades below
it within about 6 minutes of other traffic (TOKEN_MEMORY_S says why).

Storage: a write touches one bin, not every bin (each pod writes about once a second). The
bins are kept unscaled, with the curve's running decay exponent `age` = the sum of
min(gap, MAX_GAP_S) / TOKEN_MEMORY_S over the writes: a write adds to `age` and adds its
sample to its bin multiplied by exp(age); a bin's true weight and sums are the stored ones x
exp(-age). Once `age` passes MAX_AGE, the write first renormalises: every bin x exp(-age),
bins whose weight falls below CURVE_FLOOR_STEPS deleted, `age` = 0. That is the one write
that reads and rewrites every bin, once per MAX_AGE time constants of traffic; the bound
keeps the stored numbers within exp(MAX_AGE) of the true ones, far inside a double's range
and precision. A hash without `age` (stored before it was kept) reads as age 0: its bins
are the true values, as they were.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

from scaler.reports import ReportError

# A bin no longer visited stays known until its weight, r x TOKEN_MEMORY_S while it was visited
# at r steps a second, has decayed below KNOWN_STEPS: TOKEN_MEMORY_S x ln(r x TOKEN_MEMORY_S /
# KNOWN_STEPS) seconds of traffic. At 60 s that is under 6 minutes up to 1,000 steps a second
# (ten busy pods), so a new context length or engine shows within 10 minutes (120 s would
# take 13).
TOKEN_MEMORY_S = 60.0
MAX_GAP_S = 10.0  # a pause between writes longer than this forgets no more than this
KNOWN_STEPS = 200.0  # two seconds of decoding at 10 ms a step: a mean within a few percent
BINS_PER_DOUBLING = 4  # bins 19 % apart: finer than the curve bends
MAX_BIN = 48  # 2^12 = 4,096 sequences; more are counted in the last bin
MAX_EXTRAPOLATION = 2.0  # never plan more than twice the sequences a bin has measured
CURVE_TTL_S = 7 * 24 * 3600  # a week without a decoded token forgets the curve
# Renormalise once the decay exponent passes this: stored numbers grow by at most e^20 ~ 5e8
# over the true ones (15 of a double's 16 digits left), and it happens once per 20 time
# constants of traffic (20 minutes at 60 s).
MAX_AGE = 20.0
# A bin decayed below this many steps is deleted when the curve is renormalised: it weighs
# nothing against the KNOWN_STEPS a point needs, and the hash keeps only the bins traffic
# still visits.
CURVE_FLOOR_STEPS = 1e-6


@dataclass(frozen=True)
class Decoded:
    """What a pod decoded since its previous write: `steps` decode steps (one output token
    for each sequence decoded) that took `seconds` in all, with `sequences` decoded together
    on average."""

    sequences: float
    steps: float
    seconds: float

    def __post_init__(self) -> None:
        for name in ("sequences", "steps", "seconds"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ReportError(f"decoded {name} = {value!r}, must be a finite number >= 0")

    @property
    def token_ms(self) -> float:
        """Milliseconds per output token (per step); 0 when no step was decoded."""
        return 1000.0 * self.seconds / self.steps if self.steps > 0 else 0.0

    @property
    def counts(self) -> bool:
        """Whether it measures anything: a step, with at least one sequence, taking time."""
        return self.steps > 0 and self.seconds > 0 and self.sequences >= 0.5


def bin_index(sequences: float) -> int:
    """The bin of a mean number of sequences decoded together (>= 0.5).

    Spelled as the write script spells it (`scaler.report_writer`): natural logs and halves
    rounded up, so Python and Lua (the same libm) put every value in the same bin."""
    k = math.floor(BINS_PER_DOUBLING * math.log(max(sequences, 1.0)) / math.log(2.0) + 0.5)
    return min(max(k, 0), MAX_BIN)


@dataclass(frozen=True)
class Bin:
    weight: float  # decayed decode steps
    sequences_sum: float  # decayed sum of sequences x steps
    ms_sum: float  # decayed sum of milliseconds per step x steps
    ms_squares: float = 0.0  # decayed sum of (milliseconds per step)^2 x steps
    sequences_squares: float = 0.0  # decayed sum of sequences^2 x steps
    cross_sum: float = 0.0  # decayed sum of sequences x milliseconds per step x steps

    def scaled(self, f: float) -> Bin:
        return Bin(
            self.weight * f,
            self.sequences_sum * f,
            self.ms_sum * f,
            self.ms_squares * f,
            self.sequences_squares * f,
            self.cross_sum * f,
        )

    @staticmethod
    def without_spread(weight: float, sequences_sum: float, ms_sum: float) -> Bin:
        """A bin stored before its squares were kept: every sample at the bin's means (spread
        unknown, read as 0), which later writes add their own spread to. The write script
        fills a missing square the same way."""
        squares = (ms_sum * ms_sum / weight, sequences_sum * sequences_sum / weight)
        cross = sequences_sum * ms_sum / weight
        return Bin(weight, sequences_sum, ms_sum, *squares, cross) if weight > 0 else Bin(0, 0, 0)

    def spread_ms(self) -> float:
        """The standard deviation of the token time at the bin's mean sequences: the spread
        of its samples less the share the curve's slope across the bin's width explains (a
        bin is 19 % wide; near 70 sequences on the H200 profile the slope alone spreads its
        times by about 0.1 ms, a fifth to a half of their variance, which is no tail at any
        one concurrency). 0 for a bin without squares."""
        w = self.weight
        mean_b, mean_t = self.sequences_sum / w, self.ms_sum / w
        var_t = self.ms_squares / w - mean_t * mean_t
        var_b = self.sequences_squares / w - mean_b * mean_b
        cov = self.cross_sum / w - mean_b * mean_t
        if var_b > SAME_SEQUENCES * mean_b * mean_b:
            var_t -= cov * cov / var_b
        return math.sqrt(max(var_t, 0.0))


# Below this relative variance of the sequences the bin is one concurrency (rounding aside):
# no slope to take out.
SAME_SEQUENCES = 1e-9
# The objective is kept by this share of the tokens decoded at C: the rule plans with the
# token time this share stays within, the bin's mean plus TAIL_Z of its standard deviations
# (the normal quantile; the token time at one concurrency spreads with the contexts decoded).
TAIL_SHARE = 0.99
TAIL_Z = NormalDist().inv_cdf(TAIL_SHARE)


@dataclass(frozen=True)
class CurvePoint:
    sequences: float  # step-weighted mean sequences of the bin
    token_ms: float  # step-weighted mean milliseconds per output token
    weight: float  # decayed steps behind it
    tail_ms: float  # the time TAIL_SHARE of its tokens stay within: what the rule plans with


@dataclass(frozen=True)
class TokenCurve:
    """The learned curve: bins by index as stored (unscaled: the true values are these x
    exp(-age)), the time of the last write that decoded, and the decay exponent `age`."""

    bins: dict[int, Bin] = field(default_factory=dict)
    updated_at: float | None = None
    age: float = 0.0

    def add(self, decoded: Decoded, at: float) -> TokenCurve:
        """The write script's rule in Python (the simulator keeps one curve per run; tests
        hold the two to the same cases), operation for operation."""
        if not decoded.counts:
            return self
        gap = 0.0 if self.updated_at is None else min(max(at - self.updated_at, 0.0), MAX_GAP_S)
        age = self.age + gap / TOKEN_MEMORY_S
        bins = dict(self.bins)
        if age > MAX_AGE:
            bins, age = _renormalised(bins, age), 0.0
        scale = math.exp(age)
        k = bin_index(decoded.sequences)
        old = bins.get(k, Bin(0.0, 0.0, 0.0))
        steps, b, t = decoded.steps, decoded.sequences, decoded.token_ms
        bins[k] = Bin(
            old.weight + steps * scale,
            old.sequences_sum + b * steps * scale,
            old.ms_sum + t * steps * scale,
            old.ms_squares + t * t * steps * scale,
            old.sequences_squares + b * b * steps * scale,
            old.cross_sum + b * t * steps * scale,
        )
        return TokenCurve(bins, at, age)

    def decayed(self) -> dict[int, Bin]:
        """The bins' true values now: decayed steps and sums."""
        f = math.exp(-self.age)
        return {k: b.scaled(f) for k, b in self.bins.items()}

    def points(self) -> list[CurvePoint]:
        """The known bins (weight >= KNOWN_STEPS), by sequences."""
        return [
            CurvePoint(
                b.sequences_sum / b.weight,
                b.ms_sum / b.weight,
                b.weight,
                b.ms_sum / b.weight + TAIL_Z * b.spread_ms(),
            )
            for _, b in sorted(self.decayed().items())
            if b.weight >= KNOWN_STEPS
        ]

    def to_fields(self) -> dict[str, str]:
        """The `:tokens` hash: `at`, `age`, and per bin (stored) `<k>:w` (steps), `<k>:b`
        (sequences), `<k>:t` (ms), `<k>:q` (ms^2), `<k>:s` (sequences^2), `<k>:x` (sequences
        x ms), each sum x steps."""
        fields = {} if self.updated_at is None else {"at": repr(self.updated_at)}
        if self.updated_at is not None or self.bins:
            fields["age"] = repr(self.age)
        for k, b in self.bins.items():
            fields |= {f"{k}:w": repr(b.weight), f"{k}:b": repr(b.sequences_sum)}
            fields |= {f"{k}:t": repr(b.ms_sum), f"{k}:q": repr(b.ms_squares)}
            fields |= {f"{k}:s": repr(b.sequences_squares), f"{k}:x": repr(b.cross_sum)}
        return fields

    @staticmethod
    def from_fields(fields: dict[str, str]) -> TokenCurve:
        """The curve a `:tokens` hash holds; a field that is not a number is an error naming it.
        No `age` (a hash stored before it was kept): 0, the bins being the true values. A bin
        without its squares (`q`, `s`, `x`; stored before they were kept): its spread is
        unknown and read as 0 (`Bin.without_spread`); the three come and go together."""

        def number(name: str) -> float:
            try:
                value = float(fields[name])
            except ValueError:
                raise ReportError(
                    f"token curve field {name} = {fields[name]!r}, must be a number"
                ) from None
            if not math.isfinite(value) or value < 0:
                raise ReportError(f"token curve field {name} = {value!r}, must be >= 0")
            return value

        bins = {}
        for name in fields:
            k, _, part = name.partition(":")
            if part == "w" and k.isdigit() and f"{k}:b" in fields and f"{k}:t" in fields:
                w, b, t = number(name), number(f"{k}:b"), number(f"{k}:t")
                squares = [f"{k}:{p}" for p in "qsx"]
                if all(s in fields for s in squares):
                    bins[int(k)] = Bin(w, b, t, *(number(s) for s in squares))
                else:
                    bins[int(k)] = Bin.without_spread(w, b, t)
        return TokenCurve(
            bins,
            number("at") if "at" in fields else None,
            number("age") if "age" in fields else 0.0,
        )


def _renormalised(bins: dict[int, Bin], age: float) -> dict[int, Bin]:
    """Every bin at its true value (x exp(-age)), those below CURVE_FLOOR_STEPS left out."""
    f = math.exp(-age)
    return {k: b.scaled(f) for k, b in bins.items() if b.weight * f >= CURVE_FLOOR_STEPS}


NOTHING_MEASURED = TokenCurve()


@dataclass(frozen=True)
class Sized:
    """The concurrency one replica should carry, and why."""

    concurrency: float
    learned: bool  # False: nothing measured yet, targetConcurrency as written
    detail: str


def replica_concurrency(
    curve: TokenCurve,
    objective_ms: float,
    start: float,
    cap: float = 0.0,
    in_force: float = 0.0,
) -> Sized:
    """The largest concurrency per replica whose measured token time stays within
    `objective_ms` for TAIL_SHARE of its tokens: each point's `tail_ms` (its mean plus TAIL_Z
    standard deviations at its concurrency), not its mean. A burst fills every pod to C, so
    C's own tail is what the tokens see: at the mean, half of them would be over.

    Between measured points the curve is linear; where a point's time is lower than that
    of a point with fewer sequences (more sequences never decode faster), the one with fewer
    decayed steps behind it is left out first (noise, or measured before a change and not
    visited since). Past the last point it is extended by the steeper of the slope of a
    weighted least-squares line through the points and that of its last segment (the step
    time is convex in the sequences, so the line through them all is shallower than the curve
    at its top, and the workers admitting at most C keep the curve from being measured past
    C: the extension is where C lands), at most MAX_EXTRAPOLATION times the sequences
    measured but never below `start` (targetConcurrency): until something is measured past
    it, the written target is the starting point and the bound. Past `in_force` only from a
    last point measured at it (in its bin or the next below): from further down the line is
    extrapolated over bins that faded, and a convex curve is slower than its secant's line,
    so the line is evidence for a fall, never for a rise. Nor below `in_force`, the C
    the latest decision set (0: none): a bin that faded because the pods ran below it is no
    evidence that tokens got slower, and bounding by what is measured alone would spiral
    (anything that keeps pods under half of C, the SLO-aware hold or a quiet hour, halves the
    bound, which adds replicas, which run still fuller below it); C falls on evidence, a
    point over the objective or a steeper slope. Below the first point the line's slope
    extends it downwards. Never above `cap` (the slots a pod has; 0: unknown), never below
    1."""
    points = _consistent(curve.points())
    if not points:
        return Sized(start, False, f"targetConcurrency {start:g}: no token time measured yet")
    times = [p.tail_ms for p in points]
    sequences = [p.sequences for p in points]
    slope = _slope(points)
    within = [i for i, t in enumerate(times) if t <= objective_ms]
    if not within:
        b0, t0 = sequences[0], times[0]
        found = b0 - (t0 - objective_ms) / slope if slope > 0 else b0 / MAX_EXTRAPOLATION
        why = f"{t0:.3g} ms measured at {b0:.3g} sequences, over the objective"
    elif within[-1] + 1 < len(points):
        i = within[-1]
        (b0, t0), (b1, t1) = (sequences[i], times[i]), (sequences[i + 1], times[i + 1])
        found = b0 + (b1 - b0) * (objective_ms - t0) / (t1 - t0)
        why = f"between {t0:.3g} ms at {b0:.3g} and {t1:.3g} ms at {b1:.3g} sequences"
    else:
        b0, t0 = sequences[-1], times[-1]
        if len(points) > 1:
            slope = max(slope, (t0 - times[-2]) / (b0 - sequences[-2]))
        # Probe past the C in force only from a point measured at it (in its bin or the next
        # below: pods at C decode a little under it on average, and a bin is 19 % wide). A
        # last point further down means the pods ran below C and the bins at it faded: the
        # line from there is extrapolation over what was measured before (the step time is
        # convex, so it reaches too far), and a probe past C would not be measured anyway.
        at_c = b0 * 2 ** (1 / BINS_PER_DOUBLING) >= in_force
        reach = max(start, in_force, MAX_EXTRAPOLATION * b0 if at_c else 0.0)
        found = reach if slope <= 0 else min(reach, b0 + (objective_ms - t0) / slope)
        why = f"{t0:.3g} ms at {b0:.3g} sequences, the most measured, extended"
    concurrency = max(1.0, min(found, cap) if cap > 0 else found)
    return Sized(
        concurrency,
        True,
        f"{concurrency:.3g} sequences a replica within {objective_ms:g} ms a token ({why})",
    )


def _consistent(points: list[CurvePoint]) -> list[CurvePoint]:
    """The points with the mean time non-decreasing in sequences (more sequences never decode
    faster on average): where two neighbours disagree, the one with fewer decayed steps
    behind it gives way. A lower mean further up is noise, or a bin measured before the
    context or the engine changed and not visited since; either way the heavier point is the
    better evidence of now. The mean, not the tail: the tail may fall as sequences rise, a
    step averaging over more contexts (one sequence decodes at its own context's time), so a
    heavy point at one sequence with a wide spread is no evidence against the points above."""
    kept: list[CurvePoint] = []
    for p in points:
        while kept and p.token_ms < kept[-1].token_ms:
            if p.weight <= kept[-1].weight:
                break
            kept.pop()
        else:
            kept.append(p)
    return kept


def _slope(points: list[CurvePoint]) -> float:
    """Milliseconds per added sequence: the weighted least-squares slope (0 with one point)."""
    total = sum(p.weight for p in points)
    mean_b = sum(p.weight * p.sequences for p in points) / total
    mean_t = sum(p.weight * p.tail_ms for p in points) / total
    var = sum(p.weight * (p.sequences - mean_b) ** 2 for p in points)
    if var <= 0:
        return 0.0
    cov = sum(p.weight * (p.sequences - mean_b) * (p.tail_ms - mean_t) for p in points)
    return cov / var
