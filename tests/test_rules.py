"""The rules the decision combines, each a pure function of numbers, on tables of cases."""

from __future__ import annotations

import pytest

from scaler import window
from scaler.rules import activation, forecast, slo, tolerance

# s 5 s, C 60 s: a backlog of B takes B x 5 / 60 slots to clear within a cold start.
S, C = 5.0, 60.0


@pytest.mark.parametrize(
    ("mean_inflight", "now", "then", "offered"),
    [
        (30, 30, 30, 30),  # steady: in flight as many as ever, nothing grows
        (0.7, 40, 0, 0.7 + 40 * S / C),  # a burst of 40 spreads over the cold start after it
        (0, 82, 0, 82 * S / C),  # a queue building with nothing served: its arrival rate x s
        (20, 10, 30, 20 - 20 * S / C),  # draining: fewer arrived than were served
        (0, 0, 50, 0),  # never below zero
    ],
    ids=["steady", "burst", "building-queue", "draining", "floor-zero"],
)
def test_offered_load(mean_inflight: float, now: float, then: float, offered: float) -> None:
    assert forecast.offered_load(mean_inflight, now, then, S, C) == pytest.approx(offered)


@pytest.mark.parametrize(
    ("offered", "backlog", "ready_slots", "needed"),
    [
        (30, 0, 48, 30),  # steady with headroom: the offered load, nothing more
        (3.3, 32, 8, 3.3),  # one ready replica drains 32 in 20 s < C: nothing ordered
        (3.3, 32, 0, 3.3 + 32 * S / C + 3.3),  # nothing ready: the backlog orders capacity
        (48, 10, 48, 48 + 10 * S / C + 48 - 48),  # saturated and rising: at once
        (10, 600, 16, 10 + (600 * S / C + 10 - 16)),  # a backlog two replicas cannot clear
    ],
    ids=["steady", "burst-drained-in-time", "wake-from-zero", "sustained-rise", "overload"],
)
def test_needed_slots(offered: float, backlog: float, ready_slots: float, needed: float) -> None:
    assert forecast.needed_slots(offered, backlog, ready_slots, S, C) == pytest.approx(needed)


@pytest.mark.parametrize(
    ("clear_s", "needed"),
    [
        (None, 3.3 + 32 * S / C + 3.3),  # the usual T: one cold start
        (15.0, 3.3 + (32 * S + 3.3 * C) / 15),  # traffic 15 s old: cleared within 15 s
    ],
    ids=["within-a-cold-start", "within-its-age"],
)
def test_a_waking_queue_is_cleared_within_its_age(clear_s: float | None, needed: float) -> None:
    assert forecast.needed_slots(3.3, 32, 0, S, C, clear_s) == pytest.approx(needed)


def test_a_cold_start_shorter_than_a_service_time_is_planned_as_one() -> None:
    assert forecast.planning_horizon_s(0.0, S) == S
    assert forecast.planning_horizon_s(C, S) == C
    # C = 0: capacity ready at once sizes for everything in the system, ready slots or not.
    assert forecast.needed_slots(12, 14, 16, S, 0.0) == 26
    # C shorter than s: the ready slots serve only for C of the T = s.
    assert forecast.needed_slots(0, 10, 8, S, 2.5) == pytest.approx(10 - 8 * 2.5 / S)


@pytest.mark.parametrize(
    ("in_system", "before", "arrived", "burst"),
    [
        (108, 0, 108, 108),  # everything in the system came at once: a burst of its size
        (108, None, 0, 108),  # first sight: all of it may have come at once
        (308, 245, 63, 63),  # a queue that built up over a cold start: only the recent part
        (35, 35, 105, 35),  # steady: more arrived (and left) than are there: what is there
        (120, 300, 150, 0),  # draining a backlog: fewer than before, so no burst is counted
        (5, 5, -3, 0),  # nothing completed, nothing arrived
    ],
    ids=["burst", "first-sight", "cold-start-queue", "steady", "draining", "nothing"],
)
def test_burst_size(in_system: float, before: float | None, arrived: float, burst: float) -> None:
    assert slo.burst_size(in_system, before, arrived) == burst


@pytest.mark.parametrize(
    ("given", "delay", "horizon"),
    [(3600, 120, 3600), (10, 120, 120)],
    ids=["given", "never-below-the-delay"],
)
def test_slo_horizon(given: float, delay: float, horizon: float) -> None:
    assert slo.horizon_s(given, delay) == horizon


def test_the_mode_stays_awake_fifteen_cold_starts() -> None:
    assert slo.awake_s(C) == 15 * C
    assert slo.awake_s(0.0) == 0.0


