"""Pod profiles in the simulator: the measured H200 table read as documented, continuous
batching on a per-replica step clock, the token side of the SLO, the pods' token curve, and
the decision sized by tokenLatencyMs following a context that doubles."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from scaler.__main__ import main
from scaler.simulator.batching import BatchingCluster, share_within, token_percentile_ms
from scaler.simulator.cluster import ClusterParams
from scaler.simulator.compare import Knobs, floor_of, ours, run_policy, yesterday_run
from scaler.simulator.engine import RunResult
from scaler.simulator.profile import PodProfile, load
from scaler.simulator.summary import Summary, concurrency_shift, summarise
from scaler.simulator.sweep import Point, mark
from scaler.simulator.trace import Trace, make_trace, scale_context_after
from scaler.token_curve import NOTHING_MEASURED, Decoded


def _measured(name: str) -> PodProfile:
    profile = load(name)
    assert profile is not None
    return profile


H200 = _measured("h200-llama3-8b")
PREFILL = H200.prefill_tokens_per_s


def h200(**changes: object) -> ClusterParams:
    return ClusterParams(slots_per_replica=256, profile=H200, **changes)  # type: ignore[arg-type]


def trace(*requests: tuple[float, int, int]) -> Trace:
    """(arrival s, input tokens, output tokens)."""
    return Trace(
        name="hand",
        arrival_s=np.array([a for a, _, _ in requests], dtype=np.float64),
        input_tokens=np.array([i for _, i, _ in requests], dtype=np.int64),
        output_tokens=np.array([o for _, _, o in requests], dtype=np.int64),
    )


# -- the profile ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sequences", "context", "ms"),
    [
        (64, 1024, 8.457),  # measured: 8.46 ms a token
        (1, 1024, 5.835),
        (96, 1024, 8.457 + (12.028 - 8.457) * 32 / 64),  # linear in B: 10.24
        (64, 2560, (8.457 + 14.175) / 2),  # linear in context: 11.32
        (128, 4096, 14.175 + 64 * (14.175 - 10.199) / 32),  # past the table's B: 22.13
        (1, 7168, 6.961 + (6.961 - 5.835)),  # past the table's context: 8.09
        (300, 1024, 18.042),  # B capped at the max batch, 256
    ],
)
def test_the_h200_profile_reads_its_table_as_documented(
    sequences: float, context: float, ms: float
) -> None:
    assert H200.step_ms(sequences, context) == pytest.approx(ms, rel=1e-9)


def test_the_h200_profile_keeps_its_measured_facts() -> None:
    assert H200.max_batch == 256
    assert 32_000 < PREFILL < 38_000
    # The largest batch within 10 ms at context 1,024: between 64 (8.46) and 128 (12.03).
    assert H200.concurrency_within(10.0, 1024) == pytest.approx(64 + 64 * 1.543 / 3.571, rel=1e-3)


def test_an_unknown_profile_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="pod profile = 'h100', must be one of simple, h200"):
        load("h100")
    assert load("simple") is None


# -- continuous batching -----------------------------------------------------------------------


def one_pod(requests: Trace, **changes: object) -> BatchingCluster:
    cluster = BatchingCluster(requests, h200(**changes), horizon_s=100.0, initial_ready=1)
    for i, t in enumerate(requests.arrival_s.tolist()):
        cluster.arrive(i, t)
    cluster.advance_to(math.inf)
    return cluster


def test_one_request_alone_is_prefill_then_a_step_per_token_at_b_1() -> None:
    """Worked example: 1,024 in, 101 out: prefill 1,024 / 35,630 s gives the first token, then
    100 steps at B=1 and context 1,025 (5.84 ms each)."""
    cluster = one_pod(trace((0.0, 1024, 101)))
    record = cluster.served
    expected = 1024 / PREFILL + 100 * H200.step_ms(1, 1025) / 1000
    assert record.mean_s == pytest.approx(expected, rel=1e-6)
    assert cluster.tokens.sum() == pytest.approx(100)  # the first token is prefill's
    assert share_within(cluster.tokens, 5.8) == 0.0
    assert share_within(cluster.tokens, 5.9) == 1.0


def test_sixty_four_together_decode_at_the_b_64_step_and_leave_in_output_order() -> None:
    """64 requests at once, outputs 11..74: all 64 decode together at 8.46 ms a step until
    the shortest leaves, fewer after; every token's step is within 10 ms, none within 5."""
    requests = trace(*((0.0, 1023, 11 + k) for k in range(64)))
    cluster = one_pod(requests)
    assert cluster.tokens.sum() == pytest.approx(sum(10 + k for k in range(64)))
    assert share_within(cluster.tokens, 10.0) == 1.0
    assert share_within(cluster.tokens, 5.0) == 0.0
    assert token_percentile_ms(cluster.tokens, 100) == pytest.approx(8.46, abs=0.011)
    # The step clock: 10 steps at B=64 (context 1,024), then after every departure one step
    # at one sequence fewer and a context one token longer; request k leaves at step 10 + k.
    done_at, t = [], 1023 / PREFILL + 10 * H200.step_ms(64, 1024) / 1000
    for j in range(10, 74):
        done_at.append(t)
        t += H200.step_ms(64 - (j - 9), 1024 + j) / 1000
    assert cluster.served.mean_s == pytest.approx(sum(done_at) / 64, rel=1e-9)


