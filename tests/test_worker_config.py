"""The worker's settings: off by default, slots from CAPACITY, bad values named at start."""

from __future__ import annotations

import pytest

from sidecar.config import ConfigError, load_config

POD = {"POD_NAME": "llama-0", "POD_NAMESPACE": "inference", "TARGET_NAME": "llama"}


def test_the_worker_is_off_by_default() -> None:
    config = load_config([], POD)
    assert (config.worker, config.worker_slots) == (False, 0)
    assert (config.claim_idle_s, config.worker_grace_s) == (30.0, 25.0)
    assert config.openai_url == "http://localhost:9000"


def test_slots_default_to_the_capacity_and_a_flag_wins() -> None:
    assert load_config([], {**POD, "WORKER": "on", "CAPACITY": "8"}).worker_slots == 8
    env = {**POD, "WORKER": "ON", "CAPACITY": "8", "WORKER_SLOTS": "4"}
    assert load_config(["--worker-slots", "6"], env).worker_slots == 6
    config = load_config([], {**env, "CLAIM_IDLE_SECONDS": "5", "WORKER_GRACE_SECONDS": "0"})
    assert (config.worker, config.claim_idle_s, config.worker_grace_s) == (True, 5.0, 0.0)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"WORKER": "yes"}, "--worker (env WORKER) = 'yes', must be on or off"),
        ({"WORKER": "on"}, "--worker-slots (env WORKER_SLOTS) is required"),
        ({"WORKER": "on", "CAPACITY": "2.5"}, "--worker-slots (env WORKER_SLOTS) is required"),
        ({"WORKER": "on", "WORKER_SLOTS": "0"}, "--worker-slots (env WORKER_SLOTS) = '0'"),
        ({"CLAIM_IDLE_SECONDS": "0"}, "--claim-idle-seconds (env CLAIM_IDLE_SECONDS) = '0'"),
        ({"WORKER_GRACE_SECONDS": "-1"}, "--worker-grace-seconds (env WORKER_GRACE_SECONDS)"),
        ({"OPENAI_URL": "localhost:9000"}, "--openai-url (env OPENAI_URL) = 'localhost:9000'"),
    ],
)
def test_a_bad_value_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)")):
        load_config([], {**POD, **env})
