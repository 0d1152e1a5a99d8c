"""The token-time curve learned from the pods (scaler.token_curve): its bins, how it forgets,
and the per-replica concurrency it gives under a token-latency objective."""

from __future__ import annotations

import math
import re
from statistics import NormalDist

import pytest

from scaler.reports import ReportError
from scaler.token_curve import (
    BINS_PER_DOUBLING,
    CURVE_FLOOR_STEPS,
    KNOWN_STEPS,
    MAX_AGE,
    MAX_BIN,
    MAX_GAP_S,
    NOTHING_MEASURED,
    TAIL_SHARE,
    TAIL_Z,
    TOKEN_MEMORY_S,
    Bin,
    Decoded,
    TokenCurve,
    bin_index,
    replica_concurrency,
)

T0 = 1_700_000_000.0


def measured(*points: tuple[float, float], steps: float = 1000.0) -> TokenCurve:
    """A curve that measured `steps` decode steps at each (sequences, ms a token), at once."""
    curve = NOTHING_MEASURED
    for sequences, token_ms in points:
        curve = curve.add(Decoded(sequences, steps, token_ms * steps / 1000), T0)
    return curve


def test_sequences_are_binned_on_a_log_scale() -> None:
    assert [bin_index(s) for s in (0.5, 1, 2, 8, 1024)] == [0, 0, 4, 12, 40]
    assert bin_index(2 ** (12.5 / BINS_PER_DOUBLING)) == 13  # a half rounds up, not to even
    assert bin_index(2 ** (12.49 / BINS_PER_DOUBLING)) == 12
    assert bin_index(1e9) == MAX_BIN


def test_a_bin_holds_the_step_weighted_mean_of_what_it_measured() -> None:
    curve = NOTHING_MEASURED.add(Decoded(7.8, 300, 1.8), T0).add(Decoded(8.4, 100, 0.8), T0)
    (point,) = curve.points()
    assert point.sequences == pytest.approx((7.8 * 300 + 8.4 * 100) / 400)
    assert point.token_ms == pytest.approx((1800 + 800) / 400)
    assert point.weight == 400
    assert curve.bins.keys() == {bin_index(8)}


def test_a_write_that_measures_nothing_changes_nothing() -> None:
    curve = measured((8, 6.3))
    for nothing in (Decoded(8, 0, 0.0), Decoded(8, 10, 0.0), Decoded(0.4, 10, 0.1)):
        assert curve.add(nothing, T0 + 5) is curve


def test_the_curve_forgets_by_the_gap_between_writes() -> None:
    curve = measured((8, 6.3)).add(Decoded(64, 1000, 8.5), T0 + 6)
    decayed = curve.decayed()
    assert decayed[bin_index(8)].weight == pytest.approx(1000 * math.exp(-6 / TOKEN_MEMORY_S))
    assert decayed[bin_index(64)].weight == pytest.approx(1000)
    assert curve.updated_at == T0 + 6


def test_a_quiet_night_forgets_no_more_than_one_capped_gap() -> None:
    """Idle, nothing is written and nothing decays: the morning's first write forgets what
    MAX_GAP_S of traffic would, and yesterday's curve still sizes the wake."""
    night = measured((8, 6.3), (64, 8.5))
    morning = night.add(Decoded(32, 10, 0.073), T0 + 8 * 3600)
    kept = math.exp(-MAX_GAP_S / TOKEN_MEMORY_S)
    assert morning.decayed()[bin_index(64)].weight == pytest.approx(1000 * kept)
    assert [round(p.sequences) for p in morning.points()] == [8, 64]
    assert night.points() == measured((8, 6.3), (64, 8.5)).points()


def test_a_bin_is_known_from_known_steps() -> None:
    assert measured((8, 6.3), steps=KNOWN_STEPS * 0.999).points() == []
    assert len(measured((8, 6.3), steps=KNOWN_STEPS).points()) == 1


