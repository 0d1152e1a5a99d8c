"""A decoupled Python-backend model that decodes as an LLM engine with continuous batching
does, on a known step-time curve, and publishes what Triton's vLLM backend publishes of it.

A request (input OUTPUT_TOKENS) joins the batch at the next step, at most `max_running`
at once (the others wait). Each step gives one token to every sequence in the batch and
takes step_ms(B) = base_ms + per_sequence_ms x B, with B the sequences in it; a request
is answered (one final response) after its last token. Steps keep to a schedule (each
ends step_ms after the previous one's planned end), so a late wake-up shortens the next
sleep and the mean step is the curve's.

Published with the vLLM backend's names and labels (model, version):
`vllm:time_per_output_token_seconds`, a histogram with one observation per token after a
request's first (the time since its previous token), with the backend's buckets;
`vllm:num_requests_running` (the batch) and `vllm:num_requests_waiting`.
"""

import json
import threading
import time
from collections import deque

import numpy as np
import triton_python_backend_utils as pb_utils

TOKEN_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]


class TritonPythonModel:
    def initialize(self, args):
        labels = {"model": args["model_name"], "version": args["model_version"]}
        parameters = json.loads(args["model_config"])["parameters"]

        def number(name):
            return float(parameters[name]["string_value"])

        self.base_s = number("base_ms") / 1000.0
        self.per_sequence_s = number("per_sequence_ms") / 1000.0
        self.max_running = int(number("max_running"))
        # A Metric must not outlive its MetricFamily: both are kept.
        self.families = []

        def metric(name, description, kind, **extra):
            family = pb_utils.MetricFamily(name=name, description=description, kind=kind)
            self.families.append(family)
            return family.Metric(labels=labels, **extra)

        self.token_time = metric(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds.",
            pb_utils.MetricFamily.HISTOGRAM,
            buckets=TOKEN_BUCKETS,
        )
        gauge = pb_utils.MetricFamily.GAUGE
        self.running = metric("vllm:num_requests_running", "Requests running.", gauge)
        self.waiting = metric("vllm:num_requests_waiting", "Requests waiting.", gauge)
        self.lock = threading.Condition()
        self.queue = deque()
        self.batch = []
        self.stopped = False
        self.thread = threading.Thread(target=self._decode, daemon=True)
        self.thread.start()

    def _decode(self):
        planned_end = 0.0
        while True:
            with self.lock:
                while not self.queue and not self.batch and not self.stopped:
                    self.lock.wait()
                if self.stopped:
                    return
                while self.queue and len(self.batch) < self.max_running:
                    self.batch.append(self.queue.popleft())
                sequences = len(self.batch)
                self.running.set(sequences)
                self.waiting.set(len(self.queue))
            step_s = self.base_s + self.per_sequence_s * sequences
            now = time.monotonic()
            if now - planned_end > step_s:
                planned_end = now + step_s  # a new schedule after idle or a stall
            else:
                planned_end += step_s
            time.sleep(max(0.0, planned_end - now))
            ended = time.monotonic()
            for sequence in self.batch:  # only this thread changes the batch
                if sequence["last_token_at"] is not None:
                    self.token_time.observe(ended - sequence["last_token_at"])
                sequence["last_token_at"] = ended
                sequence["left"] -= 1
            finished = [s for s in self.batch if s["left"] <= 0]
            with self.lock:
                self.batch = [s for s in self.batch if s["left"] > 0]
            for sequence in finished:
                output = pb_utils.Tensor("OUTPUT_TOKENS", np.array([sequence["tokens"]], np.int32))
                sequence["sender"].send(
                    pb_utils.InferenceResponse([output]),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )

    def execute(self, requests):
        with self.lock:
            for request in requests:
                tokens = pb_utils.get_input_tensor_by_name(request, "OUTPUT_TOKENS").as_numpy()
                count = max(1, int(tokens.reshape(-1)[0]))
                self.queue.append(
                    {
                        "tokens": count,
                        "left": count,
                        "last_token_at": None,
                        "sender": request.get_response_sender(),
                    }
                )
            self.waiting.set(len(self.queue))
            self.lock.notify()
        return None

    def finalize(self):
        with self.lock:
            self.stopped = True
            self.lock.notify()
        self.thread.join(5)
