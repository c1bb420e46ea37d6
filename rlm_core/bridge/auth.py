"""Session tokens, the agent's token check and per-session TLS material.

The token is random per session, travels as gRPC metadata (``authorization: Bearer ...``),
is compared in constant time, and reaches the agent through stdin or a secrets file, never
through argv, and is never logged. TLS uses a self-signed certificate made for one session;
the host trusts exactly that certificate (pinning) and nothing else.
"""

from __future__ import annotations

import datetime
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from rlm_core.bridge import AUTH_METADATA_KEY

TLS_SERVER_NAME = "rlm-agent"
"""The name in every session certificate; the host verifies the agent against it."""


def new_token() -> str:
    """A fresh 256-bit session token."""
    import secrets  # host side only: the agent never makes tokens

    return secrets.token_urlsafe(32)


def auth_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that authenticates the host."""
    return ((AUTH_METADATA_KEY, f"Bearer {token}"),)


def _deny_unary(request: Any, context: grpc.ServicerContext) -> Any:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid or missing session token")


def _deny_stream(request_iterator: Any, context: grpc.ServicerContext) -> Any:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid or missing session token")


class TokenInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Rejects every call whose token does not match, before any handler runs."""

    def __init__(self, token: str, on_reject: Callable[[str], None] | None = None) -> None:
        self._expected = f"Bearer {token}".encode()
        self._on_reject = on_reject

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        supplied = ""
        for key, value in details.invocation_metadata or ():
            if key == AUTH_METADATA_KEY:
                supplied = value if isinstance(value, str) else value.decode("latin-1")
        if hmac.compare_digest(supplied.encode(), self._expected):
            return continuation(details)
        if self._on_reject is not None:
            self._on_reject(details.method)
        handler = continuation(details)
        if handler is None:
            return None
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(_deny_stream)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(_deny_stream)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(_deny_unary)
        return grpc.unary_unary_rpc_method_handler(_deny_unary)


@dataclass(frozen=True)
class TLSMaterial:
    """A per-session self-signed certificate and its private key (PEM); ``repr`` leaves the
    key out."""

    certificate: bytes
    private_key: bytes = field(repr=False)


def make_tls_material(hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TLSMaterial:
    """Create a self-signed certificate for :data:`TLS_SERVER_NAME` (needs ``cryptography``,
    the ``rlm-core[tls]`` extra; only the host needs it)."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "TLS needs the cryptography package: pip install 'rlm-core[tls]'"
        ) from exc
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TLS_SERVER_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName(TLS_SERVER_NAME)]
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return TLSMaterial(
        certificate=cert.public_bytes(serialization.Encoding.PEM),
        private_key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
