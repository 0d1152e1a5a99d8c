"""TLS and mutual TLS as KEDA uses them, Redis AUTH and TLS, and bounds on what clients can cost."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
import redis

from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from scaler.local_redis import LocalRedis
from scaler.settings import SettingsError, settings_from_env
from tests.certs import CertificateAuthority
from tests.harness import KedaClient, RunningScaler, ref, scaler_settings


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("pki")
    ca, rogue = CertificateAuthority("llm-scaler test CA"), CertificateAuthority("someone else")
    (folder / "ca.crt").write_bytes(ca.cert_pem)
    server_cert, server_key = ca.issue("llm-scaler", server=True).write(folder, "server")
    return {
        "folder": folder,
        "ca_file": str(folder / "ca.crt"),
        "ca_pem": ca.cert_pem,
        "server_cert": server_cert,
        "server_key": server_key,
        "client": ca.issue("keda-operator", server=False),
        "rogue_client": rogue.issue("keda-operator", server=False),
    }


@pytest.fixture
def tls_scaler(
    redis_server: LocalRedis, redis_client: redis.Redis, pki: dict
) -> Iterator[RunningScaler]:  # type: ignore[type-arg]
    settings = replace(
        scaler_settings(redis_server.url),
        tls_cert_file=pki["server_cert"],
        tls_key_file=pki["server_key"],
        tls_client_ca_file=pki["ca_file"],
    )
    running = RunningScaler(settings, None)
    yield running
    running.stop()


def _secure_poll(address: str, ca: bytes, client: object | None) -> bool:
    cert_chain = private_key = None
    if client is not None:
        cert_chain, private_key = client.cert_pem, client.key_pem  # type: ignore[attr-defined]
    credentials = grpc.ssl_channel_credentials(ca, private_key, cert_chain)
    with grpc.secure_channel(address, credentials) as channel:
        return KedaClient(pb_grpc.ExternalScalerStub(channel)).poll(ref("m")).active


def test_keda_with_the_ca_and_a_client_certificate_is_served(
    tls_scaler: RunningScaler, pki: dict
) -> None:  # type: ignore[type-arg]
    assert _secure_poll(tls_scaler.address, pki["ca_pem"], pki["client"]) is False


@pytest.mark.parametrize(
    "client", ["none", "rogue_client"], ids=["no-client-cert", "cert-from-another-ca"]
)
def test_a_client_without_a_valid_certificate_is_refused(
    tls_scaler: RunningScaler,
    pki: dict,
    client: str,  # type: ignore[type-arg]
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        _secure_poll(tls_scaler.address, pki["ca_pem"], pki.get(client))
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


def test_plaintext_is_refused_when_tls_is_on(tls_scaler: RunningScaler) -> None:
    with grpc.insecure_channel(tls_scaler.address) as channel, pytest.raises(grpc.RpcError) as err:
        pb_grpc.ExternalScalerStub(channel).IsActive(ref("m"), timeout=3)
    assert err.value.code() is grpc.StatusCode.UNAVAILABLE


def test_server_tls_without_client_ca_serves_any_client_that_trusts_it(
    redis_server: LocalRedis,
    redis_client: redis.Redis,
    pki: dict,  # type: ignore[type-arg]
) -> None:
    settings = replace(
        scaler_settings(redis_server.url),
        tls_cert_file=pki["server_cert"],
        tls_key_file=pki["server_key"],
    )
    running = RunningScaler(settings, None)
    try:
        assert _secure_poll(running.address, pki["ca_pem"], None) is False
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TLS_CERT_FILE": "/x.crt"}, "TLS_CERT_FILE and TLS_KEY_FILE must be set together"),
        ({"TLS_CLIENT_CA_FILE": "/ca.crt"}, "TLS_CLIENT_CA_FILE = '/ca.crt' needs TLS_CERT_FILE"),
        ({"MAX_STREAMS": "0"}, "MAX_STREAMS = '0', must be an integer in [1; 1000000]"),
    ],
    ids=["cert-without-key", "client-ca-alone", "no-streams"],
)
def test_tls_and_limit_settings_are_checked(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as err:
        settings_from_env(env)
    assert message in str(err.value)


def test_unreadable_certificate_stops_the_start_naming_the_setting(
    redis_server: LocalRedis,
    pki: dict,
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    (tmp_path / "not-pem.crt").write_text("hello")
    settings = replace(
        scaler_settings(redis_server.url),
        tls_cert_file=str(tmp_path / "not-pem.crt"),
        tls_key_file=pki["server_key"],
    )
    with pytest.raises(RuntimeError) as err:
        RunningScaler(settings, None)
    assert "TLS_CERT_FILE" in str(err.value) and "must be a PEM file" in str(err.value)


def test_oversized_requests_are_refused(scaler: RunningScaler) -> None:
    huge = ref("m", padding="x" * 200_000)
    with pytest.raises(grpc.RpcError) as err:
        scaler.stub.IsActive(huge, timeout=3)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_streams_beyond_max_streams_are_refused_and_slots_come_back(
    redis_server: LocalRedis, redis_client: redis.Redis
) -> None:
    running = RunningScaler(replace(scaler_settings(redis_server.url), max_streams=2), None)
    try:
        first = running.stub.StreamIsActive(ref("a"), timeout=10)
        second = running.stub.StreamIsActive(ref("b"), timeout=10)
        assert next(first).result is False and next(second).result is False
        third = running.stub.StreamIsActive(ref("c"), timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            next(third)
        assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "MAX_STREAMS = 2" in err.value.details()
        first.cancel()
        for _ in range(500):  # the server notices the cancel a moment later
            again = running.stub.StreamIsActive(ref("c"), timeout=10)
            try:
                assert next(again).result is False
                break
            except grpc.RpcError:
                continue
        else:
            raise AssertionError("the freed stream slot never came back")
        again.cancel()
        second.cancel()
    finally:
        running.stop()


@pytest.fixture
def redis_with_auth() -> Iterator[LocalRedis]:
    server = LocalRedis(extra_args=("--requirepass", "s3cret-pw"))
    server.start()
    with redis.Redis(port=server.port, password="s3cret-pw") as admin:
        admin.execute_command("ACL", "SETUSER", "scaler", "on", ">scaler-pw", "~*", "&*", "+@all")
    yield server
    server.close()


@pytest.mark.parametrize(
    ("url_auth", "password"),
    [("", "s3cret-pw"), (":s3cret-pw@", None), ("scaler@", "scaler-pw")],
    ids=["password-from-env", "password-in-url", "acl-user"],
)
def test_redis_auth(redis_with_auth: LocalRedis, url_auth: str, password: str | None) -> None:
    url = f"redis://{url_auth}127.0.0.1:{redis_with_auth.port}/0"
    running = RunningScaler(replace(scaler_settings(url), redis_password=password), None)
    try:
        assert running.keda.poll(ref("m")).active is False
    finally:
        running.stop()


def test_wrong_redis_password_is_unavailable_and_never_shown(
    redis_with_auth: LocalRedis, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://127.0.0.1:{redis_with_auth.port}/0"
    running = RunningScaler(replace(scaler_settings(url), redis_password="wrong-guess"), None)
    try:
        with pytest.raises(grpc.RpcError) as err:
            running.keda.poll(ref("m"))
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "wrong-guess" not in err.value.details()
    finally:
        running.stop()
    assert "wrong-guess" not in caplog.text
    assert "s3cret-pw" not in caplog.text


def _tls_redis(pki: dict, *extra_args: str) -> tuple[LocalRedis, int]:  # type: ignore[type-arg]
    """A redis-server that also listens with TLS (server certificate from the test CA)."""
    tls_port = LocalRedis().port
    tls = ("--tls-port", str(tls_port), "--tls-cert-file", pki["server_cert"])
    tls += ("--tls-key-file", pki["server_key"], "--tls-ca-cert-file", pki["ca_file"])
    server = LocalRedis(extra_args=(*extra_args, *tls, "--tls-auth-clients", "no"))
    try:
        server.start()
    except RuntimeError:
        pytest.skip("this redis-server was built without TLS support")
    return server, tls_port


def test_redis_over_tls(pki: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    folder = pki["folder"]
    server, tls_port = _tls_redis(pki)
    url = f"rediss://localhost:{tls_port}/0?ssl_ca_certs={folder}/ca.crt"
    running = RunningScaler(scaler_settings(url), None)
    try:
        assert running.keda.poll(ref("m")).active is False
    finally:
        running.stop()
        server.close()


def test_the_sidecar_reports_through_an_acl_user_and_over_tls(
    redis_with_auth: LocalRedis,
    pki: dict,  # type: ignore[type-arg]
) -> None:
    from tests.test_sidecar_process import eventually, pods

    server, tls_port = _tls_redis(pki, "--requirepass", "s3cret-pw")
    urls = {
        "acl-user": (
            f"redis://scaler@127.0.0.1:{redis_with_auth.port}/0",
            "scaler-pw",
            redis_with_auth,
        ),
        "tls": (
            f"rediss://localhost:{tls_port}/0?ssl_ca_certs={pki['ca_file']}",
            "s3cret-pw",
            server,
        ),
    }
    try:
        for name, (url, password, where) in urls.items():
            with pods(f"llama-{name}", target="llama", redis_url=url, REDIS_PASSWORD=password) as (
                pod,
            ):
                pod.load(active=2)
                with redis.Redis(port=where.port, password="s3cret-pw") as admin:
                    keys = pod.keys
                    found = eventually(
                        lambda k=keys, p=pod: admin.hget(k.reports, p.name),  # type: ignore[misc]
                        lambda got: got is not None,
                    )
                assert found is not None, name
                output = pod.close()
                assert "s3cret-pw" not in output and "scaler-pw" not in output
    finally:
        server.close()
