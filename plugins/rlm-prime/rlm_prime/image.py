"""The plugin's own Prime image: Python 3.12 with ``grpcio`` and ``protobuf``, nothing else.

The agent itself is not in the image: it is uploaded at each start (one small file built
from the host's ``rlm_core``, so it always matches the host). The image only saves every
session a ``pip install``, which would need egress the sandbox does not have by default.
It is built once per Prime account (or team) through the image API, under a name that says
what is in it, and found by that name afterwards, so a second session, or a second host,
does not build it again. Build it ahead of the first session with::

    python -m rlm_prime.image
"""

from __future__ import annotations

import argparse
import io
import tarfile
import threading
import time
from collections.abc import Callable
from typing import Any

RECIPE_VERSION = 1
"""Bumped whenever :data:`DOCKERFILE` changes, so a new image is built."""

IMAGE_NAME = "rlm-core-agent"
"""The image's name in the account's registry."""

IMAGE_TAG = f"v{RECIPE_VERSION}"
"""The image's tag."""

DOCKERFILE = (
    "FROM python:3.12-slim\nRUN pip install --no-cache-dir 'grpcio>=1.60' 'protobuf>=5.26'\n"
)
"""What the image holds (never ``rlm-core``: the public index has an unrelated package of
that name)."""

DOCKERFILE_PATH = "Dockerfile"
"""Where the Dockerfile is in the uploaded build context."""

POLL_INTERVAL = 2.0
"""Seconds between looks at a build under way."""

_known: dict[str, str] = {}
_lock = threading.Lock()

ACTIVE = {"PENDING", "UPLOADING", "BUILDING"}
"""Build states that may still end in a usable image."""


def build_context() -> bytes:
    """The build context: a gzipped tar holding only the Dockerfile."""
    data = DOCKERFILE.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(DOCKERFILE_PATH)
        info.size = len(data)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _reference(row: Any) -> str:
    """What ``docker_image`` names a listed image by."""
    return str(row.display_ref or row.full_image_path or f"{row.image_name}:{row.image_tag}")


def _rows(client: Any) -> list[Any]:
    """The listed artifacts of the plugin's image (every page)."""
    rows: list[Any] = []
    offset = 0
    while True:
        page = client.list(search=IMAGE_NAME, offset=offset, limit=100)
        rows += [
            row for row in page.data if (row.image_name, row.image_tag) == (IMAGE_NAME, IMAGE_TAG)
        ]
        offset += page.limit
        if not page.data or page.total_count is None or offset >= page.total_count:
            return rows


def _state(client: Any) -> tuple[str | None, bool]:
    """The image's reference once a build of it completed (``None`` before), and whether
    a build of it is under way."""
    rows = _rows(client)
    done = [row for row in rows if row.status.value == "COMPLETED"]
    if done:
        done.sort(key=lambda row: row.artifact_type.value != "VM_SANDBOX")
        return _reference(done[0]), False
    return None, any(row.status.value in ACTIVE for row in rows)


def _build(client: Any) -> None:
    """Ask for a build, upload its context and start it."""
    import httpx
    from prime_sandboxes import BuildImageRequest

    started = client.initiate_build(
        BuildImageRequest(
            image_name=IMAGE_NAME, image_tag=IMAGE_TAG, dockerfile_path=DOCKERFILE_PATH
        )
    )
    response = httpx.put(
        started.upload_url,
        content=build_context(),
        headers={"Content-Type": "application/octet-stream"},
        timeout=120.0,
    )
    response.raise_for_status()
    client.start_build(started.build_id)


def ensure_image(
    progress: Callable[[str], None] = lambda message: None, timeout: float = 1800.0
) -> str:
    """The plugin's image reference, built first if the account lacks it (looked up once
    per process and API base URL), waiting up to ``timeout`` seconds for a build."""
    from prime_sandboxes import APIClient

    api = APIClient()
    try:
        return _ensure(api, progress, timeout)
    finally:
        api.client.close()


def _ensure(api: Any, progress: Callable[[str], None], timeout: float) -> str:
    from prime_sandboxes import ImageClient

    key = f"{api.base_url} {api.config.team_id}"
    with _lock:
        if key in _known:
            return _known[key]
        client = ImageClient(api)
        deadline = time.monotonic() + timeout
        built = False
        while True:
            reference, building = _state(client)
            if reference is not None:
                break
            if not building:
                if built:
                    raise RuntimeError(
                        f"the build of the Prime image {IMAGE_NAME}:{IMAGE_TAG} failed "
                        "(`prime images list` shows it)"
                    )
                progress(f"building the Prime image {IMAGE_NAME}:{IMAGE_TAG} (once per account)")
                _build(client)
                built = True
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the Prime image {IMAGE_NAME}:{IMAGE_TAG} was not built in time"
                )
            time.sleep(POLL_INTERVAL)
        _known[key] = reference
        return reference


def main(argv: list[str] | None = None) -> int:
    """``python -m rlm_prime.image``: build the image now (PRIME_API_KEY must be set)."""
    parser = argparse.ArgumentParser(prog="python -m rlm_prime.image", description=__doc__)
    parser.parse_args(argv)
    print(ensure_image(progress=print))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
