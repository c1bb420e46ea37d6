"""Session tokens and per-session TLS material (host side; the agent's check is
:mod:`rlm_core.agent.auth`).

The token is random per session, travels as gRPC metadata
(:data:`~rlm_core.agent.AUTH_METADATA_KEY`), is compared in constant time, and reaches the
agent through stdin or a secrets file, never through argv, and is never logged. TLS uses
a self-signed certificate made for one session; the host trusts exactly that certificate
(pinning) and nothing else.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from rlm_core.agent import AUTH_METADATA_KEY

TLS_SERVER_NAME = "rlm-agent"
"""The name in every session certificate; the host verifies the agent against it."""


def new_token() -> str:
    """A fresh 256-bit session token."""
    import secrets  # host side only: the agent never makes tokens

    return secrets.token_urlsafe(32)


def auth_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that authenticates the host."""
    return ((AUTH_METADATA_KEY, token),)


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
