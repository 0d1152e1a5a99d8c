"""Plain Triton's load, in flight and waiting, rebuilt for one past moment. Pure: no I/O, no clock.

Triton (2.51, checked against a real server) publishes no gauge of the requests a
model is executing: `nv_inference_pending_request_count` counts only those queued
and not yet executing. A request's execution time reaches the cumulative counters
(`nv_inference_request_duration_us` - `nv_inference_queue_duration_us`) in one
step when it completes, and `nv_inference_request_success` counts it then. So
the requests executing now cannot be seen; those that executed in the past can,
exactly, once they have all completed.

In flight: every poll in which the counters moved is a completion event: `n`
requests ended in the poll interval (taken at its middle) after executing
`busy / n` seconds on average, so each was in flight over [end - busy / n, end].
Laid side by side the events give the number of requests in flight at any past
moment that every request then in flight has completed since: one longest
execution ago, the `lag`. The figure is the average over the window
[now - 2 lag, now - lag]: at least as long as the requests take, and over it
each request counts only for the time it ran inside it, so a burst of
completions cannot make a spike and a long request is never invisible nor
counted many times over.

Waiting, over the same window: the pending count each poll read, recorded (each
reading holds from halfway since the previous poll to halfway to the next), is
what waited at those moments, exactly; the queue time of the completed requests
(`queue / n` each, just before it executed) rebuilds the same from the other
side, complete for the requests that have ended. The larger of the two averages
is the waiting figure. Both describe the window's moments, as the in-flight
figure does: a request is counted waiting, then in flight, never both at once.
Adding the pending count of *now* to an in-flight figure of one to two lags ago
(what this module replaced) swings with a dynamic batcher: one instance, 8
clients, the batcher alternates batches of 1 and 7, and "past in flight + pending
now" read anything from 2.3 to 13.5 for 8 (issue 25).

The live pending count is still used, as a floor (`with_live_floor`): requests
waiting now, plus the instances they keep busy (while any request waits, each
instance executes at least one), are in the system now. When that exceeds the
rebuilt past (overload: more arrived than the past held), it is the figure, at
once; otherwise the past is, and the live count is never added on top of a past
that already counts the same requests.

Worked example, polls every 0.5 s, one instance batching up to 8: 8 clients each
keep one 8 s request in the system, all sent at t = 0. One request executes
alone over [0; 8] while 7 wait; then the 7 execute over [8; 16] while the first,
sent again, waits; and so on, 1 and 7 in turn. The polls read 7 pending before
t = 8, 1 from 8.0 to 15.5, 7 from 16.0 to 23.5, 1 from 24.0.
- Poll at 8.0: 1 request, 8 s executed, 0 s queued: executing over [-0.25; 7.75].
- Poll at 16.0: 7 requests, 56 s executed, 56 s queued: executing over
  [7.75; 15.75], waiting over [-0.25; 7.75].
- Poll at 24.0: 1 request, 8 s executed, 8 s queued: executing [15.75; 23.75],
  waiting [7.75; 15.75].
Lag = 8 + 0.25 (half a poll, for where in its interval a request ended). At
t = 24.5 the window is [8.0; 16.25]:
- in flight: 7 requests for 7.75 s and 1 for 0.5 s: 54.75 / 8.25 = 6.64;
- waiting, recorded: 1 over [8.0; 15.75] and 7 over [15.75; 16.25]:
  11.25 / 8.25 = 1.36; rebuilt from the queue times, complete only for the requests
  ended: the first, waiting over [7.75; 15.75], 7.75 / 8.25 = 0.94; the larger, 1.36;
- 6.64 + 1.36 = 8.00. Live floor at 24.5: 1 pending + 1 instance busy = 2 < 8.
What this replaced, past in flight + pending now, read on the same polls 4.27 + 7 =
11.27 at t = 20.5, 6.64 + 1 = 7.64 at 24.5, 3.73 + 1 = 4.73 at 28.5: the two halves
belong to different phases of the alternation (tests/test_sidecar_completions.py
replays both).

Lag and bounds: the figure describes the load one to two longest execution
times ago (a change shows half after 1.5 lag, fully after 2 lag), unless the
live floor is higher. Durations are bounded by MAX_LAG_S: a request running
longer is counted only from MAX_LAG_S before its end. A request longer than any
completed recently (the lag) is missed while it runs past the window and counted
when it ends, for the part inside the windows still to come. Before anything
completed the lag is MIN_LAG_S.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

MIN_LAG_S = 1.0
MAX_LAG_S = 120.0
# Events and pending readings are kept as long as a window may still reach back to them.
_KEEP_S = 2 * MAX_LAG_S + 10.0


@dataclass(frozen=True)
class Counters:
    """One model version's cumulative completion counters in one scrape."""

    requests: float  # nv_inference_request_success
    busy_us: float  # request duration - queue duration: execution time
    queue_us: float = 0.0  # nv_inference_queue_duration_us: time queued before executing


