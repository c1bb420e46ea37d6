"""Every way a start or a session can fail leaves no sandbox on the fake."""

from __future__ import annotations

import _thread
import math
import os
import re
import signal
import textwrap

import pytest
from daytona_fake import FakeDaytona
from daytona_fixtures import QUICK, fake_daytona, started  # noqa: F401  (a fixture)
from rlm_conformance.doubles import RecordingSubcalls
from rlm_conformance.probes import host_script, wait_until
from rlm_daytona.environment import DaytonaEnvironment
from rlm_daytona.launcher import client
from rlm_daytona.stream import open_pty

from rlm_core import SandboxError
from rlm_core.environments.base import Session

pytestmark = pytest.mark.timeout(120)

MODES = ("pty", "session")


def test_create_fails(fake_daytona: FakeDaytona) -> None:  # noqa: F811
    fake_daytona.create_error = (500, "no capacity in the fake region")
    with pytest.raises(SandboxError, match="no capacity in the fake region"):
        started()
    assert fake_daytona.live() == []


def test_upload_fails(fake_daytona: FakeDaytona) -> None:  # noqa: F811
    fake_daytona.upload_error = (507, "the fake disk is full")
    with pytest.raises(SandboxError, match="the fake disk is full"):
        started()
    assert fake_daytona.live() == [] and list(fake_daytona.ended.values()) == ["deleted"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("python", "said"), [("none", "python3: not found"), ("system", "No module named 'grpc'")]
)
def test_agent_never_comes_up(
    fake_daytona: FakeDaytona,  # noqa: F811
    mode: str,
    python: str,
    said: str,
) -> None:
    fake_daytona.snapshots["broken"] = python
    with pytest.raises(SandboxError, match="could not start the daytona agent") as raised:
        started(snapshot="broken", exec_mode=mode)
    assert said in str(raised.value)
    assert fake_daytona.live() == [] and list(fake_daytona.ended.values()) == ["deleted"]


def test_image_without_python(fake_daytona: FakeDaytona) -> None:  # noqa: F811
    with pytest.raises(SandboxError, match="python3: not found"):
        started(image="busybox:1.36")
    assert fake_daytona.live() == []
    dockerfile = fake_daytona.bodies[0]["buildInfo"]["dockerfileContent"]
    assert dockerfile.startswith("FROM busybox:1.36")


@pytest.mark.parametrize("mode", MODES)
def test_agent_crashes_mid_session(fake_daytona: FakeDaytona, mode: str) -> None:  # noqa: F811
    env = started(exec_mode=mode)
    try:
        sandbox = fake_daytona.sandboxes[fake_daytona.live()[0]]
        assert env.execute("print(1)").stdout == "1\n"
        # the agent's own process: the PTY's shell exec-ed it, or the session's command did
        agents = list(sandbox.ptys.values()) or [
            c.popen for s in sandbox.sessions.values() for c in s.values()
        ]
        assert len(agents) == 1
        os.killpg(agents[0].pid, signal.SIGKILL)
        with pytest.raises(SandboxError, match="died"):
            env.execute("print(2)")
    finally:
        env.close()
    assert fake_daytona.live() == [] and fake_daytona.ended == {sandbox.sandbox_id: "deleted"}


def test_interrupted_while_creating(fake_daytona: FakeDaytona) -> None:  # noqa: F811
    """A KeyboardInterrupt inside Daytona.create: the launcher never learnt the id, and
    finds the sandbox by its session label."""
    fake_daytona.on_create = _thread.interrupt_main  # Ctrl-C while the call is in flight
    fake_daytona.create_delay = 0.5
    with pytest.raises(KeyboardInterrupt):
        started()
    assert wait_until(lambda: fake_daytona.live() == [], 10)
    assert list(fake_daytona.ended.values()) == ["deleted"]


def test_start_timeout(fake_daytona: FakeDaytona) -> None:  # noqa: F811
    """The create call outlives the start's deadline: the sandbox it returns is deleted."""
    fake_daytona.create_delay = 3.0
    with pytest.raises(SandboxError, match="did not start in time"):
        started(startup_timeout=1.0)
    assert wait_until(lambda: fake_daytona.live() == [], 10)
    assert list(fake_daytona.ended.values()) == ["deleted"]


def test_pty_connected_late(fake_daytona: FakeDaytona) -> None:  # noqa: F811
    """The SDK fails a PTY whose ``connected`` message comes more than 0.1 s after its
    WebSocket opened: the start kills that PTY and opens another, under a new id."""
    fake_daytona.pty_connect_delays = [1.0, 0.5]
    env = started()
    try:
        assert env.execute("print(1)").stdout == "1\n"
        sandbox = fake_daytona.sandboxes[fake_daytona.live()[0]]
        opened = [c for c in fake_daytona.calls if "/process/pty/create-connect" in c]
        killed = [c.rsplit("/", 1)[1] for c in fake_daytona.calls if "DELETE /process/pty/" in c]
        # The first two were late; a busy machine can make the next ones late too.
        assert len(killed) >= 2 and len(opened) == len(killed) + 1
        name = killed[0]
        tried = [name, *(f"{name}-{n}" for n in range(1, len(opened)))]
        assert [*killed, *sandbox.ptys] == tried
    finally:
        env.close()
    assert fake_daytona.live() == []