@pytest.mark.parametrize(
    ("peaks", "counted"),
    [
        ([], []),
        ([(0.0, 120.0)], [0.0]),  # the first burst of all (a wake's queue): nothing before it
        ([(0.0, 10.0), (120.0, 12.0), (240.0, 400.0), (360.0, 11.0)], [0.0, 10.0, 12.0, 11.0]),
        ([(0.0, 30.0), (120.0, 200.0), (240.0, 40.0), (360.0, 180.0)], [0, 30, 40, 180]),
        ([(360.0, 180.0), (0.0, 30.0), (240.0, 40.0), (120.0, 200.0)], [0, 30, 40, 180]),
        ([(0.0, 300.0), (120.0, 300.0)], [0.0, 300.0]),  # a second surge of the size: whole
        # One surge seen in two neighbouring buckets is not a second surge.
        ([(0.0, 10.0), (120.0, 300.0), (180.0, 280.0)], [0.0, 10.0, 10.0]),
    ],
)
def test_a_burst_counts_as_far_as_an_earlier_one_reached(
    peaks: list[tuple[float, float]], counted: list[float]
) -> None:
    assert slo.recurring(peaks, apart_s=70.0) == counted


def test_a_burst_counts_whole_until_it_is_a_cold_start_old() -> None:
    # Bursts from `recent_from_s` on are too recent to tell from the first of a recurring
    # size: they count whole; older ones as far as an earlier burst reached.
    peaks = [(0.0, 10.0), (120.0, 12.0), (240.0, 400.0)]
    assert slo.recurring(peaks, 70.0, slo.recent_from_s(250.0, 60.0)) == [0.0, 10.0, 400.0]
    assert slo.recurring(peaks, 70.0, slo.recent_from_s(301.0, 60.0)) == [0.0, 10.0, 12.0]
    assert slo.recurring([(0.0, 120.0)], 70.0, slo.recent_from_s(30.0, 60.0)) == [120.0]
    assert slo.recent_from_s(1000.0, 0.0) == 1000.0  # no cold start: only a burst now


def test_a_lone_surge_among_small_bursts_leaves_the_level_on_the_small_ones() -> None:
    # An hour of minute peaks of 10 and one surge of 400 at minute 30: counted as it came,
    # at q 0.9 the surge alone would be more than the 10 % of burst requests left out, and
    # sets the level; counted as far as an earlier burst reached, the level stays at 10.
    peaks = [(60.0 * m, 400.0 if m == 30 else 10.0) for m in range(60)]
    assert slo.level([v for _, v in peaks], 0.9, R) > 300
    assert slo.level(slo.recurring(peaks, 70.0), 0.9, R) == pytest.approx(10.0)


def test_slots_for_a_burst() -> None:
    assert slo.slots_for(70, 2.0, 5.0) == pytest.approx(50.0)  # 70 / (1 + 2 / 5)
    assert slo.slots_for(70, 0.0, 5.0) == 70  # no wait allowed: a slot per request


R = 1.4  # 1 + W / s at W 2 s, s 5 s: a warm slot starts 1.4 requests of a burst within W


def _missed(peaks: list[float], level: float) -> float:
    """What `slo.level` counts as missed: every request beyond the warm slots of a burst
    that overflows the level."""
    return sum(p - level / R for p in peaks if p > level)


@pytest.mark.parametrize(
    ("target", "peaks", "level"),
    [
        (1.0, [40, 100, 60, 0], 100),  # every request: the largest peak
        (0.85, [40, 100, 60, 0], 98),  # A = 30: the 100-burst misses 100 - 98 / 1.4 = 30
        (0.7, [40, 100, 60, 0], 60),  # A = 60: leaving out the 100-burst costs 57
        (0.5, [40, 100, 60, 0], 42),  # A = 100: 100 and 60 left out, missing 70 and 30
        (0.85, [24, 24, 24], 24),  # bursts all alike are held whole whatever q
        (0.85, [300] + [20] * 40, 189),  # a rare burst with a quarter of the requests: mostly held
        (0.85, [150] + [20] * 99, 20),  # ... one with 7 % of them is left out
        (0.99, [], 0),  # nothing seen
        (0.9, [0, 0, 0], 0),
    ],
    ids=lambda v: str(v)[:20],
)
def test_slo_level(target: float, peaks: list[float], level: float) -> None:
    found = slo.level(peaks, target, R)
    assert found == pytest.approx(level)
    if peaks and sum(peaks):  # what the level leaves out is within the share q allows...
        assert _missed(peaks, found) <= (1 - target) * sum(peaks) + 1e-9
        lower = found * 0.99  # ... and no lower level would do
        assert found == 0 or _missed(peaks, lower) > (1 - target) * sum(peaks)


@pytest.mark.parametrize(
    ("demand", "until", "now", "active", "new_until"),
    [
        (1, 0, 100, True, 400),  # the first request wakes it and sets the deadline
        (3, 400, 200, True, 500),  # demand moves the deadline on
        (0, 500, 300, True, 500),  # no demand: the deadline stays, still active
        (0, 500, 500, False, 500),  # ... and passes
        (0.5, 0, 100, False, 0),  # below the threshold of 1 while asleep: stays asleep
        (0.5, 400, 200, True, 500),  # ... but low is not zero while awake
    ],
    ids=["wake", "extend", "hold", "expire", "too-low-to-wake", "low-is-not-zero"],
)
def test_awake_until(
    demand: float, until: float, now: float, active: bool, new_until: float
) -> None:
    assert activation.awake_until(demand, 1.0 if demand < 1 else 0.0, until, now, 300.0) == (
        active,
        new_until,
    )
    if demand >= 1:
        assert activation.awake_until(demand, 0.0, until, now, 300.0) == (active, new_until)


