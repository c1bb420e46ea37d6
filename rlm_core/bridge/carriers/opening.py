"""Turn a launcher's connection into a gRPC route the client can dial."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from rlm_core.bridge.carriers import Dial, Reverse, Stdio
from rlm_core.exceptions import SandboxError


@dataclass
class OpenCarrier:
    """A carrier ready for a gRPC channel: ``route`` to dial, and the relay behind it
    (``None`` for ``dial``)."""

    name: str
    route: Dial
    relay: Any = None
    listener: Any = None

    def failure(self) -> str | None:
        """Why the relay stopped carrying bytes, once it has."""
        return None if self.relay is None else self.relay.error

    def diagnostics(self) -> str:
        """What the agent's process wrote before its ready line (a shell's banner, an
        error from the interpreter), when the carrier saw it."""
        preamble = getattr(self.relay, "preamble", None) or []
        return "\n".join(preamble)

    def close(self) -> None:
        """Stop the relay (and the listener) and remove their sockets."""
        for part in (self.relay, self.listener):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.close()


def open_carrier(connection: Any, secrets_json: str, deadline: float) -> OpenCarrier:
    """Set up ``connection`` (what :meth:`Launcher.launch` returned) by ``deadline`` (a
    :func:`time.monotonic` time): for ``stdio``, hand the agent its secrets, read its
    ready line and start the relay; for ``reverse``, wait for the agent to dial in."""
    if isinstance(connection, Dial):
        return OpenCarrier("dial", connection)
    if isinstance(connection, Stdio):
        from rlm_core.bridge.carriers.stdio import StdioRelay

        relay = StdioRelay(connection.stream, connection.framing)
        try:
            relay.hand_secrets(secrets_json)
            relay.wait_ready(deadline)
            target = relay.start()
        except BaseException:
            relay.close()
            raise
        return OpenCarrier("stdio", Dial(target), relay)
    if isinstance(connection, Reverse):
        listener = connection.listener
        try:
            relay = listener.accept(deadline)
            target = relay.start()
        except BaseException:
            listener.close()
            raise
        return OpenCarrier("reverse", Dial(target), relay, listener)
    raise SandboxError(
        f"the launcher returned {type(connection).__name__}; launch() must return Dial, "
        "Stdio or Reverse (from rlm_core.bridge.carriers)"
    )


def remaining(deadline: float) -> float:
    """Seconds until ``deadline`` (never negative)."""
    return max(0.0, deadline - time.monotonic())