def test_pty_never_connected_in_time(fake_daytona: FakeDaytona) -> None:  # noqa: F811
    """No PTY ever says it is connected: the start fails by its deadline, and its sandbox,
    with every PTY tried, is deleted (on a busy machine the deadline may pass while the
    sandbox is still being created; it is deleted once the create lands)."""
    fake_daytona.pty_connect_delays = [math.inf] * 1000
    with pytest.raises(SandboxError, match="did not start in time"):
        started(startup_timeout=5.0)
    assert wait_until(
        lambda: list(fake_daytona.ended.values()) == ["deleted"] and fake_daytona.live() == [],
        30,
    )


def test_open_pty_gives_up_by_its_timeout(fake_daytona: FakeDaytona) -> None:  # noqa: F811
    """Opening a PTY that is always late ends in a clear error once its time is up."""
    env = started()
    try:
        sandbox = client().get(env.active_launcher.sandbox_id)  # type: ignore[union-attr]
        fake_daytona.pty_connect_delays = [math.inf] * 1000
        with pytest.raises(SandboxError, match=r"never said it was connected") as raised:
            open_pty(sandbox.process, "probe", {}, 1.0)
        tries = re.search(r"\((\d+) tries", str(raised.value))
        assert tries is not None
        killed = [c for c in fake_daytona.calls if "DELETE /process/pty/probe" in c]
        assert len(killed) == int(tries[1]) >= 1
    finally:
        env.close()
    assert fake_daytona.live() == []


@pytest.mark.parametrize("mode", MODES)
def test_interrupted_while_starting_the_agent(
    fake_daytona: FakeDaytona,  # noqa: F811
    mode: str,
) -> None:
    env = DaytonaEnvironment(exec_mode=mode, **QUICK)  # type: ignore[arg-type]

    def interrupt(message: str) -> None:
        if message == "starting the agent":
            raise KeyboardInterrupt

    env._report_progress = interrupt  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        env.start(Session(subcalls=RecordingSubcalls()))
    assert fake_daytona.live() == [] and list(fake_daytona.ended.values()) == ["deleted"]


HOST = textwrap.dedent(
    """
    import sys
    from rlm_conformance.doubles import RecordingSubcalls
    from rlm_core.environments.base import Session
    from rlm_daytona.environment import DaytonaEnvironment

    env = DaytonaEnvironment(lease_interval=2.0, heartbeat_timeout=60, exec_mode=sys.argv[1])
    env.start(Session(subcalls=RecordingSubcalls()))
    print(env.active_launcher.sandbox_id, flush=True)
    if sys.argv[2] == "exit":
        raise SystemExit(0)  # without close(): the exit handlers end the sandbox
    env.execute("while True:\\n    pass")
    """
)


@pytest.mark.parametrize("mode", MODES)
def test_host_killed_mid_cell(fake_daytona: FakeDaytona, mode: str) -> None:  # noqa: F811
    """SIGKILL the host in the middle of a cell: the activity refreshes stop, and the fake
    stops the ephemeral sandbox (so deletes it) at its auto-stop interval, well before the
    agent's 60 s heartbeat watchdog would act."""
    with host_script(HOST, mode, "cell") as host:
        assert host.stdout is not None
        sandbox_id = host.stdout.readline().strip()
        assert sandbox_id in fake_daytona.live(), host.stderr.read() if host.stderr else ""
        box = fake_daytona.sandboxes[sandbox_id].box
        refresh = f"POST /api/sandbox/{sandbox_id}/last-activity"
        assert wait_until(lambda: fake_daytona.calls.count(refresh) >= 2, 30)
        os.killpg(host.pid, signal.SIGKILL)
        host.wait(30)
        assert wait_until(lambda: sandbox_id not in fake_daytona.live(), 30)
        assert fake_daytona.ended == {sandbox_id: "auto-stop"}
        assert box.killed and not box.root.exists()


@pytest.mark.parametrize("mode", MODES)
def test_host_exits_without_close(fake_daytona: FakeDaytona, mode: str) -> None:  # noqa: F811
    """A host that exits without close(): its WebSockets are closed, so the interpreter
    does not wait on the SDK's reader threads, and its exit handler deletes the sandbox."""
    with host_script(HOST, mode, "exit") as host:
        out, err = host.communicate(timeout=60)
        assert host.returncode == 0, err
        assert fake_daytona.ended == {out.strip(): "deleted"}
        assert fake_daytona.live() == []


def test_max_lifetime_is_the_ttl(fake_daytona: FakeDaytona) -> None:  # noqa: F811
    """max_lifetime becomes ttl_minutes (rounded up to whole minutes): the service
    destroys the sandbox then, however active it is."""
    env = started(max_lifetime=30)
    try:
        sandbox_id = env.active_launcher.sandbox_id  # type: ignore[union-attr]
        assert fake_daytona.bodies[-1]["ttlMinutes"] == 1
        assert wait_until(lambda: sandbox_id not in fake_daytona.live(), 30)
        assert fake_daytona.ended == {sandbox_id: "ttl"}
    finally:
        env.close()