def test_the_hash_fields_round_trip_and_a_bad_one_is_named() -> None:
    curve = measured((8, 6.3), (64, 8.5))
    assert TokenCurve.from_fields(curve.to_fields()) == curve
    fields = curve.to_fields() | {"12:t": "fast"}
    with pytest.raises(ReportError, match=re.escape("token curve field 12:t = 'fast'")):
        TokenCurve.from_fields(fields)


def test_a_write_touches_its_own_bin_only() -> None:
    """Bins are stored unscaled: a write adds to the decay exponent and its sample x exp(age)
    to its own bin; the others stay as stored and their true values fall by exp(-age)."""
    before = measured((8, 6.3), (64, 8.5))
    after = before.add(Decoded(32, 1000, 7.3), T0 + 6)
    assert after.age == 6 / TOKEN_MEMORY_S
    assert after.bins[bin_index(8)] == before.bins[bin_index(8)]
    assert after.bins[bin_index(32)].weight == 1000 * math.exp(6 / TOKEN_MEMORY_S)
    (_, point, _) = after.points()
    assert (point.sequences, point.token_ms) == pytest.approx((32, 7.3))
    assert point.weight == pytest.approx(1000)


def test_past_max_age_the_curve_is_renormalised_and_faded_bins_go() -> None:
    """Every MAX_AGE time constants of traffic one write scales every bin to its true value
    and resets the exponent: the points are the same, the bins below the floor are gone."""
    curve = NOTHING_MEASURED.add(Decoded(300, 1e-3, 1e-5), T0).add(Decoded(64, 1e6, 8500), T0)
    at = T0
    while curve.age <= MAX_AGE - MAX_GAP_S / TOKEN_MEMORY_S:
        at += MAX_GAP_S
        curve = curve.add(Decoded(8, 1000, 6.3), at)
    assert bin_index(300) in curve.bins
    renormalised = curve.add(Decoded(8, 1000, 6.3), at + MAX_GAP_S)
    assert renormalised.age == 0
    assert bin_index(300) not in renormalised.bins  # 1e-3 x e^-20 steps: below the floor
    assert CURVE_FLOOR_STEPS < renormalised.bins[bin_index(64)].weight < 1e-2
    f = math.exp(-MAX_GAP_S / TOKEN_MEMORY_S)
    (before,), (after,) = curve.points(), renormalised.points()  # 8 sequences; 64 faded
    assert (after.sequences, after.token_ms) == pytest.approx((8, 6.3), rel=1e-12)
    assert after.weight == pytest.approx(before.weight * f + 1000, rel=1e-12)


def test_a_hash_stored_without_age_reads_as_the_true_values() -> None:
    """A curve kept before the decay exponent was stored: its bins are the true values."""
    fields = {"at": repr(T0), "12:w": "1000.0", "12:b": "8000.0", "12:t": "6300.0"}
    curve = TokenCurve.from_fields(fields)
    assert curve.age == 0
    (point,) = curve.points()
    assert (point.sequences, point.token_ms, point.weight) == (8, 6.3, 1000)
    assert TokenCurve.from_fields(curve.to_fields()) == curve
    with pytest.raises(ReportError, match=re.escape("token curve field age = 'old'")):
        TokenCurve.from_fields(fields | {"age": "old"})


def test_a_bin_keeps_the_spread_of_its_token_times() -> None:
    """Half its steps at 9 ms, half at 10: the mean 9.5 ms and the standard deviation 0.5 ms;
    the rule plans with the mean plus TAIL_Z of them, the time TAIL_SHARE of its tokens keep."""
    curve = NOTHING_MEASURED.add(Decoded(64, 500, 4.5), T0).add(Decoded(64, 500, 5.0), T0)
    (point,) = curve.points()
    assert point.token_ms == pytest.approx(9.5)
    assert curve.decayed()[bin_index(64)].spread_ms() == pytest.approx(0.5)
    assert point.tail_ms == pytest.approx(9.5 + TAIL_Z * 0.5)