@dataclass(frozen=True)
class Frame:
    """Requests in flight and waiting inside Triton at one moment (or on average over one
    window): both halves always describe the same time."""

    inflight: float
    waiting: float

    @property
    def total(self) -> float:
        return self.inflight + self.waiting


def with_live_floor(past: Frame, live: Frame) -> Frame:
    """The rebuilt past, unless what is visible now (`live`: the pending count and the
    instances it keeps busy) is more: overload shows at once, and the live count is
    never added to a past that already counts the same requests."""
    return live if live.total > past.total else past


@dataclass(frozen=True)
class _Event:
    ended_at: float
    requests: float
    duration_s: float  # executing, per request
    queue_s: float  # waiting before it, per request


@dataclass(frozen=True)
class _Seen:
    at: float
    counters: Counters


class CompletionTimeline:
    """One model version's completion events and pending readings, and the load they
    prove over a past window.

    `origin_idle`: nothing was in flight when observation began (the server was
    seen starting), so a window may begin at the first sample. Otherwise (the
    sidecar started next to a running server) requests may have been running
    already, of unknown length, and no figure is given until MAX_LAG_S has passed
    or one request has completed and a full window lies after the first sample."""

    def __init__(self, origin_idle: bool) -> None:
        self._origin_idle = origin_idle
        self._origin: float | None = None
        self._last: _Seen | None = None
        self._events: deque[_Event] = deque()
        self._pending: deque[tuple[float, float]] = deque()  # (read at, pending count)

    def observe(self, counters: Counters, now: float, pending: float = 0.0) -> Frame | None:
        """`pending`: this version's own queue, read in the same scrape as `counters`."""
        last = self._last
        self._last = _Seen(now, counters)
        if last is None or _went_back(counters, last.counters):
            # The first sample, or Triton restarted (its counters start again at 0):
            # it served nothing between the two samples, so nothing is in flight.
            self._origin_idle = self._origin_idle or last is not None
            self._origin = now
            self._events.clear()
            self._pending.clear()
            self._pending.append((now, pending))
            return None
        self._pending.append((now, pending))
        ended = counters.requests - last.counters.requests
        if ended > 0:
            busy_s = max(0.0, counters.busy_us - last.counters.busy_us) / 1e6
            queue_s = max(0.0, counters.queue_us - last.counters.queue_us) / 1e6
            self._events.append(
                _Event(
                    (last.at + now) / 2,
                    ended,
                    min(busy_s / ended, MAX_LAG_S),
                    min(queue_s / ended, MAX_LAG_S),
                )
            )
        while self._events and self._events[0].ended_at < now - _KEEP_S:
            self._events.popleft()
        while len(self._pending) > 1 and self._pending[1][0] < now - _KEEP_S:
            self._pending.popleft()
        return self._average(now, now - last.at)

    def _average(self, now: float, poll_s: float) -> Frame | None:
        assert self._origin is not None
        longest = max((e.duration_s for e in self._events), default=0.0)
        lag = min(max(longest + poll_s / 2, MIN_LAG_S), MAX_LAG_S)
        end = now - lag
        start = end - lag
        # Requests may have been running before a first sample taken next to a busy
        # server, for how long is unknown: wait for a full window after it, and while
        # nothing has completed, for the longest request allowed.
        unseen = start < self._origin or (not self._events and now - self._origin < MAX_LAG_S)
        if not self._origin_idle and unseen:
            return None
        start = max(start, self._origin)
        if end - start < min(lag, MIN_LAG_S):
            return None
        executing = rebuilt_waiting = 0.0
        for event in self._events:
            began = event.ended_at - event.duration_s
            executing += event.requests * _overlap(began, event.ended_at, start, end)
            queued = _overlap(began - event.queue_s, began, start, end)
            rebuilt_waiting += event.requests * queued
        waiting = max(self._recorded_waiting(start, end), rebuilt_waiting)
        return Frame(executing / (end - start), waiting / (end - start))

    def _recorded_waiting(self, start: float, end: float) -> float:
        """Request-seconds of the pending readings over [start; end]: each reading holds
        from halfway since the one before to halfway to the next (the first from its
        own time, the last up to its own time)."""
        total = 0.0
        readings = list(self._pending)  # a deque's middle is O(n) to index
        for i, (at, pending) in enumerate(readings):
            low = at if i == 0 else (readings[i - 1][0] + at) / 2
            high = at if i == len(readings) - 1 else (at + readings[i + 1][0]) / 2
            total += pending * _overlap(low, high, start, end)
        return total


def _overlap(low: float, high: float, start: float, end: float) -> float:
    return max(0.0, min(high, end) - max(low, start))


def _went_back(now: Counters, before: Counters) -> bool:
    return (
        now.requests < before.requests or now.busy_us < before.busy_us
    ) or now.queue_us < before.queue_us
