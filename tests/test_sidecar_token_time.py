"""Token time from Triton's metrics (sidecar.token_time): what one scrape says, what
successive scrapes add up to, and what a report write carries.

Pages are as the servers print them: the TensorRT-LLM backend's gauges through the
stand-in's exposition (labels sorted, counters without _total), the vLLM backend's
histogram as Triton's Python backend prints it (no buckets read).
"""

from __future__ import annotations

import pytest
import redis

from scaler.demo.triton_standin import ModelFigures, TritonStandIn, TrtFigures, exposition
from scaler.local_redis import LocalRedis
from scaler.token_curve import Decoded, TokenCurve
from sidecar.reporter import MAX_BACKOFF_S, TickResult, token_time_sources
from sidecar.token_time import DecodedTally
from sidecar.triton_metrics import parse_exposition
from tests.test_sidecar_reporter import KEYS, run, sidecar

T0_US = 1_750_000_000_000_000  # an iteration's time stamp, microseconds since the epoch


def trt_page(
    counter: float | None,
    stamp_us: float | None,
    generation: float | None = None,
    active: float = 4,
    model: str = "tensorrt_llm",
) -> str:
    figures = TrtFigures(
        active=active, iteration_counter=counter, timestamp=stamp_us, generation=generation
    )
    return exposition({model: ModelFigures(trt=figures)})


def vllm_page(
    running: float, count: float | None, total_s: float | None, as_counters: bool = False
) -> str:
    labels = '{model="vllm_model",version="1"}'
    lines = [
        "# HELP nv_inference_pending_request_count Instantaneous number of pending requests.",
        "# TYPE nv_inference_pending_request_count gauge",
        f"nv_inference_pending_request_count{labels} 0",
        "# HELP vllm:num_requests_running Number of requests currently running on GPU.",
        "# TYPE vllm:num_requests_running gauge",
        f"vllm:num_requests_running{labels} {running}",
    ]
    name = "vllm:time_per_output_token_seconds"
    if count is not None and total_s is not None:
        if as_counters:
            lines += [f"# TYPE {name}_count counter", f"{name}_count{labels} {count}"]
            lines += [f"# TYPE {name}_sum counter", f"{name}_sum{labels} {total_s}"]
        else:
            lines += [
                f"# HELP {name} Histogram of time per output token in seconds.",
                f"# TYPE {name} histogram",
                f"{name}_count{labels} {count}",
                f"{name}_sum{labels} {total_s}",
                f'{name}_bucket{{le="0.01",model="vllm_model",version="1"}} 0',
                f'{name}_bucket{{le="+Inf",model="vllm_model",version="1"}} {count}',
            ]
    return "\n".join(lines) + "\n"


def tally_of(pages: list[str], engines: frozenset[str] | None = None) -> Decoded | None:
    tally = DecodedTally()
    for page in pages:
        sample = parse_exposition(page)
        tally.observe(sample, engines if engines is not None else sample.model_names())
    return tally.pending()


def close(decoded: Decoded | None, sequences: float, steps: float, seconds: float) -> bool:
    return decoded is not None and all(
        got == pytest.approx(want)
        for got, want in zip(
            (decoded.sequences, decoded.steps, decoded.seconds),
            (sequences, steps, seconds),
            strict=True,
        )
    )


def test_the_pages_give_the_iteration_and_token_figures() -> None:
    trt = parse_exposition(trt_page(120, T0_US, generation=3)).trt[("tensorrt_llm", "1")]
    assert (trt.iteration_counter, trt.timestamp, trt.generation) == (120, T0_US, 3)
    vllm = parse_exposition(vllm_page(5, 400, 8.5)).vllm[("vllm_model", "1")]
    assert (vllm.running, vllm.token_intervals, vllm.token_seconds) == (5, 400, 8.5)
    counters = parse_exposition(vllm_page(5, 400, 8.5, as_counters=True))
    assert counters.vllm[("vllm_model", "1")].token_intervals == 400


def test_trt_llm_steps_and_seconds_from_the_counter_and_the_time_stamp() -> None:
    """The first interval is a baseline (it may start after idle time); then 30 steps in
    0.6 s with 3 and 5 sequences generating at its two ends: 20 ms a step, 4 sequences."""
    pages = [
        trt_page(100, T0_US, generation=3),
        trt_page(110, T0_US + 200_000, generation=3),
        trt_page(140, T0_US + 800_000, generation=5),
    ]
    assert close(tally_of(pages), 4, 30, 0.6)
    assert tally_of(pages[:2]) is None  # a baseline interval only
    decoded = tally_of(pages)
    assert decoded is not None and decoded.token_ms == pytest.approx(20.0)


def test_trt_llm_without_generation_requests_counts_the_active_requests() -> None:
    pages = [trt_page(0, T0_US, active=2), trt_page(5, T0_US + 1e5, active=2)]
    pages.append(trt_page(15, T0_US + 3e5, active=6))
    assert close(tally_of(pages), 4, 10, 0.2)


def test_trt_llm_time_stamps_in_whole_seconds_from_older_backends() -> None:
    stamp = T0_US / 1e6
    pages = [trt_page(0, stamp, 8), trt_page(50, stamp + 1, 8), trt_page(150, stamp + 3, 8)]
    assert close(tally_of(pages), 8, 100, 2.0)


def test_trt_llm_idle_time_is_never_counted_as_a_step() -> None:
    """The counter stood still (no request: the engine does not iterate), so the next
    iteration's stamp is after the idle time: that interval is a baseline."""
    pages = [
        trt_page(0, T0_US, 2),
        trt_page(10, T0_US + 100_000, 2),
        trt_page(20, T0_US + 200_000, 2),  # 10 steps, 0.1 s
        trt_page(20, T0_US + 200_000, 2),  # idle
        trt_page(21, T0_US + 60_000_000, 2),  # one step after a minute of idle
        trt_page(31, T0_US + 60_100_000, 2),  # 10 steps, 0.1 s
    ]
    assert close(tally_of(pages), 2, 20, 0.2)