def test_the_tail_factor_is_the_normal_quantile_of_the_share() -> None:
    assert TAIL_SHARE == 0.99
    assert TAIL_Z == NormalDist().inv_cdf(0.99) == pytest.approx(2.326, abs=1e-3)


def test_the_slope_across_a_bin_is_no_spread() -> None:
    """A bin is 19 % wide: times that rise with the sequences along one line (the curve's
    slope) are one time at each concurrency, so the bin's tail is its mean; a spread at one
    concurrency stays."""
    line = NOTHING_MEASURED
    for sequences in (60, 64, 68):
        line = line.add(Decoded(sequences, 400, 0.4 * (8.5 + 0.05 * (sequences - 64))), T0)
    (point,) = line.points()
    assert point.sequences == pytest.approx(64)
    assert point.tail_ms == pytest.approx(point.token_ms, abs=1e-6)
    # Two more writes at 64 sequences, 0.5 ms either side of the line: 2 of the 5 writes'
    # steps off it by 0.5 ms, a variance of 0.1 about it.
    spread = line.add(Decoded(64, 400, 0.4 * 8.0), T0).add(Decoded(64, 400, 0.4 * 9.0), T0)
    assert spread.decayed()[bin_index(64)].spread_ms() == pytest.approx(math.sqrt(0.1), rel=1e-6)


def test_a_bin_with_spread_plans_fewer_sequences() -> None:
    """The same mean times; the bins at 64 and 128 sequences spread by 0.5 ms: 10 ms is reached
    where the mean plus TAIL_Z standard deviations reaches it, not the mean."""
    steady = measured(*H200_1K)
    spread = NOTHING_MEASURED
    for sequences, token_ms in H200_1K:
        jitter = 0.5 if sequences in (64, 128) else 0.0
        for t in (token_ms - jitter, token_ms + jitter):
            spread = spread.add(Decoded(sequences, 500, t * 0.5), T0)
    mean = replica_concurrency(steady, 10, start=8).concurrency
    tail = replica_concurrency(spread, 10, start=8).concurrency
    t64, t128 = 8.5 + TAIL_Z * 0.5, 12.0 + TAIL_Z * 0.5
    assert tail == pytest.approx(64 + 64 * (10 - t64) / (t128 - t64))
    assert tail < mean == pytest.approx(64 + 64 * (10 - 8.5) / (12.0 - 8.5))


def test_a_bin_stored_without_its_squares_has_no_spread_until_written() -> None:
    """A hash kept before the squares were: each bin reads as every sample at its means
    (spread unknown: 0, the tail its mean), and later writes add their own spread to it."""
    fields = {"at": repr(T0), "age": "0.0", "16:w": "1000.0", "16:b": "16000.0", "16:t": "9000.0"}
    old = TokenCurve.from_fields(fields)
    (point,) = old.points()
    assert (point.token_ms, point.tail_ms) == (9.0, 9.0)
    assert old.bins[16] == Bin.without_spread(1000.0, 16000.0, 9000.0)
    assert TokenCurve.from_fields(old.to_fields()) == old
    assert TokenCurve.from_fields(fields | {"16:q": "81000.0"}) == old  # all three, or none
    later = old.add(Decoded(16, 1000, 10.0), T0)  # 1,000 steps at 10 ms beside 1,000 at 9
    assert later.decayed()[16].spread_ms() == pytest.approx(0.5)


def test_a_bad_decoded_figure_is_refused_naming_it() -> None:
    with pytest.raises(ReportError, match=re.escape("decoded steps = -1, must be")):
        Decoded(8, -1, 0.1)


H200_1K = [(8, 6.3), (32, 7.3), (64, 8.5), (128, 12.0), (256, 18.0)]  # ms a token, context 1,024


def test_nothing_measured_plans_with_target_concurrency() -> None:
    sized = replica_concurrency(NOTHING_MEASURED, 10, start=8)
    assert (sized.concurrency, sized.learned) == (8, False)
    assert "no token time measured yet" in sized.detail


