"""Carriers: how the bridge's bytes travel between the host and an agent.

The gRPC protocol is the same over every carrier; a launcher picks one by returning its
connection object from :meth:`~rlm_core.environments.launcher.Launcher.launch`:

* :class:`Dial`: the host dials the agent (TCP, a Unix socket, a provider's tunnel), in
  plaintext, with the session's pinned certificate, or through a public-CA TLS endpoint;
* :class:`Stdio`: the agent runs with ``--stdio`` in a process the launcher started in the
  sandbox (a provider's exec handle); the host relays HTTP/2 over its stdin and stdout.
  Needs no network at all inside the sandbox;
* :class:`Reverse`: the agent dials out (``--dial HOST:PORT``) to a listener the host
  opened (:meth:`~rlm_core.environments.launcher.LaunchRequest.reverse_listener`) and a
  tunnel exposes.

These classes are plain descriptions (no gRPC is loaded to make one);
:mod:`rlm_core.bridge.client` opens the channel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rlm_core.bridge.carriers.reverse import ReverseListener
    from rlm_core.bridge.carriers.stdio import ByteStream

TLSMode = Literal["session", "public", "none"]
"""``session``: TLS with the session's own certificate, pinned by the host (the agent
serves TLS). ``public``: TLS ends at a provider's endpoint that has a public-CA
certificate; the host checks it against the system roots and the real host name, and the
agent serves plaintext behind it. ``none``: plaintext (a private route only)."""

Framing = Literal["binary", "base64"]
"""How relayed bytes are framed on a process's stdin and stdout: ``binary``, or
``base64`` lines for SDKs that hand back stdout as decoded text."""


@dataclass(frozen=True)
class Dial:
    """The host dials the agent at ``target`` (``HOST:PORT`` or ``unix:/path``).

    ``tls``: ``None`` follows the environment's ``tls`` setting (``session`` when it is on,
    ``none`` when it is off); see :data:`TLSMode` for the others. ``server_certificate``
    pins a certificate other than the session's. ``server_name`` is the name checked in
    the certificate (default: the session certificate's name, or the target's host for
    ``public``). ``authority`` sets HTTP/2's ``:authority`` (what a proxy routes on).
    ``metadata`` is sent with every call, for a proxy's own credentials (keys lower-case,
    e.g. ``{"x-daytona-preview-token": ...}``); it may use ``authorization``: the session
    token travels under its own key.
    """

    target: str
    tls: TLSMode | None = None
    server_certificate: bytes | None = None
    server_name: str | None = None
    authority: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = [key for key in self.metadata if key != key.lower() or not key]
        if bad:
            raise ValueError(f"gRPC metadata keys must be lower-case: {bad}")
        if self.tls not in (None, "session", "public", "none"):
            raise ValueError(f"tls must be 'session', 'public', 'none' or None, not {self.tls!r}")

    def __repr__(self) -> str:  # metadata may hold a proxy's credentials
        return f"Dial(target={self.target!r}, tls={self.tls!r}, metadata={sorted(self.metadata)})"


@dataclass(frozen=True)
class Stdio:
    """The agent (started with ``--stdio``) talks over ``stream``, the stdin and stdout
    of a process the launcher started in the sandbox. The host sends the session secrets
    on it, reads the agent's ready line, then relays HTTP/2 over it."""

    stream: ByteStream
    framing: Framing = "binary"


@dataclass(frozen=True)
class Reverse:
    """The agent (started with ``--dial``) connects to ``listener``, which the launcher
    opened with :meth:`~rlm_core.environments.launcher.LaunchRequest.reverse_listener`."""

    listener: ReverseListener


Connection = Dial | Stdio | Reverse
"""What a launcher returns: one of the three carriers."""

CARRIERS = ("dial", "stdio", "reverse")
"""The carrier names, as :meth:`LaunchRequest.agent_argv` takes them."""
