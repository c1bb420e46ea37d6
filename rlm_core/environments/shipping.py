"""Shipping the agent into a sandbox: one file built from the host's own ``rlm_core``.

A cloud sandbox must run the host's agent, never ``pip install rlm-core`` (the public index
holds an unrelated package of that name). :func:`agent_bundle` builds a zipapp of exactly
the modules the agent imports (``rlm_core.agent``, the generated protocol code and the
shared REPL vocabulary) from the installed package. Upload its bytes with the provider's
file API (or bake them into an image) and start it with
``request.agent_argv("stdio", bundle=PATH)``: ``python3 PATH --stdio ...``. Only
``grpcio`` and ``protobuf`` must come from the sandbox's own package index.

Inside the sandbox the bundle checks that the ``rlm_core`` it imported is its own, of the
host's version, and exits with a plain message on stderr otherwise (an image with another
``rlm_core`` installed earlier on the path). The host checks the version again in the
handshake.
"""

from __future__ import annotations

import functools
import hashlib
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import rlm_core

BUNDLE_EXIT_MISMATCH = 3
"""The bundle's exit status when the sandbox imported some other ``rlm_core``."""

_PACKAGE = Path(rlm_core.__file__).resolve().parent

_SHARED_MODULES = ("__init__.py", "exceptions.py", "repl.py", "types.py", "vocabulary.py")
"""The top-level modules the agent imports (the shared REPL vocabulary; see the
import-linter contracts in pyproject.toml)."""

_PACKAGES = ("agent", "_proto")
"""The subpackages shipped whole."""

_MAIN = '''"""rlm-core agent {version}: python3 THIS_FILE --stdio ... (see rlm_core.agent.main)."""
import os
import sys

import rlm_core

_here = os.path.abspath(sys.path[0])
_got = os.path.abspath(rlm_core.__file__)
if not _got.startswith(_here + os.sep) or rlm_core.__version__ != {version!r}:
    sys.stderr.write(
        "rlm-core agent bundle {version}: this interpreter imported rlm_core "
        + getattr(rlm_core, "__version__", "?") + " from " + _got
        + " instead of the shipped one; remove it from the sandbox's path\\n"
    )
    sys.exit({status})

from rlm_core.agent.main import main

sys.exit(main())
'''


@dataclass(frozen=True)
class AgentBundle:
    """The agent as one zipapp: ``python3 <file> --stdio ...`` runs it."""

    data: bytes = field(repr=False)
    """The zipapp's bytes (upload them as they are)."""
    version: str
    """The ``rlm_core`` version it was built from (the host's)."""
    digest: str
    """SHA-256 of :attr:`data`, hex."""

    @property
    def filename(self) -> str:
        """A name that changes whenever the contents do: ``rlm-agent-<version>-<digest>.pyz``
        (a provider's image or file cache can key on it)."""
        return f"rlm-agent-{self.version}-{self.digest[:12]}.pyz"

    def write(self, directory: str | Path) -> Path:
        """Write the bundle into ``directory`` (for a same-host sandbox, a build context or
        a test) and return its path; an existing identical file is kept."""
        path = Path(directory) / self.filename
        if not (path.exists() and path.read_bytes() == self.data):
            path.write_bytes(self.data)
        return path


def _files() -> list[tuple[str, Path]]:
    """``(name in the zip, file)`` for every shipped module, in a stable order."""
    files = [(f"rlm_core/{name}", _PACKAGE / name) for name in _SHARED_MODULES]
    for package in _PACKAGES:
        for path in sorted((_PACKAGE / package).rglob("*.py")):
            files.append((f"rlm_core/{path.relative_to(_PACKAGE).as_posix()}", path))
    return files


@functools.cache
def agent_bundle() -> AgentBundle:
    """The agent bundle of the installed ``rlm_core`` (built once per process; the bytes
    are the same for the same sources, so its digest keys caches)."""
    version = rlm_core.__version__
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, path in _files():
            _add(archive, name, path.read_bytes())
        main = _MAIN.format(version=version, status=BUNDLE_EXIT_MISMATCH)
        _add(archive, "__main__.py", main.encode("utf-8"))
    data = buffer.getvalue()
    return AgentBundle(data, version, hashlib.sha256(data).hexdigest())


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))  # reproducible bytes
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)