def test_between_two_points_the_curve_is_linear() -> None:
    sized = replica_concurrency(measured(*H200_1K), 10, start=8)
    assert sized.concurrency == pytest.approx(64 + 64 * (10 - 8.5) / (12.0 - 8.5))
    assert sized.learned
    assert "between 8.5 ms at 64 and 12 ms at 128 sequences" in sized.detail


def test_a_faster_point_further_up_is_noise() -> None:
    """16 sequences at 9 ms, 32 at 8 ms: 32 cannot be faster than 16, so 8.5 ms is reached
    between 8 and 16 sequences, not past 32."""
    curve = measured((8, 6.0), (16, 9.0), (32, 8.0), (64, 12.0))
    sized = replica_concurrency(curve, 8.5, start=8)
    assert sized.concurrency == pytest.approx(8 + 8 * (8.5 - 6.0) / (9.0 - 6.0))


def test_past_the_last_point_at_most_twice_what_was_measured() -> None:
    sized = replica_concurrency(measured((8, 6.3), (16, 6.5)), 100, start=8)
    assert sized.concurrency == 32
    # Along the slope when the objective is reached sooner: 16 + (6.6 - 6.5) / (0.2 / 8).
    sooner = replica_concurrency(measured((8, 6.3), (16, 6.5)), 6.6, start=8)
    assert sooner.concurrency == pytest.approx(20)


def test_past_the_last_point_never_below_target_concurrency() -> None:
    sized = replica_concurrency(measured((1, 5.8), (2, 5.9)), 100, start=8)
    assert sized.concurrency == 8


def test_past_the_c_in_force_only_from_a_point_measured_at_it() -> None:
    """The extension reaches 61 + 1.45 / (0.35 / 7) = 90 sequences. From a last point in the
    bin of the C in force or the one below, that is a probe, and C goes there; from a point
    further below (pods ran under C, the bins at it faded) it is no evidence of room past C,
    which holds. A fall it does show: the step time is convex, so the curve past the last
    point is slower than the line, and C lower than the line's is lower still."""
    curve = measured((32, 7.5), (54, 8.2), (61, 8.55))
    line = 61 + (10 - 8.55) / ((8.55 - 8.2) / 7)
    assert pytest.approx(72.54, abs=0.01) == 61 * 2 ** (1 / BINS_PER_DOUBLING)
    probe = replica_concurrency(curve, 10, start=8, in_force=72)
    assert probe.concurrency == pytest.approx(line)
    assert replica_concurrency(curve, 10, start=8, in_force=75).concurrency == 75
    assert replica_concurrency(curve, 10, start=8, in_force=100).concurrency == pytest.approx(line)


def test_never_above_the_slots_a_pod_has() -> None:
    assert replica_concurrency(measured(*H200_1K), 10, start=8, cap=20).concurrency == 20
    assert replica_concurrency(measured(*H200_1K), 10, start=8, cap=0).concurrency > 64


def test_below_the_first_point_the_slope_extends_down_and_never_below_one() -> None:
    curve = measured((32, 12.0), (64, 14.0))  # 1 ms per 16 sequences
    sized = replica_concurrency(curve, 11, start=8)
    assert sized.concurrency == pytest.approx(32 - 16)
    assert "12 ms measured at 32 sequences, over the objective" in sized.detail
    assert replica_concurrency(curve, 5, start=8).concurrency == 1


def test_a_point_over_the_objective_with_no_slope_halves_the_sequences() -> None:
    assert replica_concurrency(measured((32, 12.0)), 10, start=8).concurrency == 16


def test_a_bin_without_weight_is_not_a_point() -> None:
    curve = TokenCurve({12: Bin(0.0, 0.0, 0.0)}, T0)
    assert curve.points() == []
    assert replica_concurrency(curve, 10, start=8).learned is False
