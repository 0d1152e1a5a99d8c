"""Policy state in Redis: the merge script and its Python twin agree, in any order."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import redis

from scaler.policy import PolicyState
from scaler.state_codec import MERGE_STATE_LUA, decode_state, merge_args, merge_states

A = PolicyState(
    bucket_s=2.0, needed=((10, 5.0), (11, 9.0)), in_system=((10, 40.0),), active_until=400.0
)
B = PolicyState(
    bucket_s=2.0, needed=((11, 3.0), (12, 7.0)), in_flight=((12, 8.0),), active_until=300.0
)
PEAKS_A = PolicyState(bucket_s=2.0, peak_bucket_s=20.0, peak_buckets=((1, 70.0),))
PEAKS_B = PolicyState(bucket_s=2.0, peak_bucket_s=20.0, peak_buckets=((1, 30.0), (2, 5.0)))
NOW = 24.0  # bucket 12 of 2 s: nothing above is older than 61 buckets


def _merged_in_redis(client: redis.Redis, states: tuple[PolicyState, ...]) -> PolicyState:
    merge = client.register_script(MERGE_STATE_LUA)
    client.delete("state")
    for state in states:
        merge(keys=["state"], args=merge_args(state, NOW, ttl_s=60))
    return decode_state(client.hgetall("state"))


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (
            (A, B),
            PolicyState(
                bucket_s=2.0,
                needed=((10, 5.0), (11, 9.0), (12, 7.0)),
                in_system=((10, 40.0),),
                in_flight=((12, 8.0),),
                active_until=400.0,
            ),
        ),
        (
            (PEAKS_A, PEAKS_B),
            PolicyState(bucket_s=2.0, peak_bucket_s=20.0, peak_buckets=((1, 70.0), (2, 5.0))),
        ),
    ],
    ids=["every-window-and-the-deadline-take-the-max", "slo-peaks-take-the-max"],
)
def test_merging_in_any_order_gives_one_state(
    redis_client: redis.Redis, states: tuple[PolicyState, ...], expected: PolicyState
) -> None:
    for order in itertools.permutations(states):
        assert _merged_in_redis(redis_client, order) == expected
        assert merge_states(merge_states(PolicyState(), order[0]), order[1]) == expected


def test_buckets_of_another_width_are_replaced(redis_client: redis.Redis) -> None:
    wider = PolicyState(bucket_s=10.0, needed=((2, 40.0),))
    merged = _merged_in_redis(redis_client, (A, wider))
    assert merged.bucket_s == 10.0 and merged.needed == ((2, 40.0),) and merged.in_system == ()
    # The stored width is the one in force; the deadline is the later one whatever the width.
    assert merge_states(wider, A) == replace(wider, active_until=A.active_until)


def test_expired_buckets_are_dropped_on_save(redis_client: redis.Redis) -> None:
    merge = redis_client.register_script(MERGE_STATE_LUA)
    merge(keys=["state"], args=merge_args(A, NOW, ttl_s=60))
    # 144 s later (bucket 72): only buckets from 72 - 61 = 11 on are kept.
    merge(keys=["state"], args=merge_args(B, NOW + 120.0, ttl_s=60))
    stored = decode_state(redis_client.hgetall("state"))
    assert stored.needed == ((11, 9.0), (12, 7.0)) and stored.in_system == ()
    assert 0 < redis_client.ttl("state") <= 60


def test_unparseable_fields_are_skipped_not_fatal() -> None:
    state = decode_state({"bucket_s": "2", "b:5": "oops", "b:6": "3", "active_until": "x"})
    assert state == PolicyState(bucket_s=2.0, needed=((6, 3.0),))


def test_slo_horizon_buckets_survive_a_save_and_merge_across_replicas(
    redis_client: redis.Redis,
) -> None:
    # SLO-aware mode keeps 60 buckets of the horizon's width (3600 s / 60 = 60 s) of burst
    # sizes (h:<i>, here 70 at once, twice: a size the hold keeps once it recurs): a save
    # keeps them for the whole horizon, not just the 120 s scale-down delay of the others.
    from scaler.policy import decide
    from scaler.signals import Signals
    from scaler.target_config import parse_target_config

    cfg = parse_target_config(
        "ns", "llama", {"targetConcurrency": "8", "sloWaitSeconds": "2", "serviceSeconds": "5"}
    ).config
    quiet = Signals(5, 0, 0, 0, 0, 0.0, 0.0)
    first = decide(Signals(70, 0, 0, 1, 1, 8.0, 0.0), PolicyState(), cfg, 1_000_000.0).new_state
    burst = Signals(70, 0, 0, 1, 1, 8.0, 0.0)
    later = decide(burst, PolicyState(), cfg, 1_000_600.0).new_state  # another replica
    client = redis_client
    merge = client.register_script(MERGE_STATE_LUA)
    client.delete("state")
    merge(keys=["state"], args=merge_args(first, 1_000_000.0, ttl_s=60))
    merge(keys=["state"], args=merge_args(later, 1_000_600.0, ttl_s=60))
    merged = decode_state(client.hgetall("state"))
    twin = merge_states(merge_states(PolicyState(), first), later)
    assert merged.peak_buckets == twin.peak_buckets  # the twin leaves trimming to decide
    assert merged.peak_bucket_s == 60.0 and merged.peak_buckets == ((16_666, 70.0), (16_676, 70.0))
    assert merged.needed == ((500_300, later.needed[0][1]),)  # first's left the 120 s window
    held = decide(quiet, merged, cfg, 1_000_800.0)
    assert held.metric_value == pytest.approx(40.0)  # 70 / (1 + 2 / 5) x 0.8
