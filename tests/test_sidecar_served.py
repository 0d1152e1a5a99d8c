"""What each write tells the scaler of the pod's completions (sidecar.served): table-driven,
no I/O, no clock.

Each case is a run of steps: a scrape's counters (model -> (requests, busy seconds), version
"1" unless the key is a (model, version) pair), `REBASE` (Triton went away), or a write that
succeeds (`WRITE`) or fails (`FAIL`). The expectation is what each write offered, in order.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from scaler.service_record import Served
from sidecar.completions import Counters
from sidecar.selection import TRT_LLM, select
from sidecar.served import ServedTally
from tests.test_sidecar_selection import TRT_ENSEMBLE

WRITE, FAIL, REBASE = "write", "fail", "rebase"
Sample = Mapping[str | tuple[str, str], tuple[float, float]]
Step = str | Sample

# Clients call `ensemble`; every model it passes through is on the page and may be named.
EVERY_STAGE = select(tuple(TRT_ENSEMBLE), TRT_ENSEMBLE, {"tensorrt_llm": TRT_LLM}).served


def stages(requests: float, busy_s: float) -> Sample:
    """The ensemble and each step moved by the same requests (the engine, decoupled, by
    almost nothing: its execute returns before the responses are sent)."""
    return {
        "ensemble": (requests, busy_s),
        "preprocessing": (requests, busy_s / 100),
        "tensorrt_llm": (requests, busy_s / 1000),
        "postprocessing": (requests, busy_s / 100),
    }


CASES: list[tuple[str, frozenset[str], list[Step], list[Served | None]]] = [
    (
        "steady-increments",
        frozenset({"m"}),
        [{"m": (0, 0)}, {"m": (2, 4)}, WRITE, {"m": (3, 6)}, {"m": (5, 10)}, WRITE],
        [Served(2, 4), Served(3, 6)],
    ),
    (
        "the-first-sample-is-a-baseline",
        frozenset({"m"}),
        [{"m": (100, 500)}, WRITE, {"m": (101, 502)}, WRITE],
        [None, Served(1, 2)],
    ),
    (
        "nothing-completed-is-no-served-not-a-zero",
        frozenset({"m"}),
        [WRITE, {"m": (4, 8)}, WRITE, {"m": (4, 8)}, WRITE],
        [None, None, None],
    ),
    (
        "a-counter-reset-starts-a-new-baseline",
        frozenset({"m"}),
        [{"m": (10, 20)}, {"m": (12, 24)}, {"m": (1, 3)}, {"m": (4, 9)}, WRITE],
        [Served(2 + 3, 4 + 6)],
    ),
    (
        "busy-time-going-back-alone-is-a-reset-too",
        frozenset({"m"}),
        [{"m": (10, 20)}, {"m": (11, 5)}, {"m": (12, 7)}, WRITE],
        [Served(1, 2)],
    ),
    (
        "a-failed-write-keeps-its-deltas-for-the-next",
        frozenset({"m"}),
        [{"m": (0, 0)}, {"m": (2, 4)}, FAIL, FAIL, {"m": (3, 7)}, WRITE, {"m": (3, 7)}, WRITE],
        [Served(2, 4), Served(2, 4), Served(3, 7), None],
    ),
    (
        "a-model-appearing-later-starts-at-a-baseline",
        frozenset({"a", "b"}),
        [{"a": (0, 0)}, {"a": (1, 2), "b": (5, 50)}, {"a": (1, 2), "b": (7, 60)}, WRITE],
        [Served(1 + 2, 2 + 10)],
    ),
    (
        "a-version-missing-from-a-scrape-loses-its-baseline",
        frozenset({"m"}),
        [{"m": (0, 0)}, {}, {"m": (5, 10)}, WRITE, {"m": (6, 12)}, WRITE],
        [None, Served(1, 2)],
    ),
    (
        "a-new-version-starts-at-a-baseline-the-old-one-ends",
        frozenset({"m"}),
        [
            {("m", "1"): (5, 5)},
            {("m", "1"): (6, 6), ("m", "2"): (0, 0)},
            {("m", "2"): (2, 8)},
            WRITE,
        ],
        [Served(1 + 2, 1 + 8)],
    ),
    (
        "versions-add-up",
        frozenset({"m"}),
        [
            {("m", "1"): (5, 5), ("m", "2"): (0, 0)},
            {("m", "1"): (6, 7), ("m", "2"): (2, 8)},
            WRITE,
        ],
        [Served(3, 10)],
    ),
    (
        "triton-gone-rebases-and-keeps-what-is-pending",
        frozenset({"m"}),
        [{"m": (0, 0)}, {"m": (2, 4)}, REBASE, {"m": (50, 100)}, {"m": (51, 103)}, WRITE],
        [Served(2 + 1, 4 + 3)],
    ),
    (
        "models-not-served-are-not-counted",
        frozenset({"m"}),
        [{"m": (0, 0), "other": (0, 0)}, {"m": (1, 1), "other": (9, 90)}, WRITE],
        [Served(1, 1)],
    ),
    (
        "an-ensemble-and-its-steps-named-count-each-request-once-by-the-ensemble",
        EVERY_STAGE,
        [stages(0, 0), stages(4, 8), WRITE],
        [Served(4, 8)],
    ),
    (
        "counters-that-are-not-numbers-are-no-data",
        frozenset({"m"}),
        [{"m": (0, 0)}, {"m": (float("nan"), 4)}, {"m": (3, 6)}, WRITE],
        [None],
    ),
]


def counters(sample: Sample) -> dict[tuple[str, str], Counters]:
    keys = ((k, "1") if isinstance(k, str) else k for k in sample)
    return {key: Counters(r, b * 1e6) for key, (r, b) in zip(keys, sample.values(), strict=True)}


@pytest.mark.parametrize(
    ("models", "steps", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_served_is_what_completed_since_the_last_successful_write(
    models: frozenset[str], steps: list[Step], expected: list[Served | None]
) -> None:
    tally = ServedTally()
    offered: list[Served | None] = []
    for step in steps:
        if step == REBASE:
            tally.rebase()
        elif step in (WRITE, FAIL):
            served = tally.pending()
            offered.append(served)
            if step == WRITE:
                tally.written(served)
        else:
            assert not isinstance(step, str)
            tally.observe(counters(step), models)
    assert [rounded(s) for s in offered] == [rounded(s) for s in expected]


def rounded(served: Served | None) -> tuple[float, float] | None:
    return None if served is None else (served.completed, round(served.busy_s, 6))
