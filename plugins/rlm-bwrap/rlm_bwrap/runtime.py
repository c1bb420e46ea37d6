"""The Python runtime a sandbox sees: which host paths the agent needs, found by asking
the interpreter itself (once per interpreter and package list, per host process)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from dataclasses import dataclass

from rlm_bwrap.errors import BwrapUnavailableError
from rlm_core.environments.launching import with_package_on_path

AGENT_MODULES = (
    "rlm_core.agent.main",
    "rlm_core.agent.server",
    "rlm_core.agent.supervisor",
    "rlm_core.agent.relay",
)
"""What the agent imports; every package these pull in is made visible in the sandbox."""

_QUERY = r"""
import importlib, json, os, site, sys, sysconfig
before = set(sys.modules)
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
prefix = os.path.realpath(sys.base_prefix)
scheme = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})
sites = {os.path.realpath(p) for p in [*site.getsitepackages(), scheme["purelib"],
         scheme["platlib"]]}
sites = sorted(p for p in sites if p.startswith(prefix + os.sep) and os.path.isdir(p))
def inside(path, folders):
    return any(path.startswith(f + os.sep) for f in folders)
packages, roots = set(), set()
for name in sorted(set(sys.modules) - before):
    parts = name.split(".")
    depth, location = 0, None
    while location is None and depth < len(parts):  # past namespace packages
        depth += 1
        location = getattr(sys.modules.get(".".join(parts[:depth])), "__file__", None)
    if location is None:
        continue
    location = os.path.realpath(location)
    if os.path.basename(location).startswith("__init__."):
        location = os.path.dirname(location)
    if inside(location, [prefix]) and not inside(location, sites):
        continue  # the standard library
    root = location
    for _ in range(depth):
        root = os.path.dirname(root)
    packages.add(location)
    roots.add(root)
libraries = set()
with open("/proc/self/maps") as maps:
    for line in maps:
        path = line.split()[-1]
        if path.startswith("/") and ".so" in os.path.basename(path):
            libraries.add(os.path.dirname(os.path.realpath(path)))
print(json.dumps({
    "interpreter": os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable),
    "prefix": prefix,
    "sites": sites,
    "packages": sorted(packages),
    "path": sorted(roots),
    "libraries": sorted(libraries),
}))
"""


@dataclass(frozen=True)
class Runtime:
    """Host paths that make up the agent's Python runtime inside the sandbox."""

    interpreter: str
    """The base interpreter (a virtual environment's own ``python`` is not used)."""
    prefix: str
    """The interpreter's installation prefix (standard library included), bound read-only."""
    sites: tuple[str, ...]
    """Site-packages directories inside :attr:`prefix`, hidden."""
    packages: tuple[str, ...]
    """The packages (directories or single modules) the agent and the cells import."""
    path: tuple[str, ...]
    """``PYTHONPATH`` entries that find :attr:`packages`."""
    libraries: tuple[str, ...]
    """Directories of the shared libraries the interpreter and those packages load."""


@functools.lru_cache(maxsize=16)
def python_runtime(python: str, modules: tuple[str, ...] = ()) -> Runtime:
    """Ask ``python`` which files running the agent (and importing ``modules``) needs."""
    argv = [python, "-c", _QUERY, json.dumps([*AGENT_MODULES, *modules])]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=120,
            env=with_package_on_path(dict(os.environ)),
            cwd="/",
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise BwrapUnavailableError(f"could not run the interpreter {python!r}: {exc}") from exc
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise BwrapUnavailableError(
            f"the interpreter {python!r} cannot import the agent or the requested packages "
            f"{list(modules)}: {tail[0]}"
        )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return Runtime(
        interpreter=found["interpreter"],
        prefix=found["prefix"],
        sites=tuple(found["sites"]),
        packages=tuple(found["packages"]),
        path=tuple(found["path"]),
        libraries=tuple(found["libraries"]),
    )
