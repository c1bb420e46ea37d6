"""The host side of the bridge: never shipped into a sandbox.

:mod:`~rlm_core.bridge.client` owns every RPC to an agent and maps gRPC status codes to
typed errors; :mod:`~rlm_core.bridge.subcalls` serves the sub-LM and tool calls an agent
sends; :mod:`~rlm_core.bridge.carriers` moves the bytes (``dial``, ``stdio``, ``reverse``);
:mod:`~rlm_core.bridge.tls` makes session tokens and certificates. The agent's side is
:mod:`rlm_core.agent`.
"""
