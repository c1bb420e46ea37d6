"""What goes wrong, said plainly: no engine, no image, a container that dies mid-cell; and
what is left behind: nothing, by label, process or file."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile

import pytest
from docker_fixtures import EngineUnderTest, containers, docker_engine  # noqa: F401
from rlm_conformance.doubles import RecordingSubcalls
from rlm_docker import DockerEngineError, DockerEnvironment, DockerImageError
from rlm_docker.launcher import DockerLauncher

from rlm_core.cli import main
from rlm_core.cli_cleanup import launcher_of
from rlm_core.environments.base import NETWORK_OFF, Session
from rlm_core.exceptions import ConfigurationError, SandboxCrashedError, SandboxError

pytestmark = pytest.mark.timeout(180)


def started(**settings: object) -> DockerEnvironment:
    """A started ``docker`` environment with ``settings``."""
    env = DockerEnvironment(**settings)  # type: ignore[arg-type]
    env.start(Session(subcalls=RecordingSubcalls()))
    return env


def test_engine_missing_is_a_typed_error() -> None:
    env = DockerEnvironment(engine="rlm-no-such-engine")
    with pytest.raises(DockerEngineError, match=r"rlm-no-such-engine.*not installed"):
        env.start(Session(subcalls=RecordingSubcalls()))
    env.close()


def test_engine_not_answering_is_a_typed_error(
    docker_engine: EngineUnderTest,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        monkeypatch.setenv("DOCKER_HOST", f"unix://{folder}/nothing.sock")
        env = DockerEnvironment(**docker_engine.settings())  # type: ignore[arg-type]
        with pytest.raises(DockerEngineError, match="does not answer"):
            env.start(Session(subcalls=RecordingSubcalls()))
        env.close()


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_image_missing_is_a_typed_error(
    docker_engine: EngineUnderTest,  # noqa: F811
    engine: str,
) -> None:
    image = "localhost/rlm-docker-no-such-image:1"
    env = DockerEnvironment(image=image, engine=engine, pull="never")
    with pytest.raises(DockerImageError, match="not on the container engine and pull='never'"):
        env.start(Session(subcalls=RecordingSubcalls()))
    env.close()


def test_image_that_cannot_be_pulled_is_a_typed_error(
    docker_engine: EngineUnderTest,  # noqa: F811
) -> None:
    # A registry on a closed loopback port: the pull fails at once, without any network.
    env = DockerEnvironment(image="127.0.0.1:9/rlm/none:1", engine="podman")
    with pytest.raises(DockerImageError, match="could not be pulled"):
        env.start(Session(subcalls=RecordingSubcalls()))
    env.close()


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_image_without_python_fails_plainly(
    docker_engine: EngineUnderTest,  # noqa: F811
    engine: str,
) -> None:
    settings = docker_engine.settings(python="/no/python3", engine=engine)
    env = DockerEnvironment(**settings)  # type: ignore[arg-type]
    with pytest.raises(SandboxError, match="could not start the docker agent") as caught:
        env.start(Session(subcalls=RecordingSubcalls()))
    env.close()
    if engine == "podman":  # Podman's Docker-API service does not relay runc's message
        assert "/no/python3" in str(caught.value) and "exit status 127" in str(caught.value)


def test_container_killed_mid_cell(docker_engine: EngineUnderTest) -> None:  # noqa: F811
    env = started(**docker_engine.settings())
    try:
        name = env.active_launcher.sandbox_id if env.active_launcher else None
        assert name in containers()
        killer = subprocess.Popen(
            ["sh", "-c", f"sleep 1; podman kill --signal KILL {name}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with pytest.raises(SandboxCrashedError, match="docker agent died"):
            env.execute("import time\ntime.sleep(60)")
        killer.wait(30)
    finally:
        env.close()


@pytest.mark.parametrize("engine", ["docker", "podman"])
def test_agent_exits_mid_cell(docker_engine: EngineUnderTest, engine: str) -> None:  # noqa: F811
    env = started(**docker_engine.settings(engine=engine))
    try:
        with pytest.raises(SandboxCrashedError, match="docker agent died") as caught:
            env.execute("import os\nos._exit(7)")
        if engine == "podman":  # through Podman's Docker-API service, run --rm says 0
            assert "exit status 7" in str(caught.value)
    finally:
        env.close()


def test_limits_reach_the_container(docker_engine: EngineUnderTest) -> None:  # noqa: F811
    env = started(**docker_engine.settings(memory_limit_mb=256, pids_limit=64, cpus=0.5))
    try:
        result = env.execute(
            "import subprocess, sys\n"
            "kids = []\n"
            "try:\n"
            "    for _ in range(100):\n"
            "        kids.append(subprocess.Popen(['sleep', '60']))\n"
            "except OSError as e:\n"
            "    print('refused after', len(kids), type(e).__name__)\n"
            "for k in kids:\n"
            "    k.kill()\n"
            "    k.wait()\n"
        )
        assert "refused after" in result.stdout, result.stdout + result.stderr
        name = env.active_launcher.sandbox_id if env.active_launcher else ""
        shown = subprocess.run(
            ["podman", "inspect", "--format", "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}",
             str(name)],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert shown == [str(256 * 1024 * 1024), "64"]
    finally:
        env.close()


def test_network_setting() -> None:
    assert NETWORK_OFF in DockerEnvironment().capabilities
    assert NETWORK_OFF not in DockerEnvironment(network="bridge").capabilities


def test_unknown_setting_has_a_hint() -> None:
    with pytest.raises(ConfigurationError, match="memory_limit_mb"):
        DockerEnvironment(memory_limit_md=100)  # type: ignore[call-arg]


def rlm(*argv: str) -> tuple[int, str]:
    """Run the ``rlm`` command in this process; its exit status and output."""
    out = io.StringIO()
    return main(list(argv), stdout=out, stderr=out), out.getvalue()


def test_cleanup_by_tag(docker_engine: EngineUnderTest) -> None:  # noqa: F811
    assert launcher_of("docker") is DockerLauncher
    env = started(**docker_engine.settings(tag="rlm-docker-test-tag"))
    try:
        name = env.active_launcher.sandbox_id if env.active_launcher else None
        assert DockerLauncher.list_sandboxes(tag="rlm-docker-test-tag") == [name]
        status, out = rlm("cleanup", "docker")
        assert status == 0 and f"{name}\n" in out
        status, out = rlm("cleanup", "docker", "--tag", "rlm-docker-test-tag")
        assert (status, out) == (0, f"stopped {name}\n1 stopped\n")
        assert name not in containers()
        with pytest.raises(SandboxCrashedError):
            env.execute("x = 1")
    finally:
        env.close()


def test_user_setting(docker_engine: EngineUnderTest) -> None:  # noqa: F811
    env = started(**docker_engine.settings(user="65534:65534", engine="podman"))
    try:
        assert env.execute("import os\nprint(os.getuid(), os.getgid())").stdout == "65534 65534\n"
    finally:
        env.close()


def mentions(pid: str, names: list[str]) -> bool:
    """Whether process ``pid``'s command line names one of ``names``."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return any(name.encode() in cmdline for name in names)


