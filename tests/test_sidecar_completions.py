"""Plain Triton's load rebuilt from completions (sidecar.completions): pure, stepped time.

The closed-loop cases: N clients each keep one request of D seconds in the system of a
simulated Triton (instances, each executing one request or,
with the dynamic batcher, a batch of up to `max_batch` requests queued when it is free;
the rest wait in its queue). The counters move only when requests end, as Triton's do,
with their execution and queue times; the pending count is read at every poll. After a
warm-up of 2 D, at least 90 % of the figures lie within +-20 % of N and none above 2 N.
The same targets are checked against a real tritonserver in test_sidecar_real_triton.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass

import pytest

from sidecar.completions import MAX_LAG_S, CompletionTimeline, Counters, Frame, with_live_floor


@dataclass(frozen=True)
class Poll:
    at: float
    figure: Frame | None  # the rebuilt frame with the live floor, as the sidecar reports it
    old: float | None  # the figure the rebuilt frame replaced: in flight of the past + pending now


def closed_loop(
    clients: int,
    duration_s: float,
    *,
    instances: int,
    max_batch: int = 1,
    lockstep: bool,
    seconds: float,
    poll_s: float = 0.5,
) -> list[Poll]:
    """Each poll while `clients` keep one request each in a simulated Triton model.

    Lockstep clients send their first requests 1 ms apart (as threads do): with the
    dynamic batcher the first starts alone and the others form the next batch: batches
    of 1 and 7 in turn, which no figure may swing with. Staggered clients start one after
    the other over the first D."""
    jitter = random.Random(17)
    arrivals: list[float] = [
        i * 0.001 if lockstep else i * duration_s / clients for i in range(clients)
    ]
    heapq.heapify(arrivals)
    queue: deque[float] = deque()  # arrival times, oldest first
    running: list[
        tuple[float, int, list[tuple[float, float]]]
    ] = []  # (end, id, [(arrival, start)])
    free, batches = instances, 0
    requests, busy_us, queue_us = 0, 0.0, 0.0
    timeline = CompletionTimeline(origin_idle=True)
    timeline.observe(Counters(0, 0), -poll_s / 2)
    polls: list[Poll] = []
    next_poll = 0.0

    def start(now: float) -> None:
        nonlocal free, batches
        while free and queue:
            batch = [(queue.popleft(), now) for _ in range(min(max_batch, len(queue)))]
            end = now + duration_s + jitter.uniform(0, 0.01)
            heapq.heappush(running, (end, batches, batch))
            free, batches = free - 1, batches + 1

    while next_poll < seconds:
        end = running[0][0] if running else float("inf")
        arrival = arrivals[0] if arrivals else float("inf")
        if next_poll <= min(end, arrival):
            now = next_poll
            frame = timeline.observe(Counters(requests, busy_us, queue_us), now, len(queue))
            live = Frame(instances if queue else 0, len(queue))
            old = None if frame is None else frame.inflight + len(queue)
            polls.append(Poll(now, frame and with_live_floor(frame, live), old))
            next_poll = now + poll_s + jitter.uniform(0, 0.02)
        elif end <= arrival:  # a batch ends: counted, and its clients send the next
            now, _, batch = heapq.heappop(running)
            for arrived, started in batch:
                requests += 1
                busy_us += (now - started) * 1e6
                queue_us += (started - arrived) * 1e6
                heapq.heappush(arrivals, now + 0.002)
            free += 1
            start(now)
        else:
            queue.append(heapq.heappop(arrivals))
            start(arrival)
    return polls


def share_within(figures: list[float], target: float) -> float:
    return sum(abs(f - target) <= 0.2 * target for f in figures) / len(figures)


# (clients, D, instances, max batch): instances that each run one request (no batching),
# and one or two instances whose dynamic batcher runs several at once.
CASES = {
    "8x8s": (8, 8.0, 8, 1),
    "8x20s": (8, 20.0, 8, 1),
    "8x2s": (8, 2.0, 8, 1),
    "16x2s": (16, 2.0, 16, 1),
    "16x2s-8-instances-8-wait": (16, 2.0, 8, 1),
    "batched-8x8s": (8, 8.0, 1, 8),
    "batched-8x20s": (8, 20.0, 1, 8),
    "batched-16x2s": (16, 2.0, 1, 8),
    "batched-4x8s": (4, 8.0, 1, 8),
    "batched-2-instances-8x4s-batch-4": (8, 4.0, 2, 4),
    "batched-8x4s-batch-4": (8, 4.0, 1, 4),
}


@pytest.mark.parametrize(
    ("clients", "duration_s", "instances", "max_batch"), CASES.values(), ids=CASES
)
@pytest.mark.parametrize("lockstep", [True, False], ids=["lockstep", "staggered"])
def test_closed_loop_load_is_measured_within_20_percent(
    clients: int, duration_s: float, instances: int, max_batch: int, lockstep: bool
) -> None:
    # Staggered clients start one after the other over the first D: full load from D on.
    warm_up_s = 2 * duration_s + (0 if lockstep else duration_s)
    polls = closed_loop(
        clients,
        duration_s,
        instances=instances,
        max_batch=max_batch,
        lockstep=lockstep,
        seconds=warm_up_s + 60,
    )
    after = [p.figure.total for p in polls if p.at >= warm_up_s and p.figure is not None]
    assert len(after) >= 100
    assert share_within(after, clients) >= 0.9, after
    assert max(after) <= 2 * clients


def test_past_in_flight_plus_pending_now_swings_and_one_frame_does_not() -> None:
    """Both halves of the load must come from one frame. 8 clients x 8 s on one batching
    instance run batches of 1 and 7 in turn: in flight of one to two durations ago plus
    pending now lies within +-20 % of 8 for a third of the polls at most; the rebuilt
    frame, always."""
    polls = [
        p
        for p in closed_loop(8, 8.0, instances=1, max_batch=8, lockstep=True, seconds=80)
        if p.at >= 16
    ]
    old = [p.old for p in polls if p.old is not None]
    new = [p.figure.total for p in polls if p.figure is not None]
    assert share_within(old, 8) < 0.5 and max(old) > 1.3 * 8 and min(old) < 0.7 * 8
    assert share_within(new, 8) == 1.0, new


def worked_example() -> dict[float, tuple[Frame | None, float]]:
    """sidecar.completions' worked example: (frame, pending read) at each poll."""
    timeline = CompletionTimeline(origin_idle=True)
    # (from t, counters, pending): 1 and 7 in turn, the first alone over [0; 8].
    phases = [
        (0.0, Counters(0, 0, 0), 7),
        (8.0, Counters(1, 8e6, 0), 1),
        (16.0, Counters(8, 64e6, 56e6), 7),
        (24.0, Counters(9, 72e6, 64e6), 1),
        (32.0, Counters(16, 128e6, 120e6), 7),
    ]
    seen = {}
    for tick in range(0, 80):
        now = tick / 2
        _, counters, pending = [p for p in phases if p[0] <= now][-1]
        seen[now] = (timeline.observe(counters, now, pending), float(pending))
    return seen