def test_the_pods_report_what_they_decoded_and_the_curve_learns_it() -> None:
    """Each second a busy replica writes steps, seconds and mean sequences (Decoded); the
    target's one curve then knows the step time at the sequences decoded."""
    requests = trace(*((0.0, 1023, 400) for _ in range(64)))
    cluster = one_pod(requests)
    points = cluster.curve.points()
    assert points, "a replica decoding 64 sequences for 3 s reports known steps"
    heaviest = max(points, key=lambda p: p.weight)
    assert heaviest.sequences == pytest.approx(64)
    assert heaviest.token_ms == pytest.approx(H200.step_ms(64, 1024 + 200), rel=0.03)
    assert cluster.signals().token_curve == cluster.curve


# -- admission -----------------------------------------------------------------------------


def test_a_pod_admits_at_most_the_published_concurrency_and_the_rest_waits() -> None:
    """The worker takes min(slots, max(1, floor(admit))) at once; the rest waits in the
    queue; lowering the limit cancels nothing, raising it takes from the queue at once."""
    requests = trace(*((0.0, 1023, 101) for _ in range(10)))
    cluster = BatchingCluster(requests, h200(), horizon_s=100.0, initial_ready=1)
    cluster.admit_at_most(4.7)
    for i in range(10):
        cluster.arrive(i, 0.0)
    assert (cluster.inflight, len(cluster.queue)) == (4, 6)
    cluster.admit_at_most(2.0)
    assert cluster.inflight == 4  # nothing cancelled
    cluster.advance_to(0.1)
    assert cluster.inflight == 4  # nor taken while above the limit
    cluster.admit_at_most(8.0)
    assert (cluster.inflight, len(cluster.queue)) == (8, 2)
    assert cluster.start_s[4:8].tolist() == [0.1] * 4
    cluster.admit_at_most(None)  # no key: the slots (CAPACITY)
    assert (cluster.inflight, cluster.admit) == (10, 256)
    cluster.admit_at_most(0.3)
    assert cluster.admit == 1
    cluster.admit_at_most(1000.0)
    assert cluster.admit == 256


def burst_on_one_warm_pod(metadata: dict[str, str]) -> RunResult:
    """400 requests (900 in, 101 out) in the first second on one warm H200 replica."""
    requests = trace(*((k / 400, 900, 101) for k in range(400)))
    knobs = Knobs(
        metadata={"targetConcurrency": "16", **metadata},
        min_replicas=1,
        max_replicas=1,
        cluster=h200(token_objective_ms=10.0),
    )
    return run_policy(requests, knobs, ours(knobs), floor_of(requests, knobs))


def test_without_an_objective_a_pod_admits_target_concurrency() -> None:
    """The example manifests' CAPACITY: a burst on one warm replica decodes at most 16 at once
    (at most the step at B=16), never the 256 its engine could batch."""
    result = burst_on_one_warm_pod({})
    assert result.tokens is not None
    assert token_percentile_ms(result.tokens, 100) <= H200.step_ms(16, 1001) + 0.011


def test_with_an_objective_a_pod_admits_the_decision_s_c_and_keeps_every_token_within() -> None:
    """The curve found at the start allows 91 sequences within 10 ms (context 1,024): the
    burst (contexts up to 1,001) is decoded 91 at a time, every token within 10 ms, the rest
    waiting its turn."""
    learned = NOTHING_MEASURED
    for sequences in (32.0, 64.0, 128.0):
        learned = learned.add(Decoded(sequences, 1000.0, H200.step_ms(sequences, 1024)), 0.0)
    requests = trace(*((k / 400, 900, 101) for k in range(400)))
    knobs = Knobs(
        metadata={"targetConcurrency": "16", "tokenLatencyMs": "10"},
        min_replicas=1,
        max_replicas=1,
        cluster=h200(token_objective_ms=10.0),
    )
    controller = ours(knobs)
    result = run_policy(requests, knobs, controller, floor_of(requests, knobs), curve=learned)
    assert result.tokens is not None
    assert token_percentile_ms(result.tokens, 100) <= 10.0
    # What the pods measured meanwhile (contexts under 1,024) moves it a little, not to 256.
    assert controller.admission == pytest.approx(64 + 64 * (10 - 8.457) / (12.028 - 8.457), 0.05)
    assert np.nanmax(result.wait_s) > 0  # the rest waited for a slot


def test_the_simple_profile_is_the_constant_model() -> None:
    """No profile: the cluster of old, no token side in the summary."""
    params = ClusterParams()
    assert params.profile is None
    requests = trace((0.0, 1000, 10))
    assert params.service_s(requests)[0] == pytest.approx(0.1 + 0.3)


