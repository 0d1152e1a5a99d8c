"""Per-ScaledObject configuration: the trigger's `metadata` map, parsed once and validated.

KEDA forwards the trigger metadata untouched (scalerMetadata), so this module owns
every key's meaning, default and allowed range. Every default is written down in
`METADATA_KEYS`, in one place; every bad value is refused with a message of the
form "key = value, must be ...", and every unknown key is refused by name, with the
known key it is closest to: KEDA shows the refusal on the ScaledObject, where its
users look, whereas a key ignored would leave e.g. a misspelt queueKey's queue
silently uncounted.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.contract import request_streams
from scaler.parsing import number_in_range, shown
from scaler.reports import ReportKeys, report_keys


class MetadataError(ValueError):
    """A trigger metadata value that is missing or out of range."""


class QueueType(StrEnum):
    LIST = "list"  # LLEN: items pushed and not yet popped
    STREAM = "stream"  # consumer group lag (not yet delivered) + pending (delivered, not acked)
    ZSET = "zset"  # ZCARD: e.g. a priority queue
    # The project's gateway (gateway/contract.py): requests not yet taken by a pod's worker,
    # XLEN - pending of the `workers` group; those taken are in the pods' exact in-flight.
    GATEWAY = "gateway"


@dataclass(frozen=True)
class KeySpec:
    default: str | None  # None: required, or absent means "not used" (see `optional`)
    doc: str
    optional: bool = False


# Every key the scaler reads, its default and what it means. The README's table
# and the example ScaledObject are checked against this by the tests.
METADATA_KEYS: dict[str, KeySpec] = {
    "targetConcurrency": KeySpec(
        None, "requests one replica should serve at once (in flight + waiting), in [0.1; 1e6]"
    ),
    "activationThreshold": KeySpec(
        "0", "demand above which the target is active (woken from zero), >= 0"
    ),
    "queueKey": KeySpec(
        None,
        "Redis key of the request queue, or several comma-separated (their depths add up); "
        "absent: no queue, or with queueType gateway the target's streams of every priority",
        optional=True,
    ),
    "queueType": KeySpec("list", "list | stream | zset | gateway"),
    "consumerGroup": KeySpec(
        None, "consumer group whose lag + pending is the depth (queueType stream)", optional=True
    ),
    "targetName": KeySpec(
        None, "name the sidecars report under; default: the ScaledObject's name", optional=True
    ),
    "staleAfterSeconds": KeySpec("10", "pod reports older than this are dropped, in [1; 3600]"),
    "targetUtilization": KeySpec(
        "0.8", "share of targetConcurrency replicas are sized for (headroom), in [0.05; 1]"
    ),
    "scaleDownDelaySeconds": KeySpec(
        "120", "metric = the largest need over this window: replicas go only after it, in [0; 3600]"
    ),
    "scaleToZeroDelaySeconds": KeySpec(
        "300", "IsActive stays true until demand has been zero this long, in [0; 86400]"
    ),
    "burstWindowSeconds": KeySpec(
        "10", "a burst is what arrives within this window (SLO-aware hold), in [1; 600]"
    ),
    "sloWaitSeconds": KeySpec(
        "2",
        "SLO-aware hold: the longest a request of a burst should wait to start, in [0; 600]; "
        "'off': no warm capacity held for bursts",
    ),
    "coldStartSeconds": KeySpec(
        "60", "a replica's cold start (sidecars' measured one wins if longer), in [0; 3600]"
    ),
    "serviceSeconds": KeySpec(
        "5", "mean time a request holds its slot (prefill + decode), in [0.01; 3600]"
    ),
    "sloHorizonSeconds": KeySpec(
        "3600",
        "SLO-aware hold: how far back bursts are counted, in [0; 86400]",
    ),
    "sloTarget": KeySpec(
        "0.9",
        "SLO-aware hold: share of the horizon's burst requests the held capacity must start "
        "within sloWaitSeconds, in [0.5; 1]; 1: all of them (the largest burst)",
    ),
    "tokenLatencyMs": KeySpec(
        None,
        "the promise per output token, in milliseconds, in [0.1; 60000]: one replica carries "
        "the most sequences at which the pods' measured token time stays within it "
        "(targetConcurrency until measured); absent: targetConcurrency as written",
        optional=True,
    ),
    "hpaTolerance": KeySpec(
        "0.1",
        "the HPA's scale-up tolerance (the cluster's --horizontal-pod-autoscaler-tolerance, or "
        "the ScaledObject's behavior.scaleUp.tolerance), in [0; 0.99]; 0: none",
    ),
}

# Keys earlier versions read, with what replaced them: accepted, and the log says so.
RETIRED_KEYS = {
    "burstThreshold": "bursts are sized by the SLO-aware hold (sloWaitSeconds) and orders "
    "by what the ready replicas cannot clear within a cold start; see docs/decision.md",
}

# Keys KEDA itself puts in the metadata (or users set for KEDA's sake): accepted, not used.
# KEDA passes the whole trigger metadata on (scalerMetadata); tlsCertFile is its deprecated
# spelling of tlsClientCert.
KEDA_KEYS = frozenset(
    {
        "scalerAddress",
        "enableTLS",
        "unsafeSsl",
        "caCert",
        "tlsClientCert",
        "tlsClientKey",
        "tlsCertFile",
    }
)

_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_MAX_QUEUE_KEY_LEN = 1024
MAX_QUEUE_KEYS = 16


@dataclass(frozen=True)
class TargetConfig:
    namespace: str
    scaled_object: str
    target_name: str
    target_concurrency: float
    activation_threshold: float
    queue_key: str | None
    queue_type: QueueType
    consumer_group: str | None
    stale_after_s: float
    target_utilization: float
    scale_down_delay_s: float
    scale_to_zero_delay_s: float
    burst_window_s: float
    slo_wait_s: float | None = 2.0  # None: no SLO-aware hold ('off')
    cold_start_s: float = 60.0
    service_s: float = 5.0
    slo_horizon_s: float = 3600.0  # how far back the SLO-aware hold counts bursts
    slo_target: float = 0.9  # share of the horizon's burst requests sized to start in time
    hpa_tolerance: float = 0.1  # the HPA ignores a metric within this ratio of its replicas'
    token_latency_ms: float | None = None  # None: no token-latency objective
    # The keys the metadata set: a key written is obeyed as written, and a derived default
    # (`scaler.policy.derived`) applies only where its key is absent.
    written: frozenset[str] = frozenset()

    @property
    def queue_keys(self) -> tuple[str, ...]:
        """Every queue whose depth counts: queueKey's comma-separated keys, or with queueType
        gateway and no queueKey, the gateway's stream of each priority for this target."""
        if self.queue_key:
            return tuple(key.strip() for key in self.queue_key.split(","))
        if self.queue_type is QueueType.GATEWAY:
            return tuple(request_streams(self.namespace, self.target_name))
        return ()

    @property
    def replica_target(self) -> float:
        """Demand one replica is sized for: the HPA target (targetSizeFloat).

        targetConcurrency 8 at targetUtilization 0.8 -> 6.4, so demand 30 asks
        for ceil(30 / 6.4) = 5 replicas, leaving 25% headroom for growth while a
        new replica cold-starts."""
        return round(self.target_concurrency * self.target_utilization, 6)

    @property
    def metric_name(self) -> str:
        """Stable, HPA-safe metric name; KEDA prefixes it with `sN-` and strips that again."""
        return "llm-concurrency-" + re.sub(r"[^a-z0-9-]", "-", self.target_name.lower())

    @property
    def report_keys(self) -> ReportKeys:
        return report_keys(self.namespace, self.target_name)


