"""Trigger metadata: documented defaults, and every bad value refused with the key named."""

from __future__ import annotations

import re

import grpc
import pytest

from scaler._generated import externalscaler_pb2 as pb
from scaler.parsing import number_in_range
from scaler.target_config import (
    KEDA_KEYS,
    METADATA_KEYS,
    RETIRED_KEYS,
    MetadataError,
    QueueType,
    parse_target_config,
)
from tests.harness import RunningScaler


def test_defaults_are_the_documented_ones() -> None:
    config = parse_target_config("ns", "llama", {"targetConcurrency": "8"}).config
    assert config.target_concurrency == 8
    assert config.activation_threshold == 0
    assert config.queue_key is None
    assert config.queue_type is QueueType.LIST
    assert config.consumer_group is None
    assert config.target_name == "llama"
    assert config.stale_after_s == 10
    assert config.target_utilization == 0.8
    assert config.scale_down_delay_s == 120
    assert config.scale_to_zero_delay_s == 300
    assert config.burst_window_s == 10
    assert config.slo_wait_s == 2
    assert config.metric_name == "llm-concurrency-llama"
    assert config.report_keys.reports == "llm-scaler:{ns/llama}:reports"


def test_every_key_is_read() -> None:
    metadata = {
        "targetConcurrency": "4.5",
        "activationThreshold": "2",
        "queueKey": "requests:llama",
        "queueType": "stream",
        "consumerGroup": "gateway",
        "targetName": "triton-llama",
        "staleAfterSeconds": "30",
        "targetUtilization": "0.7",
        "scaleDownDelaySeconds": "60",
        "scaleToZeroDelaySeconds": "600",
        "burstWindowSeconds": "5",
        "sloWaitSeconds": "2",
        "coldStartSeconds": "90",
        "serviceSeconds": "6",
        "sloHorizonSeconds": "900",
        "sloTarget": "0.99",
        "hpaTolerance": "0.05",
        "tokenLatencyMs": "12.5",
    }
    assert set(metadata) == set(METADATA_KEYS)
    parsed = parse_target_config("ns", "so", metadata)
    c = parsed.config
    assert (c.target_concurrency, c.activation_threshold, c.stale_after_s) == (4.5, 2, 30)
    assert (c.queue_key, c.queue_type, c.consumer_group) == ("requests:llama", "stream", "gateway")
    assert c.target_name == "triton-llama"
    assert (c.target_utilization, c.scale_down_delay_s, c.scale_to_zero_delay_s) == (0.7, 60, 600)
    assert c.burst_window_s == 5
    assert (c.slo_wait_s, c.cold_start_s, c.service_s) == (2, 90, 6)
    assert (c.slo_horizon_s, c.slo_target, c.hpa_tolerance) == (900, 0.99, 0.05)
    assert c.token_latency_ms == 12.5


def test_a_retired_key_is_accepted_and_named() -> None:
    parsed = parse_target_config("ns", "so", {"targetConcurrency": "8", "burstThreshold": "2"})
    assert parsed.retired_keys == {"burstThreshold"}
    assert "sloWaitSeconds" in RETIRED_KEYS["burstThreshold"]


def test_keda_own_keys_are_accepted() -> None:
    metadata = {"targetConcurrency": "1", **dict.fromkeys(KEDA_KEYS, "x")}
    assert parse_target_config("ns", "so", metadata).config.target_concurrency == 1


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("queuekey", "queueKey"),
        ("QueueKey", "queueKey"),
        ("queueKeys", "queueKey"),
        ("targetConcurency", "targetConcurrency"),
        ("tagetName", "targetName"),
        ("scaleToZeroDelay", "scaleToZeroDelaySeconds"),
        ("scaleraddress", "scalerAddress"),
    ],
)
def test_an_unknown_key_is_refused_with_the_key_it_was_likely_meant_to_be(
    typo: str, meant: str
) -> None:
    with pytest.raises(MetadataError) as refused:
        parse_target_config("ns", "so", {"targetConcurrency": "8", typo: "requests:llama"})
    assert str(refused.value).startswith(
        f"unknown trigger metadata key {typo!r}: did you mean {meant!r}?"
    )


