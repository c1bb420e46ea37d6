"""The container engine's command-line client: finding it, checking an image, listing and
removing containers by label.

Every call runs the engine's CLI (``docker``, or ``podman``, which takes the same
arguments), so whatever the user's CLI reaches (``DOCKER_HOST``, a Docker context, rootless
Podman) is what the plugin uses.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rlm_core.environments.launcher import SANDBOX_LABEL
from rlm_docker.errors import DockerEngineError, DockerImageError

log = logging.getLogger(__name__)

ENGINE_VARIABLE = "RLM_DOCKER_ENGINE"
"""The environment variable naming the engine's CLI when the ``engine`` setting is not
given (also what ``rlm cleanup docker`` uses); default ``docker``."""

USER_TAG = "rlm-tag"
"""The label that carries the ``tag`` setting."""

TAG_KEYS = (SANDBOX_LABEL, "rlm-session", "rlm-environment", "rlm-host", USER_TAG)
"""The labels whose values a ``tag`` is matched against when listing."""

_UNREACHABLE = (
    "cannot connect",
    "connection refused",
    "error during connect",
    "is the docker daemon running",
    "no such file or directory",
    "permission denied",
)


def engine_name(engine: str | None = None) -> str:
    """``engine``, else ``$RLM_DOCKER_ENGINE``, else ``docker``."""
    return engine or os.environ.get(ENGINE_VARIABLE) or "docker"


def engine_path(engine: str | None = None) -> str:
    """The engine CLI's full path; :class:`DockerEngineError` when it is not installed."""
    name = engine_name(engine)
    path = shutil.which(name)
    if path is None:
        raise DockerEngineError(
            f"the docker environment runs containers with the {name!r} command, which is "
            "not installed (not on PATH): install Docker (or Podman and set "
            "engine='podman'), or set engine to the CLI's path"
        )
    return path


@dataclass(frozen=True)
class Outcome:
    """What one CLI call returned."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(engine: str, args: Sequence[str], timeout: float) -> Outcome:
    """Run ``engine args...`` and collect its output (``DockerEngineError`` when it could not
    run or did not finish within ``timeout`` seconds)."""
    try:
        done = subprocess.run(
            [engine, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise DockerEngineError(
            f"'{os.path.basename(engine)} {args[0]}' did not finish within {timeout:g}s: is "
            "the engine's daemon responsive?"
        ) from exc
    except OSError as exc:
        raise DockerEngineError(f"could not run {engine}: {exc}") from exc
    return Outcome(done.returncode, done.stdout, done.stderr.strip())


def unreachable(outcome: Outcome) -> bool:
    """Whether a failed call says the engine's daemon cannot be reached."""
    said = outcome.stderr.lower()
    return outcome.returncode != 0 and any(words in said for words in _UNREACHABLE)


def ensure_image(
    engine: str, image: str, pull: str, timeout: float, pull_timeout: float = 600.0
) -> None:
    """Make sure ``image`` is on the engine: pull it when it is missing (``pull="missing"``)
    or always (``"always"``); with ``"never"`` a missing image is an error. Lookups may
    take ``timeout`` seconds, the pull ``pull_timeout``.

    Raises :class:`DockerEngineError` when the engine does not answer and
    :class:`DockerImageError` when the image is missing and cannot be pulled.
    """
    if pull != "always":
        found = run_cli(engine, ["image", "inspect", "--format", "{{.Id}}", image], timeout)
        if found.returncode == 0:
            return
        if unreachable(found) or not _answers(engine, timeout):
            raise DockerEngineError(
                f"the container engine ({engine}) does not answer: {found.stderr}"
            )
        if pull == "never":
            raise DockerImageError(
                f"the image {image!r} is not on the container engine and pull='never': "
                f"build or pull it first ({os.path.basename(engine)} pull {image})"
            )
    log.info("pulling the image %s", image)
    pulled = run_cli(engine, ["pull", image], pull_timeout)
    if pulled.returncode != 0:
        raise DockerImageError(
            f"the image {image!r} is not on the container engine and could not be pulled: "
            f"{pulled.stderr or pulled.stdout.strip()}"
        )


def _answers(engine: str, timeout: float) -> bool:
    """Whether the engine's daemon answers (a failed image lookup may mean it does not)."""
    return run_cli(engine, ["version"], timeout).returncode == 0


def list_containers(engine: str, tag: str | None, timeout: float = 30.0) -> list[str]:
    """The names of the containers (running or not) that carry the ``rlm-core`` label, or a
    label of :data:`TAG_KEYS` with value ``tag`` when given."""
    filters = [SANDBOX_LABEL] if tag is None else [f"{key}={tag}" for key in TAG_KEYS]
    names: set[str] = set()
    for label in filters:
        args = ["ps", "--all", "--filter", f"label={label}", "--format", "{{.Names}}"]
        listed = run_cli(engine, args, timeout)
        if listed.returncode != 0:
            raise DockerEngineError(f"could not list containers: {listed.stderr}")
        names.update(line.strip() for line in listed.stdout.splitlines() if line.strip())
    return sorted(names)


def remove_containers(engine: str, names: Iterable[str], timeout: float = 30.0) -> list[str]:
    """Kill and remove containers (``rm --force``); return the names that were removed."""
    removed: list[str] = []
    for name in dict.fromkeys(names):
        outcome = run_cli(engine, ["rm", "--force", name], timeout)
        if outcome.returncode == 0:
            removed.append(name)
        elif "no such container" not in outcome.stderr.lower():
            log.warning("could not remove container %s: %s", name, outcome.stderr)
    return removed
