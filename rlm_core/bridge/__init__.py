"""The gRPC bridge between the host (the RLM loop) and an agent inside a sandbox.

Modules here that the agent uses (``codec``, ``auth``'s server half, ``agent_server``) need
only the standard library, grpcio and protobuf.
"""

PROTOCOL_VERSION = 1
"""Bumped on any incompatible change to proto/rlm/v1; host and agent must agree."""

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest gRPC message either side sends or accepts (set explicitly on both ends)."""

CHUNK_BYTES = 1024 * 1024
"""Size of the chunks a context is streamed in."""

AUTH_METADATA_KEY = "authorization"
"""gRPC metadata key carrying ``Bearer <session token>``."""