# -- the decision sized by tokenLatencyMs -------------------------------------------------


def poisson_trace(span_s: float, rate: float, seed: int = 1) -> Trace:
    """Poisson arrivals; inputs around 1,000 tokens, outputs around 200 (log-normal)."""
    rng = np.random.default_rng(seed)
    n = int(span_s * rate)
    arrivals = np.cumsum(rng.exponential(1 / rate, n))
    inputs = np.maximum(1, rng.lognormal(math.log(1000), 0.3, n)).astype(np.int64)
    outputs = np.maximum(2, rng.lognormal(math.log(200), 0.5, n)).astype(np.int64)
    return make_trace("poisson", arrivals, inputs, outputs)


def test_the_learned_concurrency_follows_a_context_that_doubles_within_10_minutes() -> None:
    """40 req/s, the input doubles at 600 s; the curve is yesterday's (the same traffic before
    the change). C moves from under the profile's B within 10 ms at the old mean context to
    under that at the new one (C is where the tail of the token time meets 10 ms, not its
    mean; a longer context spreads the times more), within 10 % of where it settles in under
    10 minutes, and the tokens from then on keep the objective. The replicas the smaller C
    orders take a cold start: the tokens of that minute are the misses."""
    change = 600.0
    today = poisson_trace(1500.0, 40.0)
    requests = scale_context_after(today, change, 2.0)
    knobs = Knobs(
        metadata={"targetConcurrency": "8", "tokenLatencyMs": "10"},
        cluster=h200(token_objective_ms=10.0),
    )
    floor = floor_of(requests, knobs)
    before = yesterday_run(today, knobs, floor_of(today, knobs))
    result = run_policy(requests, knobs, ours(knobs), floor, before.served, before.curve)
    shift = concurrency_shift(result.concurrency, change)
    assert shift is not None
    old = float(np.mean(today.input_tokens + today.output_tokens / 2))
    new = old + float(np.mean(today.input_tokens))
    at_mean_before, at_mean_after = (
        H200.concurrency_within(10, old),
        H200.concurrency_within(10, new),
    )
    assert 0.8 * at_mean_before <= shift.before <= at_mean_before
    assert 0.5 * at_mean_after <= shift.settled <= at_mean_after
    assert shift.within_10pct_s is not None and shift.within_10pct_s <= 600
    summary = summarise(result, 2.0, floor.gpu_hours)
    assert summary.token_share_after_warmup is not None
    assert summary.token_share_after_warmup >= 0.99


def test_the_cli_runs_a_profile_and_reports_the_token_side(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "simulate",
            "--synthetic",
            "bursty",
            "--span-s",
            "300",
            "--pod-profile",
            "h200-llama3-8b",
            "--token-latency-ms",
            "10",
            "--baselines",
            "none",
            "--no-plot",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads((out / "summary.json").read_text())
    assert report["model"]["pod_profile"] == "h200-llama3-8b"
    ours_summary = report["policies"][0]
    assert 0.0 <= ours_summary["token_share"] <= 1.0
    assert ours_summary["token_objective_ms"] == 10.0


def summary(gpu_hours: float, tokens: float | None) -> Summary:
    """A run's figures: the wait met by 98 %, and (scored by an objective) its tokens."""
    waits = dict.fromkeys(("wait_p50_s", "wait_p95_s", "wait_p99_s", "wait_max_s"), 0.0)
    return Summary(
        policy="llm-keda-scaler",
        requests=100,
        unserved=0,
        slo_wait_s=2.0,
        slo_attainment=0.98,
        slo_after_warmup=1.0,
        **waits,
        ttft_p50_s=0.0,
        ttft_p99_s=0.0,
        gpu_hours=gpu_hours,
        x_floor=1.0,
        idle_replica_hours=0.0,
        scale_events=0,
        cold_starts=0,
        peak_replicas=0,
        decisions=0,
        sim_wall_s=0.0,
        token_objective_ms=None if tokens is None else 10.0,
        token_share=tokens,
        token_share_after_warmup=None if tokens is None else 1.0,
    )


def test_the_hindsight_sweep_marks_the_cheapest_meeting_the_share_of_all_tokens() -> None:
    points = [
        Point({"targetConcurrency": "96"}, summary(2.28, 0.9813)),  # all 1.0 after 5 minutes
        Point({"targetConcurrency": "80"}, summary(2.36, 0.9977)),
        Point({"targetConcurrency": "8"}, summary(15.2, 1.0)),
    ]
    marked = {p.setting["targetConcurrency"]: p.cheapest_meeting_slo for p in mark(points, 0.99)}
    assert marked == {"96": False, "80": True, "8": False}
    # Scored without an objective, the wait's share decides as before (0.98 < 0.99: none).
    plain = [Point({"targetConcurrency": "8"}, summary(15.2, None))]
    assert not mark(plain, 0.99)[0].cheapest_meeting_slo