def test_nothing_left_behind(docker_engine: EngineUnderTest) -> None:  # noqa: F811
    folder = tempfile.mkdtemp(prefix="rlm-docker-test-tmp-")
    try:
        code = (
            "import os, sys, tempfile\n"
            f"os.environ['TMPDIR'] = {folder!r}\n"
            "from rlm_conformance.doubles import RecordingSubcalls\n"
            "from rlm_core.environments.base import Session\n"
            "from rlm_docker import DockerEnvironment\n"
            "tempfile.tempdir = None\n"
            f"env = DockerEnvironment(image={docker_engine.image!r}, pull='never')\n"
            "env.start(Session(subcalls=RecordingSubcalls()))\n"
            'env.execute(\'import subprocess; subprocess.Popen(["sleep", "600"])\')\n'
            "env.launcher_name = env.active_launcher.sandbox_id\n"
            "env.close()\n"
            "env2 = DockerEnvironment(image=" + repr(docker_engine.image) + ", pull='never')\n"
            "env2.start(Session(subcalls=RecordingSubcalls()))\n"
            "names = [env.launcher_name, env2.active_launcher.sandbox_id]\n"
            "print('started', *names, flush=True)\n"  # env2 is closed by the exit handler
        )
        host = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "TMPDIR": folder},
        )
        assert host.returncode == 0 and "started" in host.stdout, host.stderr
        names = host.stdout.split()[1:]
        assert len(names) == 2
        assert not set(names) & set(containers())
        assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and mentions(pid, names)]
        assert os.listdir(folder) == []
    finally:
        os.rmdir(folder)
