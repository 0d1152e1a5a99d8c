"""Forwarding one queued request to this pod's Triton, and the engine's answer as reply events.

- KServe v2 infer goes through tritonclient's async HTTP client: the JSON body the client sent
  is parsed into InferInput / InferRequestedOutput, and the result is written back as KServe v2
  JSON. Triton's own errors keep Triton's status and message (an unknown model: 400, as
  Triton's HTTP server answers it), so the client sees what calling Triton directly gives.
- generate / generate_stream go to Triton's HTTP port, the OpenAI routes to the OpenAI
  frontend (`OPENAI_URL`), over aiohttp; a streamed answer (text/event-stream) is relayed
  event by event as the engine sends it.

The engine never raises for a request: every outcome is an event (`Full`, or `Head` then
`Chunk`s, or `Failed` at any point), so the worker always has something to answer with.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
import tritonclient.http.aio as triton_http
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from gateway.contract import Kind, QueuedRequest

log = logging.getLogger(__name__)

# Headers that describe one hop, not the request: aiohttp sets its own.
_HOP_HEADERS = frozenset(
    {"host", "content-length", "connection", "transfer-encoding", "keep-alive", "te", "upgrade"}
)
SSE = "text/event-stream"


@dataclass(frozen=True)
class Full:
    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class Head:
    status: int
    content_type: str


@dataclass(frozen=True)
class Chunk:
    data: bytes


@dataclass(frozen=True)
class Failed:
    status: int
    reason: str


Event = Full | Head | Chunk | Failed


class BadRequest(ValueError):
    """The request body cannot be turned into a Triton request; the message names the field."""


class Engine:
    """Triton's KServe v2 API (tritonclient) and its HTTP routes (aiohttp), one pool each."""

    def __init__(self, triton_http_url: str, openai_url: str) -> None:
        self._http_url = triton_http_url.rstrip("/")
        self._openai_url = openai_url.rstrip("/")
        # tritonclient takes host:port, without the scheme.
        self._infer = triton_http.InferenceServerClient(
            self._http_url.removeprefix("http://"), conn_limit=1000
        )
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        await self._infer.close()
        if self._session is not None:
            await self._session.close()

    async def run(self, request: QueuedRequest) -> AsyncIterator[Event]:
        if request.kind is Kind.INFER:
            yield await self._run_infer(request)
            return
        base = self._openai_url if request.kind is Kind.OPENAI else self._http_url
        async for event in self._relay(base + request.path, request):
            yield event

    async def _run_infer(self, request: QueuedRequest) -> Event:
        try:
            body = json.loads(request.body)
            inputs, outputs, request_id, parameters = parse_infer(body)
        except (ValueError, UnicodeDecodeError) as exc:
            # The wording Triton's HTTP server uses for a body it cannot read.
            return Full(400, "application/json", _error_body(f"failed to parse the request: {exc}"))
        try:
            result = await self._infer.infer(
                request.model,
                inputs,
                model_version=request.version,
                outputs=outputs,
                request_id=request_id,
                parameters=parameters,
            )
        except InferenceServerException as exc:
            status = int(exc.status()) if (exc.status() or "").isdigit() else 500
            return Full(status, "application/json", _error_body(exc.message()))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return Failed(502, f"the pod's Triton did not answer: {exc or type(exc).__name__}")
        return Full(200, "application/json", json.dumps(infer_response(result)).encode())

    async def _relay(self, url: str, request: QueuedRequest) -> AsyncIterator[Event]:
        if self._session is None:
            # No total bound: a generation runs as long as it runs (the deadline is checked
            # before it starts); only connecting is bounded.
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
            self._session = aiohttp.ClientSession(timeout=timeout)
        try:
            async with self._session.post(
                url, data=request.body, headers=_forwarded(request)
            ) as answer:
                content_type = answer.headers.get("Content-Type", "application/json")
                if not (request.stream and content_type.startswith(SSE) and answer.status < 300):
                    yield Full(answer.status, content_type, await answer.read())
                    return
                yield Head(answer.status, content_type)
                pending = b""
                async for data in answer.content.iter_any():
                    pending += data
                    # One chunk per complete event, as the engine wrote it.
                    *events, pending = pending.split(b"\n\n")
                    for event in events:
                        yield Chunk(event + b"\n\n")
                if pending:
                    yield Chunk(pending)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            yield Failed(502, f"the pod's engine failed: {exc or type(exc).__name__}")


