"""A decoupled Python-backend model that behaves as Triton's vLLM backend does for load:
requests run in threads, at most `max_running` at once (the others wait inside the
model), and the backend's gauges `vllm:num_requests_running`, `vllm:num_requests_waiting`
and `vllm:gpu_cache_usage_perc` are published through the custom metrics API
(`pb_utils.MetricFamily`) with the vLLM backend's labels (model, version). With the
parameter `gauges` "none" it publishes nothing: a decoupled model Triton alone counts.
"""

import json
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        labels = {"model": args["model_name"], "version": args["model_version"]}
        parameters = json.loads(args["model_config"])["parameters"]
        self.max_running = int(parameters["max_running"]["string_value"])
        # A Metric must not outlive its MetricFamily: both are kept.
        self.families = []

        def gauge(name, description):
            family = pb_utils.MetricFamily(
                name=name, description=description, kind=pb_utils.MetricFamily.GAUGE
            )
            self.families.append(family)
            return family.Metric(labels=labels)

        self.gauges = parameters["gauges"]["string_value"] != "none"
        if self.gauges:
            self.running_gauge = gauge("vllm:num_requests_running", "Requests running.")
            self.waiting_gauge = gauge("vllm:num_requests_waiting", "Requests waiting.")
            self.cache_gauge = gauge("vllm:gpu_cache_usage_perc", "KV-cache usage, 1 is 100 %.")
        self.lock = threading.Lock()
        self.slots = threading.Semaphore(self.max_running)
        self.running = 0
        self.waiting = 0

    def _moved(self, running, waiting):
        with self.lock:
            self.running += running
            self.waiting += waiting
            if not self.gauges:
                return
            self.running_gauge.set(self.running)
            self.waiting_gauge.set(self.waiting)
            self.cache_gauge.set(self.running / self.max_running)

    def _serve(self, seconds, sender):
        self._moved(0, 1)
        with self.slots:
            self._moved(1, -1)
            time.sleep(float(seconds[0]))
            self._moved(-1, 0)
        output = pb_utils.Tensor("SLEPT_S", seconds)
        sender.send(
            pb_utils.InferenceResponse([output]),
            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
        )

    def execute(self, requests):
        for request in requests:
            seconds = pb_utils.get_input_tensor_by_name(request, "DURATION_S").as_numpy()
            sender = request.get_response_sender()
            threading.Thread(
                target=self._serve, args=(seconds.astype(np.float32), sender), daemon=True
            ).start()
        return None
