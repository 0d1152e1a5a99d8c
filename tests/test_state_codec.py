"""Policy state in Redis: the merge script and its Python twin agree, in any order."""

from __future__ import annotations

import itertools

import pytest
import redis

from scaler.policy import PolicyState
from scaler.state_codec import MERGE_STATE_LUA, decode_state, merge_args, merge_states

A = PolicyState(bucket_s=2.0, buckets=((10, 5.0), (11, 9.0)), active_until=400.0)
B = PolicyState(bucket_s=2.0, buckets=((11, 3.0), (12, 7.0)), active_until=300.0)
BURST_OLD = PolicyState(bucket_s=2.0, burst_started_at=100.0, burst_peak=50.0, burst_until=200.0)
BURST_NEW = PolicyState(bucket_s=2.0, burst_started_at=150.0, burst_peak=20.0, burst_until=260.0)


def _merged_in_redis(client: redis.Redis, states: tuple[PolicyState, ...]) -> PolicyState:
    merge = client.register_script(MERGE_STATE_LUA)
    client.delete("state")
    for state in states:
        merge(keys=["state"], args=merge_args(state, oldest_bucket=0, ttl_s=60))
    return decode_state(client.hgetall("state"))


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (
            (A, B),
            PolicyState(2.0, ((10, 5.0), (11, 9.0), (12, 7.0)), active_until=400.0),
        ),
        (
            (BURST_OLD, BURST_NEW),
            PolicyState(2.0, (), 0.0, burst_started_at=150.0, burst_peak=20.0, burst_until=260.0),
        ),
    ],
    ids=["buckets-and-deadline-take-the-max", "a-later-burst-replaces-an-earlier-one"],
)
def test_merging_in_any_order_gives_one_state(
    redis_client: redis.Redis, states: tuple[PolicyState, ...], expected: PolicyState
) -> None:
    for order in itertools.permutations(states):
        assert _merged_in_redis(redis_client, order) == expected
        assert merge_states(merge_states(PolicyState(), order[0]), order[1]) == expected


def test_buckets_of_another_width_are_replaced(redis_client: redis.Redis) -> None:
    wider = PolicyState(bucket_s=10.0, buckets=((3, 40.0),))
    merged = _merged_in_redis(redis_client, (A, wider))
    assert merged.bucket_s == 10.0 and merged.buckets == ((3, 40.0),)
    assert merge_states(wider, A) == wider  # the stored width is the one in force


def test_expired_buckets_are_dropped_on_save(redis_client: redis.Redis) -> None:
    merge = redis_client.register_script(MERGE_STATE_LUA)
    merge(keys=["state"], args=merge_args(A, oldest_bucket=0, ttl_s=60))
    merge(keys=["state"], args=merge_args(B, oldest_bucket=11, ttl_s=60))
    assert decode_state(redis_client.hgetall("state")).buckets == ((11, 9.0), (12, 7.0))
    assert 0 < redis_client.ttl("state") <= 60


def test_unparseable_fields_are_skipped_not_fatal() -> None:
    state = decode_state({"bucket_s": "2", "b:5": "oops", "b:6": "3", "active_until": "x"})
    assert state == PolicyState(bucket_s=2.0, buckets=((6, 3.0),))


def test_slo_horizon_buckets_survive_a_save_and_merge_across_replicas(
    redis_client: redis.Redis,
) -> None:
    # SLO-aware mode keeps 60 buckets of the horizon's width (1200 s / 60 = 20 s) of the
    # requests in the system (h:<i>, here 70 queued): a save keeps them for the whole
    # horizon, not just the 120 s scale-down delay, beside the served ones (b:<i>, none).
    from scaler.policy import decide
    from scaler.signals import Signals
    from scaler.target_config import parse_target_config

    cfg = parse_target_config(
        "ns", "llama", {"targetConcurrency": "8", "sloWaitSeconds": "2", "serviceSeconds": "5"}
    ).config
    quiet = Signals(5, 0, 0, 0, 0, 0.0, 0.0)
    first = decide(Signals(70, 0, 0, 0, 0, 0.0, 0.0), PolicyState(), cfg, 1_000_000.0).new_state
    later = decide(quiet, PolicyState(), cfg, 1_000_600.0).new_state  # another replica
    merged = _merged_in_redis(redis_client, (first, later))
    assert merged == merge_states(first, later)
    assert merged.bucket_s == 20.0 and merged.peak_buckets == ((50_000, 70.0), (50_030, 5.0))
    assert merged.buckets == ((50_000, 0.0), (50_030, 0.0))
    assert decide(quiet, merged, cfg, 1_001_000.0).metric_value == pytest.approx(40.0)
