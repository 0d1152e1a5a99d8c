"""Plain Triton's requests in flight, rebuilt from its completion counters. Pure: no I/O, no clock.

Triton (2.51, checked against a real server) publishes no gauge of the requests a
model is executing: `nv_inference_pending_request_count` counts only those queued
and not yet executing. A request's execution time reaches the cumulative counters
(`nv_inference_request_duration_us` - `nv_inference_queue_duration_us`) in one
step when it completes, and `nv_inference_request_success` counts it then. So
the requests executing now cannot be seen; those that executed in the past can,
exactly, once they have all completed.

How: every poll in which the counters moved is a completion event: `n` requests
ended in the poll interval (taken at its middle) after executing `busy / n`
seconds on average, so each was in flight over [end - duration, end]. Laid side
by side the events give the number of requests in flight at any past moment
that every request then in flight has completed since: one longest request
duration ago, the `lag`. The figure is the average over the window
[now - 2 lag, now - lag]: at least as long as the requests take, and over it
each request counts only for the time it ran inside it, so a burst of
completions cannot make a spike and a long request is never invisible nor
counted many times over.

Worked example, polls every 0.5 s: 8 clients each keep one 8 s request in the
system, all sent at t = 0. The poll at t = 8.0 sees the counters up by 8 requests
and 64 s of execution: taken to end at 7.75 (the middle of the poll interval), they
ran over [-0.25; 7.75]. The next 8, sent at 8.0, are seen at 16.0 and ran over
[7.75; 15.75], the next over [15.75; 23.75]. Lag = 8 + 0.25 (half a poll, for where
in its interval a request ended). At t = 24.5 the window is [8.0; 16.25]: 8 requests
for 7.75 s and 8 for 0.5 s, 8 x 8.25 s / 8.25 s = 8.0 in flight.

Lag and bounds: the figure describes the load one to two longest-request
durations ago (a change shows half after 1.5 lag, fully after 2 lag).
Durations are bounded by MAX_LAG_S: a request running longer is counted only
from MAX_LAG_S before its end. A request longer than any completed recently
(the lag) is missed while it runs past the window and counted when it ends,
for the part inside the windows still to come. Before anything completed the
lag is MIN_LAG_S.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

MIN_LAG_S = 1.0
MAX_LAG_S = 120.0
# Events are kept as long as a window may still reach back to them.
_KEEP_S = 2 * MAX_LAG_S + 10.0


@dataclass(frozen=True)
class Counters:
    """One model version's cumulative completion counters in one scrape."""

    requests: float  # nv_inference_request_success
    busy_us: float  # request duration - queue duration: execution time


@dataclass(frozen=True)
class _Event:
    ended_at: float
    requests: float
    duration_s: float


@dataclass(frozen=True)
class _Seen:
    at: float
    counters: Counters


class CompletionTimeline:
    """One model version's completion events, and the in-flight average they prove.

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

    def observe(self, counters: Counters, now: float) -> float | None:
        last = self._last
        self._last = _Seen(now, counters)
        if last is None or _went_back(counters, last.counters):
            # The first sample, or Triton restarted (its counters start again at 0):
            # it served nothing between the two samples, so nothing is in flight.
            self._origin_idle = self._origin_idle or last is not None
            self._origin = now
            self._events.clear()
            return None
        ended = counters.requests - last.counters.requests
        if ended > 0:
            busy_s = max(0.0, counters.busy_us - last.counters.busy_us) / 1e6
            duration_s = min(busy_s / ended, MAX_LAG_S)
            self._events.append(_Event((last.at + now) / 2, ended, duration_s))
        while self._events and self._events[0].ended_at < now - _KEEP_S:
            self._events.popleft()
        return self._average(now, now - last.at)

    def _average(self, now: float, poll_s: float) -> float | None:
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
        busy = 0.0
        for event in self._events:
            began = event.ended_at - event.duration_s
            overlap = min(event.ended_at, end) - max(began, start)
            if overlap > 0:
                busy += event.requests * overlap
        return busy / (end - start)


def _went_back(now: Counters, before: Counters) -> bool:
    return now.requests < before.requests or now.busy_us < before.busy_us