def test_trt_llm_restart_rebases_and_nothing_is_negative() -> None:
    pages = [
        trt_page(0, T0_US, 1),
        trt_page(500, T0_US + 5e6, 1),
        trt_page(1000, T0_US + 10e6, 1),  # 500 steps, 5 s
        trt_page(3, T0_US + 12e6, 1),  # the server restarted: a baseline
        trt_page(13, T0_US + 12.1e6, 1),  # a baseline too: after the standstill of a restart
        trt_page(23, T0_US + 12.2e6, 1),  # 10 steps, 0.1 s
    ]
    assert close(tally_of(pages), 1, 510, 5.1)


def test_missing_families_and_plain_triton_decode_nothing() -> None:
    assert tally_of([trt_page(0, None), trt_page(10, None), trt_page(20, None)]) is None
    assert tally_of([trt_page(None, T0_US), trt_page(None, T0_US + 1e6)] * 2) is None
    assert tally_of([vllm_page(4, None, None), vllm_page(4, None, None)]) is None
    # Plain Triton: only the inference counters.
    page = exposition({"plain": ModelFigures(success=3, request_duration_us=1e6)})
    assert tally_of([page, page.replace(" 3\n", " 9\n")]) is None
    assert "none: no selected engine" in token_time_sources(parse_exposition(page), frozenset())


def test_only_the_selected_engines_count() -> None:
    pages = [trt_page(0, T0_US, 1), trt_page(10, T0_US + 1e5, 1), trt_page(20, T0_US + 2e5, 1)]
    assert tally_of(pages, frozenset({"another"})) is None
    assert close(tally_of(pages, frozenset({"tensorrt_llm"})), 1, 10, 0.1)


def test_vllm_steps_are_tokens_over_the_sequences_running() -> None:
    """400 tokens with 4 sequences running: 100 steps; 8 s of inter-token time over 400
    tokens is 20 ms a token, so the 100 steps took 2 s."""
    pages = [vllm_page(4, 1000, 20.0), vllm_page(4, 1400, 28.0)]
    decoded = tally_of(pages)
    assert close(decoded, 4, 100, 2.0)
    assert decoded is not None and decoded.token_ms == pytest.approx(20.0)
    as_counters = [vllm_page(4, 1000, 20.0, True), vllm_page(4, 1400, 28.0, True)]
    assert close(tally_of(as_counters), 4, 100, 2.0)


def test_vllm_mean_of_the_running_gauge_and_a_reset() -> None:
    pages = [
        vllm_page(2, 100, 1.0),
        vllm_page(6, 500, 9.0),  # 400 tokens at 4 running: 100 steps, 2 s
        vllm_page(6, 20, 0.4),  # restarted: a baseline
        vllm_page(0, 20, 0.4),  # nothing decoded
        vllm_page(0, 30, 0.6),  # tokens, but no sample says how many ran: left out
        vllm_page(1, 60, 1.2),  # 30 tokens, at least one sequence: 30 steps, 0.6 s
    ]
    assert close(tally_of(pages), (4 * 100 + 1 * 30) / 130, 130, 2.6)


def test_a_failed_write_keeps_what_was_decoded_and_a_rebase_keeps_it_too() -> None:
    tally = DecodedTally()
    for page in (vllm_page(4, 0, 0.0), vllm_page(4, 400, 8.0)):
        tally.observe(parse_exposition(page), {"vllm_model"})
    first = tally.pending()
    tally.rebase()  # Triton went away: the next sample is a baseline
    tally.observe(parse_exposition(vllm_page(4, 10, 0.2)), {"vllm_model"})
    assert tally.pending() == first  # nothing lost, nothing invented
    tally.observe(parse_exposition(vllm_page(4, 410, 8.2)), {"vllm_model"})
    both = tally.pending()
    assert close(both, 4, 200, 4.0)
    tally.written(both)
    assert tally.pending() is None


def test_each_write_adds_what_was_decoded_once_even_across_a_failed_write(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    """The curve in Redis gets every step once: what a failed write carried is added by
    the next successful one."""
    triton = TritonStandIn().start()

    def iterated(counter: float, seconds: float) -> None:
        trt = TrtFigures(active=8, max=8, iteration_counter=counter, generation=8)
        trt.timestamp = T0_US + seconds * 1e6
        triton.set_models({"tensorrt_llm": ModelFigures(trt=trt)})

    def curve() -> TokenCurve:
        return TokenCurve.from_fields(redis_client.hgetall(KEYS.tokens))  # type: ignore[arg-type]

    iterated(0, 0.0)
    triton.set_ready(models=("tensorrt_llm",))

    async def scenario() -> None:
        async with sidecar(triton, redis_server.url, models=("tensorrt_llm",)) as car:
            assert await car.tick() is TickResult.WROTE
            iterated(100, 1.0)
            assert await car.tick(1.0) is TickResult.WROTE  # a baseline interval
            iterated(200, 2.0)
            redis_server.kill()
            try:
                assert await car.tick(1.0) is TickResult.REDIS_FAILED
            finally:
                redis_server.start()
            iterated(300, 3.0)
            car.clock.advance(MAX_BACKOFF_S)
            assert await car.tick() is TickResult.WROTE
            (point,) = [p for p in curve().bins.values()]
            assert (point.weight, point.sequences_sum, point.ms_sum) == pytest.approx(
                (200, 8 * 200, 10.0 * 200)
            )

    try:
        run(scenario)
    finally:
        triton.stop()