@dataclass(frozen=True)
class ParsedMetadata:
    config: TargetConfig
    retired_keys: frozenset[str] = frozenset()  # see RETIRED_KEYS for what replaced each


ACCEPTED_KEYS = frozenset(METADATA_KEYS) | KEDA_KEYS | frozenset(RETIRED_KEYS)


def unknown_key_error(key: str) -> MetadataError:
    """The refusal of a key no one reads, with the known key it most likely meant."""
    by_case = {known.lower(): known for known in ACCEPTED_KEYS}
    close = by_case.get(key.lower()) or next(
        iter(difflib.get_close_matches(key, sorted(ACCEPTED_KEYS), n=1, cutoff=0.75)), None
    )
    hint = f": did you mean {close!r}?" if close else ""
    return MetadataError(
        f"unknown trigger metadata key {shown(key)}{hint} (every key: docs/configuration.md "
        "of llm-keda-scaler; KEDA's own keys are accepted)"
    )


def parse_target_config(
    namespace: str, scaled_object: str, metadata: Mapping[str, str]
) -> ParsedMetadata:
    """Validate one ScaledObject's trigger metadata. Raises MetadataError naming the key."""
    if not scaled_object:
        raise MetadataError("ScaledObjectRef.name = '', must be the ScaledObject's name")
    if not namespace:
        raise MetadataError("ScaledObjectRef.namespace = '', must be the ScaledObject's namespace")
    # Before any value: a misspelt key otherwise shows as its correct spelling "missing".
    unknown = sorted(frozenset(metadata) - ACCEPTED_KEYS)
    if unknown:
        raise unknown_key_error(unknown[0])
    md = _Reader(metadata)
    queue_type = md.get("queueType", _choice(QueueType))
    queue_key = md.get("queueKey", _queue_keys)
    consumer_group = md.get("consumerGroup", _text(256))
    if queue_type is QueueType.STREAM and consumer_group is None:
        raise MetadataError("consumerGroup is missing, must name the consumer group for a stream")
    if queue_type is not QueueType.STREAM and consumer_group is not None:
        raise MetadataError(
            f"consumerGroup = {consumer_group!r} is set but queueType = {queue_type.value}; "
            "consumerGroup applies only to queueType stream"
        )
    config = TargetConfig(
        namespace=namespace,
        scaled_object=scaled_object,
        target_name=md.get("targetName", _target_name) or scaled_object,
        # Lower bounds keep the HPA target (their product) >= 0.005: KEDA keeps 3
        # decimals, and a target it rounds to 0 makes the HPA invalid.
        target_concurrency=md.get("targetConcurrency", _float(0.1, 1e6)),
        activation_threshold=md.get("activationThreshold", _float(0, 1e9)),
        queue_key=queue_key,
        queue_type=queue_type,
        consumer_group=consumer_group,
        stale_after_s=md.get("staleAfterSeconds", _float(1, 3600)),
        target_utilization=md.get("targetUtilization", _float(0.05, 1)),
        scale_down_delay_s=md.get("scaleDownDelaySeconds", _float(0, 3600)),
        scale_to_zero_delay_s=md.get("scaleToZeroDelaySeconds", _float(0, 86400)),
        burst_window_s=md.get("burstWindowSeconds", _float(1, 600)),
        slo_wait_s=md.get("sloWaitSeconds", _off_or(_float(0, 600))),
        cold_start_s=md.get("coldStartSeconds", _float(0, 3600)),
        service_s=md.get("serviceSeconds", _float(0.01, 3600)),
        slo_horizon_s=md.get("sloHorizonSeconds", _float(0, 86400)),
        slo_target=md.get("sloTarget", _float(0.5, 1)),
        hpa_tolerance=md.get("hpaTolerance", _float(0, 0.99)),
        token_latency_ms=md.get("tokenLatencyMs", _float(0.1, 60000)),
        written=frozenset(set(metadata) & METADATA_KEYS.keys()),
    )
    retired = frozenset(metadata) & RETIRED_KEYS.keys()
    return ParsedMetadata(config=config, retired_keys=retired)