def test_an_unknown_key_far_from_any_known_one_is_refused_without_a_guess() -> None:
    with pytest.raises(MetadataError, match=r"^unknown trigger metadata key 'colour' \(every"):
        parse_target_config("ns", "so", {"targetConcurrency": "8", "colour": "blue"})


def test_an_unknown_key_is_named_before_the_key_it_misspells_is_missing() -> None:
    with pytest.raises(MetadataError, match="did you mean 'targetConcurrency'"):
        parse_target_config("ns", "so", {"targetConcurency": "8"})


def test_metric_name_is_hpa_safe_for_any_valid_target_name() -> None:
    config = parse_target_config("ns", "so", {"targetConcurrency": "1", "targetName": "Llama_3.1"})
    assert config.config.metric_name == "llm-concurrency-llama-3-1"


BAD = [
    ("missing-target", {}, "targetConcurrency is missing"),
    (
        "zero-target",
        {"targetConcurrency": "0"},
        "targetConcurrency = '0', must be a number in [0.1; 1e6]",
    ),
    ("negative-target", {"targetConcurrency": "-3"}, "targetConcurrency = '-3'"),
    ("nan-target", {"targetConcurrency": "NaN"}, "targetConcurrency = 'NaN'"),
    ("inf-target", {"targetConcurrency": "inf"}, "targetConcurrency = 'inf'"),
    ("text-target", {"targetConcurrency": "eight"}, "targetConcurrency = 'eight'"),
    ("empty-target", {"targetConcurrency": ""}, "targetConcurrency = ''"),
    ("huge-target", {"targetConcurrency": "1e300"}, "targetConcurrency = '1e300'"),
    (
        "negative-activation",
        {"activationThreshold": "-1"},
        "activationThreshold = '-1', must be a number in [0;",
    ),
    (
        "bad-queue-type",
        {"queueType": "kafka"},
        "queueType = 'kafka', must be one of list | stream | zset",
    ),
    ("stream-without-group", {"queueKey": "s", "queueType": "stream"}, "consumerGroup is missing"),
    (
        "group-without-stream",
        {"consumerGroup": "g"},
        "consumerGroup = 'g' is set but queueType = list",
    ),
    ("empty-queue-key", {"queueKey": ""}, "queueKey = '', must be non-empty printable text"),
    ("long-queue-key", {"queueKey": "q" * 2000}, "queueKey = 'qqqq"),
    ("control-char-key", {"queueKey": "a\nb"}, "queueKey = 'a\\nb'"),
    ("empty-key-in-list", {"queueKey": "a,,b"}, "queueKey = 'a,,b', must be non-empty"),
    ("repeated-key", {"queueKey": "a, b, a"}, "queueKey = 'a, b, a', must name each key once"),
    ("too-many-keys", {"queueKey": ",".join("k" * i for i in range(1, 18))}, "names 17 keys"),
    (
        "group-with-gateway",
        {"queueType": "gateway", "consumerGroup": "g"},
        "consumerGroup applies only to queueType stream",
    ),
    (
        "stale-too-short",
        {"staleAfterSeconds": "0.5"},
        "staleAfterSeconds = '0.5', must be a number in [1; 3600]",
    ),
    ("stale-too-long", {"staleAfterSeconds": "86400"}, "staleAfterSeconds = '86400'"),
    (
        "braces-in-target",
        {"targetName": "a}{b"},
        "targetName = 'a}{b', must be a Kubernetes-style name",
    ),
    ("unicode-target", {"targetName": "lläma"}, "targetName = 'lläma'"),
    (
        "zero-utilization",
        {"targetUtilization": "0"},
        "targetUtilization = '0', must be a number in [0.05; 1]",
    ),
    ("over-utilization", {"targetUtilization": "1.2"}, "targetUtilization = '1.2'"),
    (
        "negative-delay",
        {"scaleDownDelaySeconds": "-5"},
        "scaleDownDelaySeconds = '-5', must be a number in [0; 3600]",
    ),
    ("day-long-delay", {"scaleDownDelaySeconds": "86400"}, "scaleDownDelaySeconds = '86400'"),
    ("nan-zero-delay", {"scaleToZeroDelaySeconds": "nan"}, "scaleToZeroDelaySeconds = 'nan'"),
    (
        "burst-window-zero",
        {"burstWindowSeconds": "0"},
        "burstWindowSeconds = '0', must be a number in [1; 600]",
    ),
    ("whole-tolerance", {"hpaTolerance": "1"}, "hpaTolerance = '1', must be a number in [0; 0.99]"),
]


