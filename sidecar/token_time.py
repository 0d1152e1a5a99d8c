"""What this pod decoded since its last report write. Pure: no I/O, no clock.

The scaler learns the token-time curve (`scaler.token_curve`: how long a decode step
takes with B sequences decoded together) from every write's `Decoded`: the decode steps
the pod's engines ran since its previous successful write, the seconds they took, and the
sequences they decoded together on average. Both engines with an LLM scheduler publish
what it takes, of the models in `Selection.engines`:

TensorRT-LLM (`nv_trt_llm_general_metrics`, `nv_trt_llm_inflight_batcher_metrics`,
`nv_trt_llm_request_metrics`; the backend copies the executor's latest iteration stats
into these gauges every `stats_check_period_ms`, 100 ms by default):
  steps   = the change of general_type="iteration_counter": the executor's iteration
            number, one per forward pass of the in-flight batch;
  seconds = the change of general_type="timestamp", the same iteration's time stamp:
            microseconds since the epoch (backends since 2024), whole seconds before
            (told apart by size; whole seconds are exact only over many seconds);
  sequences = the in-flight batcher's generation_requests (sequences in their
            generation phase in the iteration), else request_type="active" (a V1
            model): the mean of its samples at the interval's two ends.
  What the counter counts biases the time a step upwards, never down: an iteration
  also runs the context phase (prefill) of requests that join, and some run with no
  generation request at all (context only), so the measured step includes prefill work
  the decode curve does not; that is the time the decoding sequences wait for their
  next token, so it is what a token-latency objective has to count. An engine with no
  request does not iterate: the counter and the time stamp stand still, and the next
  iteration's stamp is after the idle time. So an interval counts only when the counter
  moved in it and in the interval before it (the engine iterated throughout); the first
  one after a standstill is a new baseline, and a step longer than MAX_STEP_S (a clock
  change in the stamp's local-time conversion) is dropped as one.

vLLM (Triton's vLLM backend, labels model/version):
  `vllm:time_per_output_token_seconds` is a histogram with one observation per output
  token after a request's first (the time since that request's previous token): the
  change of its _count is tokens, of its _sum their seconds.
  sequences = `vllm:num_requests_running`, the mean of its samples at the interval's
  two ends (at least 1 when tokens were decoded; an interval whose two samples are 0
  says nothing of how many decoded together and is left out);
  steps = tokens / sequences (each step gives one token to each running sequence);
  seconds = steps x (sum / count).

Plain Triton (neither): nothing, `pending` is None, never a zero passed off as data.

Rules, as for `sidecar.served`: a delta is between two successive samples of one model
version; the first sample of a version, one whose counters went down (Triton restarted,
the model reloaded) and the first after `rebase` are baselines, never deltas; a version
missing from a sample loses its baseline. Deltas accumulate over the selected engines
(normally one) until a write that carries them succeeds (`written`); a failed write keeps
them for the next.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, replace

from scaler.token_curve import Decoded
from sidecar.triton_metrics import ModelKey, TritonSample, TrtModel, VllmModel

MAX_STEP_S = 10.0  # no decode step takes this long: a longer one spans something else
# A TensorRT-LLM time stamp above this is in microseconds (1e14 us is 1973; 1e14 s is
# three million years from now).
MICROSECONDS_ABOVE = 1e14


@dataclass(frozen=True)
class _Iteration:
    counter: float
    stamp: float  # the time stamp as published (microseconds or seconds: whole numbers)
    second: float  # one second in the stamp's unit
    sequences: float
    moved: bool  # the counter moved since the sample before: the engine was iterating


@dataclass(frozen=True)
class _Tokens:
    intervals: float
    seconds: float
    running: float


class DecodedTally:
    """Decode steps, their seconds and sequences since the last successful write."""

    def __init__(self) -> None:
        self._iterations: dict[ModelKey, _Iteration] = {}
        self._tokens: dict[ModelKey, _Tokens] = {}
        self._steps = 0.0
        self._seconds = 0.0
        self._sequence_steps = 0.0  # sum of sequences x steps

    def observe(self, sample: TritonSample, engines: Collection[str]) -> None:
        """Adds what the versions of `engines` decoded since their previous sample."""
        iterations: dict[ModelKey, _Iteration] = {}
        for key, trt in sample.trt.items():
            now = _iteration(trt) if key[0] in engines else None
            if now is not None:
                iterations[key] = self._iterated(self._iterations.get(key), now)
        self._iterations = iterations
        tokens: dict[ModelKey, _Tokens] = {}
        for key, vllm in sample.vllm.items():
            seen = _tokens(vllm) if key[0] in engines else None
            if seen is not None:
                before = self._tokens.get(key)
                if before is not None:
                    self._decoded_tokens(before, seen)
                tokens[key] = seen
        self._tokens = tokens

    def rebase(self) -> None:
        """Triton went away: its next samples are baselines. What is pending stays."""
        self._iterations.clear()
        self._tokens.clear()

    def pending(self) -> Decoded | None:
        """What the next write carries; None while nothing was decoded."""
        if self._steps <= 0 or self._seconds <= 0:
            return None
        return Decoded(self._sequence_steps / self._steps, self._steps, self._seconds)

    def written(self, decoded: Decoded | None) -> None:
        """`decoded`, the latest `pending`, is stored: counting starts again from zero."""
        if decoded is not None:
            self._steps = self._seconds = self._sequence_steps = 0.0

    def _iterated(self, before: _Iteration | None, now: _Iteration) -> _Iteration:
        """`now` as the next baseline, adding the steps since `before` when they count."""
        if before is None or now.counter < before.counter or now.stamp < before.stamp:
            return now  # a baseline: the first sample, or the engine started again
        steps = now.counter - before.counter
        if steps == 0:
            return replace(before, moved=False)  # no iteration: idle, or scraped too soon
        # The difference first, in the stamp's own unit: exact.
        seconds = (now.stamp - before.stamp) / now.second
        moved = replace(now, moved=True)
        if not before.moved or now.second != before.second or seconds > MAX_STEP_S * steps:
            return moved  # it may span idle time (or a clock change): a baseline
        self._add(steps, seconds, (before.sequences + now.sequences) / 2)
        return moved

    def _decoded_tokens(self, before: _Tokens, now: _Tokens) -> None:
        intervals = now.intervals - before.intervals
        seconds = now.seconds - before.seconds
        running = (before.running + now.running) / 2
        if intervals <= 0 or seconds < 0 or running <= 0:
            return  # nothing decoded, the counters started again, or no sequence seen
        sequences = max(1.0, running)
        steps = intervals / sequences
        self._add(steps, seconds / sequences, sequences)

    def _add(self, steps: float, seconds: float, sequences: float) -> None:
        if steps > 0 and seconds > 0 and sequences > 0:
            self._steps += steps
            self._seconds += seconds
            self._sequence_steps += sequences * steps


def _iteration(trt: TrtModel) -> _Iteration | None:
    counter, stamp = trt.iteration_counter, trt.timestamp
    if counter is None or stamp is None or not math.isfinite(counter + stamp):
        return None
    second = 1e6 if stamp > MICROSECONDS_ABOVE else 1.0
    sequences = trt.generation if trt.generation is not None else trt.active
    return _Iteration(counter, stamp, second, sequences, False)


def _tokens(vllm: VllmModel) -> _Tokens | None:
    if vllm.token_intervals is None or vllm.token_seconds is None:
        return None
    if not math.isfinite(vllm.token_intervals + vllm.token_seconds + vllm.running):
        return None
    return _Tokens(vllm.token_intervals, vllm.token_seconds, vllm.running)