def test_the_worked_example_of_the_module_docstring() -> None:
    seen = worked_example()
    frame, pending = seen[24.5]
    assert frame is not None
    assert frame.inflight == pytest.approx(54.75 / 8.25)  # 6.64
    assert frame.waiting == pytest.approx(11.25 / 8.25)  # 1.36, recorded
    assert frame.total == pytest.approx(8.0)
    live = Frame(1, pending)  # 1 waiting now and the instance it keeps busy
    assert with_live_floor(frame, live) == frame
    # What the old figure read at the same polls: past in flight + pending now.
    old = {t: round(f.inflight + p, 2) for t, (f, p) in seen.items() if f is not None}
    assert (old[20.5], old[24.5], old[28.5]) == (11.27, 7.64, 4.73)
    assert all(
        f is not None and f.total == pytest.approx(8.0)
        for t, (f, _) in seen.items()
        if 24 <= t < 40
    )


def test_overload_shows_at_once_and_the_past_is_not_added_to_it() -> None:
    """8 instances, 8 clients of 4 s; at t = 40 eight more arrive and wait. The rebuilt
    past still says 8 for one to two lags; the live floor, 8 waiting + 8 instances busy,
    says 16 from the first poll that reads them, and never 8 + 16."""
    timeline = CompletionTimeline(origin_idle=True)
    figures = {}
    for tick in range(0, 120):
        now = tick / 2
        done = int(now // 4) * 8  # 8 end every 4 s
        pending = 8 if now >= 40 else 0
        frame = timeline.observe(Counters(done, done * 4e6, 0), now, pending)
        if frame is not None:
            figures[now] = with_live_floor(frame, Frame(8 if pending else 0, pending))
    assert figures[39.5].total == pytest.approx(8, rel=0.1)
    assert figures[40.0].total == 16  # at once
    assert max(f.total for f in figures.values()) <= 16 * 1.05


def test_a_burst_of_long_requests_ending_together_is_no_spike() -> None:
    """Work is spread over the time it ran, not the poll it ended in: 8 requests of 8 s
    ending in one poll are 8 requests over those 8 s (never 8 x 8 s of work in one second,
    a spike to 62.9), at most 5 % above 8."""
    polls = closed_loop(8, 8.0, instances=8, lockstep=True, seconds=60)
    assert max(p.figure.total for p in polls if p.figure is not None) <= 8 * 1.05


def test_idle_is_a_measured_zero_and_load_fades_to_zero_after_it_ends() -> None:
    timeline = CompletionTimeline(origin_idle=True)
    assert timeline.observe(Counters(0, 0), 0.0) is None  # one sample measures nothing
    assert timeline.observe(Counters(0, 0), 1.0) is None  # the window is not 1 s long yet
    assert timeline.observe(Counters(0, 0), 2.0) == Frame(0.0, 0.0)
    assert all(timeline.observe(Counters(0, 0), t / 2) == Frame(0, 0) for t in range(5, 13))
    # 4 requests of 4 s ended between t=6 and t=6.5 (taken as 6.25); nothing after.
    figures = {t / 2: timeline.observe(Counters(4, 16e6), t / 2) for t in range(13, 40)}
    first = figures[10.5]
    assert first is not None and first.inflight == pytest.approx(4 * 4 / 4.25)  # [2; 6.25]
    assert (fading := figures[14.5]) is not None and fading.inflight > 0.0
    assert figures[15.0] == Frame(0.0, 0.0)  # two lags after the last request ended


def test_waiting_is_rebuilt_from_queue_times_where_no_poll_saw_it() -> None:
    """4 requests arrive at 2.1 and wait 0.3 s for a batch, then execute 4 s: the polls at
    2.0 and 2.5 read nothing pending; their queue time says they waited."""
    timeline = CompletionTimeline(origin_idle=True)
    frames = {}
    for tick in range(0, 22):
        now = tick / 2
        counters = Counters(4, 16e6, 1.2e6) if now >= 6.5 else Counters(0, 0, 0)
        frames[now] = timeline.observe(counters, now, 0)
    # Ended at 6.25: executing [2.25; 6.25], queued [1.95; 2.25]; lag 4.25: window [2; 6.25].
    frame = frames[10.5]
    assert frame is not None
    assert frame.waiting == pytest.approx(4 * 0.25 / 4.25)
    assert frame.inflight == pytest.approx(4 * 4 / 4.25)
    assert frame.total == pytest.approx(4.0)


def test_a_restart_starts_again_from_an_idle_server() -> None:
    timeline = CompletionTimeline(origin_idle=False)
    timeline.observe(Counters(100, 500e6), 0.0)
    assert timeline.observe(Counters(100, 500e6), 3.0) is None  # unknown requests may run
    assert timeline.observe(Counters(2, 1e6), 4.0) is None  # counters went back: a restart
    assert timeline.observe(Counters(2, 1e6), 6.0) == Frame(0.0, 0.0)  # began idle


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
    assert idle.observe(Counters(0, 0), MAX_LAG_S) == Frame(0.0, 0.0)  # nothing runs that long


def test_a_request_longer_than_the_bound_counts_for_the_bound_only() -> None:
    timeline = CompletionTimeline(origin_idle=True)
    timeline.observe(Counters(0, 0), 0.0)
    frames = [timeline.observe(Counters(1, 1000e6), t) for t in range(1, 400)]
    assert max(f.total for f in frames if f is not None) <= 1.0