@pytest.mark.parametrize(("metadata", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_metadata_is_refused_naming_the_key(metadata: dict[str, str], message: str) -> None:
    full = {"targetConcurrency": "8", **metadata}
    if "missing" in message and "targetConcurrency" in message:
        full.pop("targetConcurrency")
    with pytest.raises(MetadataError) as err:
        parse_target_config("ns", "so", full)
    assert message in str(err.value)
    assert len(str(err.value)) < 400  # a huge value is cut, never echoed whole


@pytest.mark.parametrize("method", ["GetMetricSpec", "GetMetrics", "IsActive", "StreamIsActive"])
def test_every_rpc_answers_invalid_argument_for_bad_metadata(
    scaler: RunningScaler, method: str
) -> None:
    so = pb.ScaledObjectRef(
        name="llama", namespace="ns", scalerMetadata={"targetConcurrency": "-1"}
    )
    call = getattr(scaler.stub, method)
    request = pb.GetMetricsRequest(scaledObjectRef=so) if method == "GetMetrics" else so
    with pytest.raises(grpc.RpcError) as err:
        result = call(request, timeout=3)
        if method == "StreamIsActive":
            next(result)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "targetConcurrency = '-1'" in err.value.details()


@pytest.mark.parametrize("method", ["GetMetricSpec", "GetMetrics", "IsActive", "StreamIsActive"])
def test_every_rpc_refuses_a_misspelt_queue_key_naming_queue_key(
    scaler: RunningScaler, method: str
) -> None:
    """Accepted, the queue would go uncounted and the target never wake, with nothing on the
    ScaledObject; refused, KEDA shows the message in its status and events."""
    metadata = {"scalerAddress": "x:9090", "targetConcurrency": "8", "queuekey": "requests:llama"}
    so = pb.ScaledObjectRef(name="llama", namespace="ns", scalerMetadata=metadata)
    call = getattr(scaler.stub, method)
    request = pb.GetMetricsRequest(scaledObjectRef=so) if method == "GetMetrics" else so
    with pytest.raises(grpc.RpcError) as err:
        result = call(request, timeout=3)
        if method == "StreamIsActive":
            next(result)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown trigger metadata key 'queuekey': did you mean 'queueKey'?" in (
        err.value.details()
    )


def test_scaled_object_without_name_or_namespace_is_refused(scaler: RunningScaler) -> None:
    for name, namespace in (("", "ns"), ("so", "")):
        so = pb.ScaledObjectRef(
            name=name, namespace=namespace, scalerMetadata={"targetConcurrency": "1"}
        )
        with pytest.raises(grpc.RpcError) as err:
            scaler.stub.IsActive(so, timeout=3)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "ScaledObjectRef" in err.value.details()


@pytest.mark.parametrize(
    ("low", "high", "shown"),
    [(0.1, 1e6, "[0.1; 1e6]"), (0, 1 << 30, "[0; 1073741824]"), (1e-5, 0.99, "[1e-5; 0.99]")],
)
def test_range_bounds_are_printed_as_the_docs_write(low: float, high: float, shown: str) -> None:
    """One spelling in every message (no Python 1e+06), and exact (no 1.07374e9)."""
    with pytest.raises(ValueError, match=re.escape(f"must be a number in {shown}")):
        number_in_range("key", "-1", low, high)