def _forwarded(request: QueuedRequest) -> dict[str, str]:
    try:
        headers = json.loads(request.headers) if request.headers else {}
    except ValueError:
        headers = {}
    kept = {
        str(k): str(v)
        for k, v in (headers.items() if isinstance(headers, Mapping) else ())
        if str(k).lower() not in _HOP_HEADERS
    }
    kept["Content-Type"] = request.content_type or "application/json"
    return kept


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def parse_infer(
    body: Any,
) -> tuple[
    list[triton_http.InferInput],
    list[triton_http.InferRequestedOutput] | None,
    str,
    dict[str, Any] | None,
]:
    """A KServe v2 JSON request as tritonclient's inputs, outputs, id and parameters.

    Raises BadRequest naming the field and what was expected."""
    if not isinstance(body, Mapping):
        raise BadRequest("the body must be a JSON object")
    raw_inputs = body.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("'inputs' must be a non-empty list")
    inputs = [_input(i, raw) for i, raw in enumerate(raw_inputs)]
    outputs: list[triton_http.InferRequestedOutput] | None = None
    if body.get("outputs") is not None:
        if not isinstance(body["outputs"], list):
            raise BadRequest("'outputs' must be a list")
        outputs = []
        for i, raw in enumerate(body["outputs"]):
            if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
                raise BadRequest(f"outputs[{i}].name must be a string")
            outputs.append(triton_http.InferRequestedOutput(raw["name"], binary_data=False))
    request_id = body.get("id", "")
    if not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    parameters = body.get("parameters")
    if parameters is not None and not isinstance(parameters, Mapping):
        raise BadRequest("'parameters' must be an object")
    return inputs, outputs, request_id, dict(parameters) if parameters else None


def _input(index: int, raw: Any) -> triton_http.InferInput:
    where = f"inputs[{index}]"
    if not isinstance(raw, Mapping):
        raise BadRequest(f"{where} must be an object")
    name, shape, datatype = raw.get("name"), raw.get("shape"), raw.get("datatype")
    if not isinstance(name, str):
        raise BadRequest(f"{where}.name must be a string")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BadRequest(f"{where}.shape must be a list of integers >= 0")
    if not isinstance(datatype, str) or triton_to_np_dtype(datatype) is None:
        raise BadRequest(f"{where}.datatype must be a KServe v2 datatype, e.g. FP32")
    if "data" not in raw:
        raise BadRequest(f"{where}.data is required (binary tensor data is not supported)")
    dtype = triton_to_np_dtype(datatype)
    try:
        if datatype == "BYTES":
            array = np.array(flat_data(raw["data"]), dtype=np.object_)
            array = np.array([_bytes(v) for v in array], dtype=np.object_)
        else:
            array = np.array(flat_data(raw["data"]), dtype=dtype)
        array = array.reshape(shape)
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"{where}.data does not fit shape {shape} of {datatype}: {exc}") from None
    tensor = triton_http.InferInput(name, shape, datatype)
    tensor.set_data_from_numpy(array, binary_data=False)
    return tensor


def flat_data(data: Any) -> list[Any]:
    """KServe v2 data is row-major, flat or nested."""
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    for item in data:
        flat.extend(flat_data(item) if isinstance(item, list) else [item])
    return flat


def _bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def infer_response(result: Any) -> dict[str, Any]:
    """tritonclient's InferResult as KServe v2 JSON, every output's data inline."""
    response = dict(result.get_response())
    outputs = []
    for output in response.get("outputs", []):
        array = result.as_numpy(output["name"])
        if array is None:
            data: list[Any] = []
        elif output.get("datatype") == "BYTES":
            data = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in array.flat]
        else:
            data = array.flatten().tolist()
        entry = {k: v for k, v in output.items() if k != "parameters"}
        params = {
            k: v for k, v in (output.get("parameters") or {}).items() if k != "binary_data_size"
        }
        if params:
            entry["parameters"] = params
        entry["data"] = data
        outputs.append(entry)
    response["outputs"] = outputs
    return response
