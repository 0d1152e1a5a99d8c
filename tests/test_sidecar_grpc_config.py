"""The sidecar's subset of Triton's ModelConfigResponse reads Triton's own messages right."""

from __future__ import annotations

import pytest

from sidecar.readiness_grpc import _MODEL_CONFIG, ModelConfigResponse
from sidecar.selection import ModelConfig

triton = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import model_config_pb2, service_pb2  # noqa: E402


def test_every_field_has_tritons_number() -> None:
    theirs = {
        "Step": model_config_pb2.ModelEnsembling.Step,
        "ModelEnsembling": model_config_pb2.ModelEnsembling,
        "ModelTransactionPolicy": model_config_pb2.ModelTransactionPolicy,
        "ModelInstanceGroup": model_config_pb2.ModelInstanceGroup,
        "ModelConfig": model_config_pb2.ModelConfig,
        "ModelConfigResponse": service_pb2.ModelConfigResponse,
    }
    for message, fields in _MODEL_CONFIG:
        for name, number, _, _, _ in fields:
            assert theirs[message].DESCRIPTOR.fields_by_name[name].number == number, name


def test_an_ensemble_over_a_decoupled_engine_reads_as_tritons_json_says() -> None:
    config = model_config_pb2.ModelConfig(
        name="ensemble",
        platform="ensemble",
        max_batch_size=8,  # a field the subset does not declare: skipped on the wire
        ensemble_scheduling=model_config_pb2.ModelEnsembling(
            step=[
                model_config_pb2.ModelEnsembling.Step(model_name="preprocessing"),
                model_config_pb2.ModelEnsembling.Step(model_name="tensorrt_llm"),
            ]
        ),
    )
    wire = service_pb2.ModelConfigResponse(config=config).SerializeToString()
    from google.protobuf.json_format import MessageToDict

    read = MessageToDict(ModelConfigResponse.FromString(wire), preserving_proto_field_name=True)
    assert ModelConfig.from_json("ensemble", read["config"]) == ModelConfig(
        "ensemble", ("preprocessing", "tensorrt_llm"), False
    )
    engine = model_config_pb2.ModelConfig(
        name="tensorrt_llm",
        backend="tensorrtllm",
        model_transaction_policy=model_config_pb2.ModelTransactionPolicy(decoupled=True),
    )
    wire = service_pb2.ModelConfigResponse(config=engine).SerializeToString()
    read = MessageToDict(ModelConfigResponse.FromString(wire), preserving_proto_field_name=True)
    assert ModelConfig.from_json("tensorrt_llm", read["config"]).decoupled is True


def test_instance_groups_read_as_over_http() -> None:
    """Instances (count x GPUs listed, summed): each executes while any request waits,
    the floor under a plain model's rebuilt load (sidecar.completions)."""
    config = model_config_pb2.ModelConfig(
        name="resnet",
        max_batch_size=8,
        instance_group=[
            model_config_pb2.ModelInstanceGroup(count=2, gpus=[0, 1]),
            model_config_pb2.ModelInstanceGroup(count=3, kind=2),  # KIND_CPU
        ],
    )
    wire = service_pb2.ModelConfigResponse(config=config).SerializeToString()
    from google.protobuf.json_format import MessageToDict

    read = MessageToDict(ModelConfigResponse.FromString(wire), preserving_proto_field_name=True)
    assert ModelConfig.from_json("resnet", read["config"]).instances == 2 * 2 + 3