def test_a_deadline_is_never_early_and_moves_in_sixtieths() -> None:
    assert activation.deadline(100.0, 300.0) == 400.0
    assert activation.deadline(101.0, 300.0) == 405.0  # rounded up to a 5 s step
    assert activation.deadline(7.0, 0.0) == 7.0


@pytest.mark.parametrize(
    ("busy_for", "span"),
    [
        (15.0, 15.0),  # a wake 15 s ago: the rate over those 15 s, not over the minute
        (1.0, S),  # never shorter than a service time: one request is not a rate of one a second
        (600.0, C),  # never longer than the usual span
    ],
    ids=["traffic-age", "at-least-a-service-time", "at-most-a-cold-start"],
)
def test_waking_span(busy_for: float, span: float) -> None:
    assert forecast.waking_span_s(busy_for, S, C) == span


@pytest.mark.parametrize(
    ("backlog", "ready", "starting", "kept"),
    [
        (170, 1, 7, 8),  # a wake's first pod is ready, 170 wait: the 7 starting stay ordered
        (0, 1, 7, 0),  # nothing waits: the need may release starting pods
        (170, 8, 0, 0),  # nothing starting: ready pods are the need's to release
        (0.5, 0, 3, 3),  # any wait counts, with nothing ready yet
    ],
    ids=["requests-wait", "nothing-waits", "nothing-starting", "nothing-ready-yet"],
)
def test_starting_pods_are_kept_while_requests_wait(
    backlog: float, ready: int, starting: int, kept: int
) -> None:
    assert forecast.kept_replicas(backlog, ready, starting) == kept


# The windows the rules read, in buckets of 1 s: samples 0 at t=0 and 8 at t=50.
SAMPLES = ((0, 0.0), (50, 8.0))


@pytest.mark.parametrize(
    ("t", "value"),
    [(-1.0, None), (0.0, 0.0), (49.9, 0.0), (50.0, 8.0), (500.0, 8.0)],
    ids=["before-any", "at-the-first", "held-until-the-next", "the-next", "held-after"],
)
def test_the_sample_in_force(t: float, value: float | None) -> None:
    assert window.value_at(SAMPLES, t, 1.0) == value


@pytest.mark.parametrize(
    ("now", "length", "mean"),
    [
        (60.0, 60.0, (50 * 0 + 10 * 8) / 60),  # the docstring's worked example
        (60.0, 5.0, 8.0),  # only the later sample in the window
        (55.0, 30.0, (25 * 0 + 5 * 8) / 30),  # the earlier one holds from the window's start
    ],
    ids=["worked-example", "recent-only", "held-into-the-window"],
)
def test_time_mean_weighs_each_sample_by_how_long_it_held(
    now: float, length: float, mean: float
) -> None:
    assert window.time_mean(SAMPLES, now, length, 1.0) == pytest.approx(mean)
    assert window.time_mean((), now, length, 1.0) is None


# 6.4 per replica (targetConcurrency 8 x targetUtilization 0.8).
T = 6.4


@pytest.mark.parametrize(
    ("metric", "replicas", "reported"),
    [
        (13.5, 2, 2 * T * 1.1 * 1.001),  # wants 3, within 2's band: lifted, the HPA asks for 3
        (12.0, 2, 12.0),  # wants 2: as it is
        (14.5, 2, 14.5),  # past the band already: the HPA asks for 3 itself
        (6.5, 1, 1 * T * 1.1 * 1.001),  # 1 -> 2
        (60.0, 9, 9 * T * 1.1 * 1.001),  # 9 -> 10, the last size whose band is under a replica
        (66.0, 10, 66.0),  # wants 11; just past 10's band is 12: as it is
        (5.0, 0, 5.0),  # at zero KEDA activates, no band
        (10.0, 3, 10.0),  # a fall: the HPA hears it below 0.9 x 3 x 6.4 = 17.3
    ],
    ids=["lifted", "enough", "past-band", "one-to-two", "nine", "ten", "zero", "fall"],
)
def test_a_rise_within_the_hpa_tolerance_is_lifted_only_to_one_more_replica(
    metric: float, replicas: int, reported: float
) -> None:
    assert tolerance.past_tolerance(metric, replicas, T, 0.1) == pytest.approx(reported)


@pytest.mark.parametrize(
    ("metric", "replicas", "hpa_tolerance", "reported"),
    [
        (13.5, 2, 0.0, 13.5),  # no band: the HPA hears 3 itself
        (20.0, 3, 0.2, 3 * T * 1.2 * 1.001),  # a wider band: 3 -> 4 (ceil(3.6))
        (36.0, 5, 0.2, 36.0),  # just past 5's 0.2 band is 7, more than the 6 wanted
    ],
    ids=["none", "wider-lifted", "wider-too-far"],
)
def test_the_band_is_the_hpa_tolerance_given(
    metric: float, replicas: int, hpa_tolerance: float, reported: float
) -> None:
    assert tolerance.past_tolerance(metric, replicas, T, hpa_tolerance) == pytest.approx(reported)
