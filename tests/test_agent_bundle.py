"""The shipped agent: one zipapp of exactly what the agent imports, that runs in an
interpreter with nothing but grpcio and protobuf, refuses to run on another ``rlm_core``,
and is refused by a host of another version."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import google.protobuf
import grpc
import pytest
import typing_extensions
from rlm_conformance.doubles import RecordingSubcalls

from rlm_core import ProtocolMismatchError, __version__
from rlm_core.environments.base import Session
from rlm_core.environments.launcher import Carrier, Launcher, LaunchRequest
from rlm_core.environments.loopback import LoopbackEnvironment, LoopbackLauncher
from rlm_core.environments.shipping import BUNDLE_EXIT_MISMATCH, AgentBundle, agent_bundle

pytestmark = pytest.mark.timeout(120)


def names(bundle: AgentBundle) -> list[str]:
    return zipfile.ZipFile(io.BytesIO(bundle.data)).namelist()


def test_the_bundle_holds_the_agent_and_nothing_of_the_host_side() -> None:
    shipped = names(agent_bundle())
    assert "__main__.py" in shipped
    assert (
        "rlm_core/agent/server.py" in shipped and "rlm_core/_proto/rlm/v1/agent_pb2.py" in shipped
    )
    assert {"rlm_core/repl.py", "rlm_core/vocabulary.py", "rlm_core/types.py"} <= set(shipped)
    host_side = (
        "rlm_core/rlm.py",
        "rlm_core/bridge/",
        "rlm_core/backends/",
        "rlm_core/environments/",
    )
    assert not [n for n in shipped if n.startswith(host_side)]
    assert agent_bundle().filename == f"rlm-agent-{__version__}-{agent_bundle().digest[:12]}.pyz"


def test_the_same_sources_give_the_same_bytes() -> None:
    code = "from rlm_core.environments.shipping import agent_bundle; print(agent_bundle().digest)"
    digests = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert digests == {agent_bundle().digest}


@pytest.fixture
def bare_python(tmp_path: Path) -> tuple[str, str]:
    """An interpreter without site-packages (``python -S``) and a directory holding only
    grpcio and protobuf (and grpcio's one dependency): what a sandbox with
    ``pip install grpcio protobuf`` has."""
    deps = tmp_path / "deps"
    deps.mkdir()
    (deps / "grpc").symlink_to(Path(grpc.__file__).parent)
    (deps / "google").symlink_to(Path(google.protobuf.__file__).parent.parent)
    (deps / "typing_extensions.py").symlink_to(typing_extensions.__file__)
    wrapper = tmp_path / "python-bare"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper), str(deps)


class BareLauncher(LoopbackLauncher):
    """The shipped agent in the bare interpreter, over stdio."""

    deps = ""

    def agent_environment(self) -> dict[str, str]:
        return {"PYTHONPATH": self.deps, "PATH": os.environ.get("PATH", "/usr/bin")}


def bare_environment(python: str, deps: str, bundle: AgentBundle | None = None) -> Any:
    class Bare(LoopbackEnvironment):
        def make_launcher(self) -> Launcher:
            launcher = BareLauncher("stdio", python=python, ship=True)
            launcher.deps = deps
            if bundle is not None:
                launcher._argv = lambda request, carrier, **o: _with(  # type: ignore[method-assign]
                    launcher, bundle, request, carrier, **o
                )
            self.launcher = launcher
            return launcher

    return Bare()


def _with(
    launcher: LoopbackLauncher,
    bundle: AgentBundle,
    request: LaunchRequest,
    carrier: Carrier,
    **o: Any,
) -> list[str]:
    path = str(bundle.write(launcher._private_dir()))
    return request.agent_argv(carrier, python=launcher.python, bundle=path, **o)


@pytest.fixture
def started() -> Iterator[list[Any]]:
    envs: list[Any] = []
    yield envs
    for env in envs:
        env.close()


def test_the_bundle_runs_with_only_grpcio_and_protobuf(
    bare_python: tuple[str, str], started: list[Any]
) -> None:
    env = bare_environment(*bare_python)
    started.append(env)
    env.start(Session(subcalls=RecordingSubcalls()))
    env.add_context("shipped " * 1000)
    out = env.execute(
        "import rlm_core, sys\n"
        "try:\n    import pluggy\nexcept ImportError:\n    pluggy = None\n"
        "print(rlm_core.__file__.split('.pyz')[-1], pluggy, len(context.split()), llm_query('hi'))"
    )
    assert out.error is None, out.stderr
    assert out.stdout == "/rlm_core/__init__.py None 1000 llm:hi\n"
    assert env.agent_info.agent_version == __version__


def test_the_bundle_refuses_to_run_on_another_rlm_core(tmp_path: Path) -> None:
    path = agent_bundle().write(tmp_path)
    other = tmp_path / "other" / "rlm_core"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("__version__ = '0.0.9'\n")
    code = (
        f"import sys, runpy\nsys.path.insert(0, {str(other.parent)!r})\nimport rlm_core\n"
        f"sys.path.insert(0, {str(path)!r})\nsys.argv = [{str(path)!r}, '--stdio']\n"
        f"runpy.run_path({str(path)!r}, run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True)
    assert done.returncode == BUNDLE_EXIT_MISMATCH
    assert f"rlm-core agent bundle {__version__}" in done.stderr
    assert "imported rlm_core 0.0.9 from " + str(other / "__init__.py") in done.stderr


def test_the_host_refuses_an_agent_of_another_version(
    bare_python: tuple[str, str], started: list[Any]
) -> None:
    data = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(agent_bundle().data)) as source,
        zipfile.ZipFile(data, "w") as target,
    ):
        for name in source.namelist():
            text = source.read(name)
            if name in ("rlm_core/__init__.py", "__main__.py"):
                text = text.replace(repr(__version__).encode(), b"'9.9.9'")
                text = text.replace(f'"{__version__}"'.encode(), b'"9.9.9"')
            target.writestr(name, text)
    other = AgentBundle(data.getvalue(), "9.9.9", "0" * 64)
    env = bare_environment(*bare_python, bundle=other)
    started.append(env)
    with pytest.raises(ProtocolMismatchError) as raised:
        env.start(Session(subcalls=RecordingSubcalls()))
    message = str(raised.value)
    assert f"the agent in the sandbox is rlm-core 9.9.9, the host is rlm-core {__version__}" in (
        message
    )
    assert env.launcher.process.poll() is not None  # the sandbox was stopped
