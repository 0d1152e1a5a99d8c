"""A plain Python-backend model with Triton's dynamic batcher: one `execute` runs a batch.

Triton hands an instance up to `max_batch_size` requests at once (those queued when the
instance is free, or more after `max_queue_delay_microseconds`); the batch sleeps as long
as its longest DURATION_S, once, as a GPU runs a batch in one pass, and every request of
it completes at the end. The instance count is how many batches execute at once.
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, "DURATION_S").as_numpy() for r in requests]
        time.sleep(max(float(seconds.max()) for seconds in inputs))
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("SLEPT_S", seconds.astype(np.float32))])
            for seconds in inputs
        ]
