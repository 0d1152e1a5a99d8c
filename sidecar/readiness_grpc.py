"""Readiness over Triton's gRPC API (`TRITON_READINESS=grpc`): ServerReady and ModelReady.

Imported only when chosen (grpc costs about 20 MB of RSS). Two unary calls of Triton's
`inference.GRPCInferenceService`, made with grpc.aio directly rather than through
tritonclient, which would bring numpy into every sidecar. Their messages are
protobuf's own well-known types, identical on the wire to Triton's: ServerReadyRequest
is empty (`Empty`); ModelReadyRequest is `string name = 1` with an empty `version = 2`
(`StringValue`); both responses are `bool ready = 1` (`BoolValue`). The stand-in Triton
of the tests answers with tritonclient's own generated servicer, which keeps them honest.

Model configurations (ModelConfig) come back in Triton's ModelConfigResponse, a large
message of which the sidecar reads five fields; `_MODEL_CONFIG` declares just those, with
Triton's field numbers (protobuf skips the rest on the wire), and tests/test_sidecar_grpc_
config.py holds them to tritonclient's own descriptors.

A server that does not answer is `TritonUnavailable`, distinct from one that answers
"not ready": the first is missing data, the second is a pod that is starting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.empty_pb2 import Empty
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.wrappers_pb2 import BoolValue, StringValue

from sidecar.readiness_types import Readiness, TritonUnavailable

_SERVICE = "/inference.GRPCInferenceService"
# The codes of a server that cannot be reached; any other error on ModelReady is an
# answer about that model (not in the repository, say): not ready.
_UNREACHABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
)


# (message, [(field, number, type, message type or "", repeated)]): the part of Triton's
# ModelConfigResponse (grpc_service.proto, model_config.proto) the sidecar reads.
_STRING, _BOOL, _MESSAGE, _INT32 = (
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
    descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
)
_MODEL_CONFIG = (
    ("Step", [("model_name", 1, _STRING, "", False)]),
    ("ModelEnsembling", [("step", 1, _MESSAGE, "Step", True)]),
    ("ModelTransactionPolicy", [("decoupled", 1, _BOOL, "", False)]),
    ("ModelInstanceGroup", [("count", 2, _INT32, "", False), ("gpus", 3, _INT32, "", True)]),
    (
        "ModelConfig",
        [
            ("name", 1, _STRING, "", False),
            ("platform", 2, _STRING, "", False),
            ("instance_group", 7, _MESSAGE, "ModelInstanceGroup", True),
            ("ensemble_scheduling", 15, _MESSAGE, "ModelEnsembling", False),
            ("backend", 17, _STRING, "", False),
            ("model_transaction_policy", 19, _MESSAGE, "ModelTransactionPolicy", False),
        ],
    ),
    ("ModelConfigResponse", [("config", 1, _MESSAGE, "ModelConfig", False)]),
)
_PACKAGE = "llm_sidecar.triton_subset"  # its own pool: no clash with tritonclient's names


def _model_config_response() -> type[Message]:
    file = descriptor_pb2.FileDescriptorProto(
        name="llm_sidecar_triton_subset.proto", package=_PACKAGE, syntax="proto3"
    )
    for message, fields in _MODEL_CONFIG:
        proto = file.message_type.add(name=message)
        for name, number, kind, type_name, repeated in fields:
            proto.field.add(
                name=name,
                number=number,
                type=kind,
                type_name=f".{_PACKAGE}.{type_name}" if type_name else None,
                label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
                if repeated
                else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
            )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_PACKAGE}.ModelConfigResponse")
    )


ModelConfigResponse = _model_config_response()


class GrpcReadinessProbe:
    """Asks one Triton server: is it ready, and is every model in `models` ready?"""

    def __init__(self, grpc_url: str, models: tuple[str, ...], timeout_s: float) -> None:
        self._url = grpc_url
        self._models = models
        self._timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None

    def _method(
        self, name: str, request: Callable[[Any], bytes], response: Callable[[bytes], Any]
    ) -> Any:
        """One unary call of Triton's service. The channel is created on first use (a
        grpc.aio channel binds to the running loop) and again after a failure: a channel
        that failed to connect waits out a growing reconnect backoff (up to minutes), and a
        restarted Triton must be seen at once."""
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self._url)
        return self._channel.unary_unary(
            f"{_SERVICE}/{name}", request_serializer=request, response_deserializer=response
        )

    async def check(self) -> Readiness:
        server_ready = self._method("ServerReady", Empty.SerializeToString, BoolValue.FromString)
        try:
            answer: BoolValue = await server_ready(Empty(), timeout=self._timeout_s)
            if not answer.value:
                return Readiness(server_ready=False, models_not_ready=self._models)
            not_ready = [m for m in self._models if not await self._model_ready(m)]
        except grpc.aio.AioRpcError as exc:
            await self.close()
            if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TritonUnavailable(
                    f"triton at {self._url} did not answer within {self._timeout_s:g} s"
                ) from None
            raise TritonUnavailable(f"triton at {self._url}: {_short(exc)}") from None
        return Readiness(server_ready=True, models_not_ready=tuple(not_ready))

    async def model_config(self, model: str) -> Mapping[str, Any]:
        """The model's configuration, in the JSON shape Triton's HTTP API answers with."""
        # ModelConfigRequest is `string name = 1`, `string version = 2`, as ModelReady's.
        model_config = self._method(
            "ModelConfig", StringValue.SerializeToString, ModelConfigResponse.FromString
        )
        try:
            answer = await model_config(StringValue(value=model), timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            await self.close()
            raise TritonUnavailable(
                f"triton at {self._url}: config of {model}: {_short(exc)}"
            ) from None
        config = MessageToDict(answer, preserving_proto_field_name=True).get("config", {})
        return config if isinstance(config, dict) else {}

    async def _model_ready(self, model: str) -> bool:
        model_ready = self._method(
            "ModelReady", StringValue.SerializeToString, BoolValue.FromString
        )
        try:
            answer: BoolValue = await model_ready(StringValue(value=model), timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            # A server that answers about the server but errs about one model is up:
            # that model is not ready, the pod is starting.
            if exc.code() in _UNREACHABLE:
                raise
            return False
        return answer.value

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            with contextlib.suppress(Exception):  # closing a broken channel: nothing to save
                await channel.close(None)


def _short(exc: grpc.aio.AioRpcError) -> str:
    # The details can carry a multi-line debug string; the first line says it.
    text = f"{exc.code().name}: {exc.details() or ''}".strip().splitlines()
    return text[0][:300]
