"""gRPC server TLS, configured the way KEDA's TriggerAuthentication expects it.

KEDA verifies the scaler with `caCert`, and presents `tlsClientCert` /
`tlsClientKey` when set: so the scaler serves TLS_CERT_FILE / TLS_KEY_FILE (issued
for its Service's DNS name by that CA) and, with TLS_CLIENT_CA_FILE, refuses any
client without a certificate signed by that CA (mutual TLS).
"""

from __future__ import annotations

from pathlib import Path

import grpc

from scaler.settings import Settings, SettingsError


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """None when TLS is off (no certificate configured)."""
    if settings.tls_cert_file is None:
        return None
    assert settings.tls_key_file is not None  # settings_from_env checks they come in pairs
    cert = _read("TLS_CERT_FILE", settings.tls_cert_file, b"CERTIFICATE")
    key = _read("TLS_KEY_FILE", settings.tls_key_file, b"PRIVATE KEY")
    client_ca = None
    if settings.tls_client_ca_file is not None:
        client_ca = _read("TLS_CLIENT_CA_FILE", settings.tls_client_ca_file, b"CERTIFICATE")
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _read(name: str, path: str, marker: bytes) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(
            f"{name} = {path!r}, must be a readable PEM file: {exc.strerror}"
        ) from None
    if b"-----BEGIN" not in data or marker not in data:
        raise SettingsError(f"{name} = {path!r}, must be a PEM file holding a {marker.decode()}")
    return data
