"""Docker (or Podman) containers for rlm-core: ``RLM(environment="docker")``.

The plugin is a launcher: it runs a container from an image that has ``python3``, ``grpcio``
and ``protobuf``, sends the host's agent into it on the container's stdin and relays the
bridge over ``docker run -i``. It drives the engine's command-line client, so it imports no
SDK.
"""

from rlm_docker.environment import DockerEnvironment
from rlm_docker.errors import DockerEngineError, DockerImageError

__all__ = ["DockerEngineError", "DockerEnvironment", "DockerImageError"]