class _Reader:
    def __init__(self, metadata: Mapping[str, str]) -> None:
        self._metadata = metadata

    def get(self, key: str, convert: Callable[[str, str], Any]) -> Any:
        spec = METADATA_KEYS[key]
        raw = self._metadata.get(key, spec.default)
        if raw is None:
            if spec.optional:
                return None
            raise MetadataError(f"{key} is missing, must be set ({spec.doc})")
        return convert(key, raw.strip())


def _float(low: float, high: float, low_open: bool = False) -> Callable[[str, str], float]:
    def convert(key: str, raw: str) -> float:
        return number_in_range(key, raw, low, high, low_open=low_open, error=MetadataError)

    return convert


def _off_or(convert: Callable[[str, str], float]) -> Callable[[str, str], float | None]:
    def or_off(key: str, raw: str) -> float | None:
        if raw.lower() == "off":
            return None
        try:
            return convert(key, raw)
        except MetadataError as exc:
            raise MetadataError(f"{exc}, or 'off'") from None

    return or_off


def _choice(kind: type[QueueType]) -> Callable[[str, str], QueueType]:
    def convert(key: str, raw: str) -> QueueType:
        try:
            return kind(raw)
        except ValueError:
            allowed = " | ".join(k.value for k in kind)
            raise MetadataError(f"{key} = {shown(raw)}, must be one of {allowed}") from None

    return convert


def _queue_keys(key: str, raw: str) -> str:
    """One key, or several separated by commas; each non-empty printable text, no repeats."""
    keys = [k.strip() for k in raw.split(",")]
    if len(keys) > MAX_QUEUE_KEYS:
        raise MetadataError(f"{key} names {len(keys)} keys, must name at most {MAX_QUEUE_KEYS}")
    for one in keys:
        if not one or len(one) > _MAX_QUEUE_KEY_LEN or not one.isprintable():
            raise MetadataError(
                f"{key} = {shown(raw)}, must be non-empty printable text of at most "
                f"{_MAX_QUEUE_KEY_LEN} chars, or several such keys separated by commas"
            )
    if len(set(keys)) < len(keys):
        raise MetadataError(f"{key} = {shown(raw)}, must name each key once")
    return ",".join(keys)


def _text(max_len: int) -> Callable[[str, str], str]:
    def convert(key: str, raw: str) -> str:
        if not raw or len(raw) > max_len or not raw.isprintable():
            raise MetadataError(
                f"{key} = {shown(raw)}, must be non-empty printable text of at most {max_len} chars"
            )
        return raw

    return convert


def _target_name(key: str, raw: str) -> str:
    if not _TARGET_NAME.match(raw):
        raise MetadataError(
            f"{key} = {shown(raw)}, must be a Kubernetes-style name "
            "(letters, digits, '.', '_', '-'; at most 253 chars)"
        )
    return raw
