"""A plain (not decoupled) Python-backend model: each request sleeps DURATION_S seconds.

Triton runs one `execute` per model instance at a time, so the instance count is how
many requests it executes at once; the others wait in Triton's queue (pending).
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            seconds = pb_utils.get_input_tensor_by_name(request, "DURATION_S").as_numpy()
            time.sleep(float(seconds[0]))
            output = pb_utils.Tensor("SLEPT_S", seconds.astype(np.float32))
            responses.append(pb_utils.InferenceResponse([output]))
        return responses
