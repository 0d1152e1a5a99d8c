"""A decoupled Python-backend model that streams: CHUNKS responses, DURATION_S apart in all.

Each response carries SLEPT_S = its index; the last is flagged final. Over Triton's
`generate_stream` each response is one server-sent event, as an LLM's tokens are.
"""

import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

CHUNKS = 3


class TritonPythonModel:
    def _serve(self, seconds, sender):
        for index in range(CHUNKS):
            time.sleep(seconds / CHUNKS)
            output = pb_utils.Tensor("SLEPT_S", np.array([index], dtype=np.float32))
            sender.send(pb_utils.InferenceResponse([output]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def execute(self, requests):
        for request in requests:
            seconds = pb_utils.get_input_tensor_by_name(request, "DURATION_S").as_numpy()
            sender = request.get_response_sender()
            threading.Thread(
                target=self._serve, args=(float(seconds[0]), sender), daemon=True
            ).start()
        return None
