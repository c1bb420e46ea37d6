"""The sandbox side: everything in this package ships into a sandbox.

``python -m rlm_core.agent`` serves the bridge protocol inside a sandbox. Modules here
import only the standard library, grpcio, protobuf, :mod:`rlm_core._proto` and the shared
REPL vocabulary (:mod:`rlm_core.repl`, :mod:`rlm_core.vocabulary`, :mod:`rlm_core.types`,
:mod:`rlm_core.exceptions`); never the host side (:mod:`rlm_core.bridge`, the loop,
environments or backends). Import-linter contracts in ``make lint`` keep it so.
"""

PROTOCOL_VERSION = 1
"""Bumped on any incompatible change to proto/rlm/v1; host and agent must agree."""

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest gRPC message either side sends or accepts (set explicitly on both ends)."""

CHUNK_BYTES = 1024 * 1024
"""Size of the chunks a context is streamed in."""

AUTH_METADATA_KEY = "x-rlm-session-token"
"""gRPC metadata key carrying the session token. Not ``authorization``: a provider's
proxy may claim that header for its own credentials (Modal's connect tokens do)."""

READY_PREFIX = "RLM-AGENT-READY"
"""The first word of the line the agent prints once it serves."""
