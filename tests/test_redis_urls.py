"""REDIS_URL's forms (docs/redis.md): one Redis, a Sentinel service, a Redis Cluster; a bad
one stops the scaler and the sidecar at start with the variable named and the forms."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from scaler.local_redis import LocalRedis, find_redis_server, free_port
from scaler.redis_connect import RedisAddress, RedisLink, parse_redis_url
from scaler.reports import report_keys
from scaler.settings import SettingsError, settings_from_env
from sidecar.config import ConfigError, load_config
from tests.certs import CertificateAuthority
from tests.conftest import EVERY_DEPLOYMENT
from tests.redis_deployments import Deployment

DOWNWARD_API = {"POD_NAME": "p", "POD_NAMESPACE": "n", "TARGET_NAME": "t"}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://s1,s2:26380,[::1]:26381/mymaster",
            RedisAddress(
                kind="sentinel",
                url="redis+sentinel://s1,s2:26380,[::1]:26381/mymaster",
                nodes=(("s1", 26379), ("s2", 26380), ("::1", 26381)),
                service="mymaster",
            ),
        ),
        (
            "rediss+sentinel://app:pw@s1:26379/my%20master/2?ssl_ca_certs=/ca.pem",
            RedisAddress(
                kind="sentinel",
                url="rediss+sentinel://app:pw@s1:26379/my%20master/2?ssl_ca_certs=/ca.pem",
                nodes=(("s1", 26379),),
                service="my master",
                db=2,
                username="app",
                password="pw",
                tls={"ssl": True, "ssl_ca_certs": "/ca.pem"},
            ),
        ),
        (
            "redis+cluster://:pw@n1:7000,n2",
            RedisAddress(
                kind="cluster",
                url="redis+cluster://:pw@n1:7000,n2",
                nodes=(("n1", 7000), ("n2", 6379)),
                password="pw",
            ),
        ),
        (
            "rediss+cluster://n1:7000/0?ssl_cert_reqs=none&ssl_check_hostname=false",
            RedisAddress(
                kind="cluster",
                url="rediss+cluster://n1:7000/0?ssl_cert_reqs=none&ssl_check_hostname=false",
                nodes=(("n1", 7000),),
                tls={"ssl": True, "ssl_cert_reqs": "none", "ssl_check_hostname": False},
            ),
        ),
        ("rediss://:pw@redis:6380/1", RedisAddress(kind="single", url="rediss://:pw@redis:6380/1")),
    ],
    ids=["sentinel", "sentinel-tls-credentials-db", "cluster", "cluster-tls", "single"],
)
def test_url_forms_are_understood(url: str, expected: RedisAddress) -> None:
    assert parse_redis_url(url) == expected


BAD_URLS = [
    ("http://redis:6379", "must be a redis://, rediss:// or unix:// URL, or redis+sentinel://"),
    ("redis+sentinel://s1:26379", "names no service: redis+sentinel://host:port"),
    ("redis+sentinel://s1/mymaster/x", "path /mymaster/x must be /<service>[/<db number>]"),
    ("redis+cluster://n1:7000/3", "a Redis Cluster has database 0 only"),
    ("redis+cluster://n1:70000", "node 'n1:70000' must be host[:port]"),
    ("redis+cluster://n1,,n2", "node '' must be host[:port]"),
    ("redis+cluster://n1?ssl_ca_certs=/ca.pem", "option ssl_ca_certs needs TLS"),
    ("rediss+cluster://n1?ssl_cert_reqs=maybe", "option ssl_cert_reqs='maybe' is not one of"),
    ("rediss+sentinel://n1/m?timeout=3", "option timeout='3' is not one of"),
]


@pytest.mark.parametrize(("url", "message"), BAD_URLS)
def test_bad_url_stops_the_scaler_naming_the_variable(url: str, message: str) -> None:
    with pytest.raises(SettingsError) as err:
        settings_from_env({"REDIS_URL": url})
    assert str(err.value).startswith("REDIS_URL = ")
    assert message in str(err.value)


@pytest.mark.parametrize(("url", "message"), BAD_URLS)
def test_bad_url_stops_the_sidecar_naming_flag_and_variable(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config([], {**DOWNWARD_API, "REDIS_URL": url})
    assert str(err.value).startswith("--redis-url (env REDIS_URL) = ")
    assert message in str(err.value)


def test_passwords_never_reach_the_error_message() -> None:
    with pytest.raises(SettingsError) as err:
        settings_from_env({"REDIS_URL": "redis+cluster://:hunter2@n1:7000/5"})
    assert "hunter2" not in str(err.value) and ":***@" in str(err.value)


def test_secret_passwords_win_and_sentinels_get_their_own() -> None:
    settings = settings_from_env(
        {
            "REDIS_URL": "redis+sentinel://:in-url@s1/mymaster",
            "REDIS_PASSWORD": "data",
            "REDIS_SENTINEL_PASSWORD": "sentinels",
        }
    )
    assert (settings.redis_password, settings.redis_sentinel_password) == ("data", "sentinels")
    link = RedisLink(settings.redis_url, settings.redis_password, 1.0, "sentinels")
    pool_kwargs = link.client.connection_pool.connection_kwargs  # type: ignore[union-attr]
    assert pool_kwargs["password"] == "data"
    assert link._sentinel is not None
    sentinel_kwargs = link._sentinel.sentinels[0].connection_pool.connection_kwargs
    assert sentinel_kwargs["password"] == "sentinels"
    assert link.describe() == "redis+sentinel://:***@s1/mymaster"


def test_rediss_sentinel_reaches_a_tls_master_through_tls_sentinels(tmp_path: Path) -> None:
    """TLS to the sentinels and to the master they name, with the URL's TLS options alone."""
    ca = CertificateAuthority("redis test CA")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    cert, key = ca.issue("redis", server=True).write(tmp_path, "redis")
    tls = (
        "--tls-cert-file",
        cert,
        "--tls-key-file",
        key,
        "--tls-ca-cert-file",
        str(tmp_path / "ca.crt"),
    )
    port = free_port()
    master = LocalRedis(
        port, extra_args=("--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no", *tls)
    )
    sentinel_port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port 0\ntls-port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"tls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {tmp_path / 'ca.crt'}\n"
        "tls-auth-clients no\ntls-replication yes\n"
        f"sentinel monitor mymaster 127.0.0.1 {port} 1\n"
    )
    master.start()
    sentinel = subprocess.Popen(
        [find_redis_server(), str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = (
        f"rediss+sentinel://127.0.0.1:{sentinel_port}/mymaster/0?ssl_ca_certs={tmp_path / 'ca.crt'}"
    )
    plain = url.replace("rediss+", "redis+").split("?")[0]

    async def write_and_read(url: str) -> str | None:
        link = RedisLink(url, None, 1.0)
        try:
            await link.client.set("k", "v")
            return await link.client.get("k")  # type: ignore[no-any-return]
        finally:
            await link.aclose()

    try:
        assert asyncio.run(_eventually_ok(lambda: write_and_read(url))) == "v"
        with pytest.raises((redis.RedisError, OSError)):
            asyncio.run(write_and_read(plain))  # the sentinel speaks TLS only
    finally:
        sentinel.kill()
        sentinel.wait()
        master.close()


async def _eventually_ok(call: Callable[[], Awaitable[str | None]]) -> str | None:
    """The sentinel answers once it has started: real process start-up, bounded."""
    for _ in range(100):
        try:
            return await call()
        except (redis.RedisError, OSError):
            await asyncio.sleep(0.05)
    return await call()


def test_on_a_cluster_only_a_queue_sharing_the_targets_hash_tag_is_read_in_the_same_script() -> (
    None
):
    reports = report_keys("inference", "m").reports
    cluster = RedisLink("redis+cluster://127.0.0.1:1", None, 1.0)
    assert not cluster.same_slot(reports, "q")  # the queues of the polling tests: read apart
    assert cluster.same_slot(reports, "{inference/m}:requests")
    assert RedisLink("redis://127.0.0.1:1/0", None, 1.0).same_slot(reports, "q")


@pytest.mark.parametrize("deployment", EVERY_DEPLOYMENT, indirect=True)
def test_hundreds_of_calls_in_flight_at_once_all_get_a_connection(deployment: Deployment) -> None:
    """A gateway under a burst of clients, or a worker with hundreds of slots busy, has that
    many calls in flight: each must get a connection, not "Too many connections"."""

    async def burst() -> list[Any]:
        link = RedisLink(deployment.url, None, 2.0, deployment.sentinel_password)
        try:
            # Each holds its connection 0.3 s: all 300 at once.
            calls = [link.client.blpop([f"{{burst}}:nothing-{i}"], timeout=0.3) for i in range(300)]
            return await asyncio.gather(*calls)
        finally:
            await link.aclose()

    assert asyncio.run(burst()) == [None] * 300
