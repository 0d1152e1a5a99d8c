"""Any input gets a valid answer or a clear INVALID_ARGUMENT: never an internal error or crash."""

from __future__ import annotations

import json
import math

import grpc
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaler._generated import externalscaler_pb2 as pb
from scaler.reports import PodReport, ReportError
from scaler.target_config import (
    ACCEPTED_KEYS,
    METADATA_KEYS,
    MetadataError,
    parse_target_config,
)
from tests.harness import FakeClock, ReportPublisher, RunningScaler, ref

NASTY_TEXT = st.one_of(
    st.sampled_from(["", " ", "-1", "0", "1e309", "-inf", "inf", "NaN", "nan", "1_000", "0x10"]),
    st.sampled_from(["8", "0.8", "list", "stream", "zset", "llama", "ünï", "a" * 5000]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.text(max_size=300),
)
METADATA = st.dictionaries(
    st.one_of(st.sampled_from(sorted(METADATA_KEYS)), st.text(max_size=2000)),
    NASTY_TEXT,
    max_size=12,
)
SLOW = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@given(metadata=METADATA)
@settings(max_examples=500, deadline=None)
def test_parsing_any_metadata_gives_a_config_or_a_named_error(metadata: dict[str, str]) -> None:
    try:
        config = parse_target_config("ns", "so", metadata).config
    except MetadataError as exc:
        message = str(exc)
        if message.startswith("unknown trigger metadata key "):  # named, with a guess if close
            assert set(metadata) - ACCEPTED_KEYS, message
            return
        key = message.split(" ", 1)[0]
        assert key in METADATA_KEYS or key.startswith("ScaledObjectRef"), message
        return
    for value in (config.target_concurrency, config.stale_after_s):
        assert math.isfinite(value) and value > 0
    assert config.replica_target >= 0.005  # survives KEDA's 3 decimals as a positive target


@given(metadata=METADATA)
@SLOW
def test_every_rpc_answers_or_refuses_cleanly(
    scaler: RunningScaler, metadata: dict[str, str]
) -> None:
    so = pb.ScaledObjectRef(name="llama", namespace="ns", scalerMetadata=metadata)
    calls = (
        lambda: scaler.stub.GetMetricSpec(so, timeout=5),
        lambda: scaler.stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=so), timeout=5),
        lambda: scaler.stub.IsActive(so, timeout=5),
    )
    for call in calls:
        try:
            call()
        except grpc.RpcError as err:
            assert err.code() in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.FAILED_PRECONDITION,  # a queueKey naming a key of another type
            ), err.details()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
REPORT_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        name: JSON_VALUES
        for name in ("pod", "inflight", "waiting", "capacity", "ready", "started_at", "seq")
    },
)


@given(fields=REPORT_FIELDS)
@SLOW
def test_any_report_payload_is_counted_or_ignored_never_fatal(
    scaler: RunningScaler,
    publisher: ReportPublisher,
    redis_client: redis.Redis,
    clock: FakeClock,
    fields: dict[str, object],
) -> None:
    redis_client.flushall()
    payload = json.dumps(fields, allow_nan=True)
    publisher.publish_raw("llama", "llama-0", payload, at=clock())
    try:
        valid = PodReport.from_json(payload).pod == "llama-0"
    except ReportError:
        valid = False
    try:
        poll = scaler.keda.poll(ref("llama", scaleDownDelaySeconds="0"))
    except grpc.RpcError as err:
        assert not valid
        assert err.code() is grpc.StatusCode.UNAVAILABLE
        assert "break the contract" in err.details()
        return
    assert valid
    assert poll.value_float >= 0
