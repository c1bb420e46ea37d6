"""Turn a launcher's connection into a gRPC route the client can dial."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
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
            _within(deadline, relay.hand_secrets, secrets_json)
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


def _within(deadline: float, call: Callable[[str], None], argument: str) -> None:
    """``call(argument)`` on a helper thread, given up on at ``deadline``: a provider's
    stdin write that never returns must not hold the start beyond its deadline."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call(argument)
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, name="rlm-carrier-secrets", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if not outcome:
        raise SandboxError("the agent's stdin did not take its secrets in time")
    if outcome[0] is not None:
        raise outcome[0]
