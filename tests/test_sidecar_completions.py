"""Plain Triton's in-flight from completion counters (sidecar.completions): pure, stepped time.

The closed-loop cases are the issue's: N clients each keep one request of D seconds
in the system; the counters move only when requests end, as Triton's do. After a
warm-up of 2 D, at least 90 % of the figures lie within +-20 % of N and none above 2 N.
The same targets are checked against a real tritonserver in test_sidecar_real_triton.
"""

from __future__ import annotations

import random

import pytest

from sidecar.completions import MAX_LAG_S, CompletionTimeline, Counters


def closed_loop(
    clients: int, duration_s: float, *, lockstep: bool, seconds: float, poll_s: float = 0.5
) -> list[tuple[float, float | None]]:
    """(time, figure) at each poll while `clients` keep one request each in the system."""
    jitter = random.Random(17)
    running = [
        [start, start + duration_s]
        for start in (0.0 if lockstep else i * duration_s / clients for i in range(clients))
    ]
    requests, busy_us, now = 0, 0.0, 0.0
    timeline = CompletionTimeline(origin_idle=True)
    timeline.observe(Counters(0, 0), -poll_s / 2)
    figures = []
    while now < seconds:
        now += poll_s + jitter.uniform(0, 0.02)
        for request in running:
            while request[1] <= now:  # ended: counted now, and the client sends the next
                requests += 1
                busy_us += (request[1] - request[0]) * 1e6
                request[0] = request[1] + 0.002
                request[1] = request[0] + duration_s + jitter.uniform(0, 0.01)
        figures.append((now, timeline.observe(Counters(requests, busy_us), now)))
    return figures


@pytest.mark.parametrize(
    ("clients", "duration_s"),
    [(8, 8.0), (8, 20.0), (8, 2.0), (16, 2.0)],
    ids=["8x8s", "8x20s", "8x2s", "16x2s"],
)
@pytest.mark.parametrize("lockstep", [True, False], ids=["lockstep", "staggered"])
def test_closed_loop_load_is_measured_within_20_percent(
    clients: int, duration_s: float, lockstep: bool
) -> None:
    # Staggered clients start one after the other over the first D: full load from D on.
    warm_up_s = 2 * duration_s + (0 if lockstep else duration_s)
    figures = closed_loop(clients, duration_s, lockstep=lockstep, seconds=warm_up_s + 60)
    after = [f for t, f in figures if t >= warm_up_s]
    within = [f for f in after if f is not None and abs(f - clients) <= 0.2 * clients]
    assert len(within) >= 0.9 * len(after)
    assert max(f for f in after if f is not None) <= 2 * clients


def test_a_burst_of_long_requests_ending_together_is_no_spike() -> None:
    """The issue's 62.9: 8 requests of 8 s ending in one poll were counted as 8 x 8 s of
    work done in one second. Here they are 8 requests, over the 8 s they ran."""
    figures = [f for _, f in closed_loop(8, 8.0, lockstep=True, seconds=60)]
    assert max(f for f in figures if f is not None) <= 8 * 1.05


def test_idle_is_a_measured_zero_and_load_fades_to_zero_after_it_ends() -> None:
    timeline = CompletionTimeline(origin_idle=True)
    assert timeline.observe(Counters(0, 0), 0.0) is None  # one sample measures nothing
    assert timeline.observe(Counters(0, 0), 1.0) is None  # the window is not 1 s long yet
    assert timeline.observe(Counters(0, 0), 2.0) == 0.0
    assert all(timeline.observe(Counters(0, 0), t / 2) == 0.0 for t in range(5, 13))
    # 4 requests of 4 s ended between t=6 and t=6.5 (taken as 6.25); nothing after.
    figures = {t / 2: timeline.observe(Counters(4, 16e6), t / 2) for t in range(13, 40)}
    assert figures[10.5] == pytest.approx(4 * 4 / 4.25)  # lag 4.25 s: window [2; 6.25]
    assert figures[14.5] > 0.0
    assert figures[15.0] == 0.0  # two lags after the last request ended


def test_a_restart_starts_again_from_an_idle_server() -> None:
    timeline = CompletionTimeline(origin_idle=False)
    timeline.observe(Counters(100, 500e6), 0.0)
    assert timeline.observe(Counters(100, 500e6), 3.0) is None  # unknown requests may run
    assert timeline.observe(Counters(2, 1e6), 4.0) is None  # counters went back: a restart
    assert timeline.observe(Counters(2, 1e6), 6.0) == 0.0  # a restarted server began idle


def test_next_to_a_running_server_no_figure_until_a_request_was_seen_whole() -> None:
    """The sidecar restarted next to a busy server: requests may have been running for
    any time; a zero there would be missing data passed off as no demand."""
    timeline = CompletionTimeline(origin_idle=False)
    timeline.observe(Counters(0, 0), 0.0)
    assert all(timeline.observe(Counters(0, 0), t) is None for t in range(1, 20))
    # 2 requests of 10 s ended: lag 10.5 s, so the window [-1; 9.5] reaches before t=0.
    assert timeline.observe(Counters(2, 20e6), 20.0) is None
    assert timeline.observe(Counters(2, 20e6), 21.0) is not None
    idle = CompletionTimeline(origin_idle=False)
    idle.observe(Counters(0, 0), 0.0)
    assert idle.observe(Counters(0, 0), MAX_LAG_S - 1) is None
    assert idle.observe(Counters(0, 0), MAX_LAG_S) == 0.0  # nothing runs that long


def test_a_request_longer_than_the_bound_counts_for_the_bound_only() -> None:
    timeline = CompletionTimeline(origin_idle=True)
    timeline.observe(Counters(0, 0), 0.0)
    figures = [timeline.observe(Counters(1, 1000e6), t) for t in range(1, 400)]
    assert max(f for f in figures if f is not None) <= 1.0
