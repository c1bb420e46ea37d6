"""Every way a start or a session can fail leaves no sandbox running on the fake."""

from __future__ import annotations

import _thread
import os
import signal
import textwrap

import pytest
from e2b_fake import FakeE2B
from e2b_fixtures import fake_e2b  # noqa: F401  (a fixture)
from rlm_conformance.doubles import RecordingSubcalls
from rlm_conformance.probes import host_script, wait_until
from rlm_e2b.environment import E2BEnvironment

from rlm_core import SandboxError
from rlm_core.environments.base import Session

pytestmark = pytest.mark.timeout(120)


def start(**settings: object) -> E2BEnvironment:
    env = E2BEnvironment(**settings)  # type: ignore[arg-type]
    env.start(Session(subcalls=RecordingSubcalls()))
    return env


def test_create_fails(fake_e2b: FakeE2B) -> None:  # noqa: F811
    fake_e2b.create_error = (500, "no capacity in the fake region")
    with pytest.raises(SandboxError, match="no capacity in the fake region"):
        start()
    assert fake_e2b.live() == []


@pytest.mark.parametrize(
    ("template", "said"),
    [("no-python", "python3: not found"), ("base", "No module named 'grpc'")],
)
def test_agent_never_comes_up(fake_e2b: FakeE2B, template: str, said: str) -> None:  # noqa: F811
    with pytest.raises(SandboxError, match="could not start the e2b agent") as raised:
        start(template=template)
    assert said in str(raised.value)
    assert len(fake_e2b.killed) == 1 and fake_e2b.live() == []


def test_agent_crashes_mid_session(fake_e2b: FakeE2B) -> None:  # noqa: F811
    env = start(lease_interval=5)
    try:
        sandbox = fake_e2b.sandboxes[fake_e2b.live()[0]]
        assert env.execute("print(1)").stdout == "1\n"
        for process in list(sandbox.processes.values()):
            os.killpg(process.popen.pid, signal.SIGKILL)
        with pytest.raises(SandboxError, match="died"):
            env.execute("print(2)")
    finally:
        env.close()
    assert fake_e2b.live() == [] and fake_e2b.killed == [sandbox.sandbox_id]


def test_interrupted_while_creating(fake_e2b: FakeE2B) -> None:  # noqa: F811
    """A KeyboardInterrupt inside Sandbox.create: the launcher never learnt the id, and
    finds the sandbox by its session label."""
    fake_e2b.on_create = _thread.interrupt_main  # Ctrl-C while the call is in flight
    fake_e2b.create_delay = 0.5
    with pytest.raises(KeyboardInterrupt):
        start()
    assert len(fake_e2b.killed) == 1 and fake_e2b.live() == []


def test_interrupted_while_starting_the_agent(fake_e2b: FakeE2B) -> None:  # noqa: F811
    env = E2BEnvironment()

    def interrupt(message: str) -> None:
        if message == "starting the agent":
            raise KeyboardInterrupt

    env._report_progress = interrupt  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        env.start(Session(subcalls=RecordingSubcalls()))
    assert len(fake_e2b.killed) == 1 and fake_e2b.live() == []


HOST = textwrap.dedent(
    """
    import sys
    from rlm_conformance.doubles import RecordingSubcalls
    from rlm_core.environments.base import Session
    from rlm_e2b.environment import E2BEnvironment

    env = E2BEnvironment(lease_interval=1, heartbeat_timeout=60)
    env.start(Session(subcalls=RecordingSubcalls()))
    print(env.active_launcher.sandbox_id, flush=True)
    env.execute("while True:\\n    pass")
    """
)


def test_host_killed_mid_cell(fake_e2b: FakeE2B) -> None:  # noqa: F811
    """SIGKILL the host in the middle of a cell: the lease stops, and the fake reaps the
    sandbox at its timeout (well before the agent's 60 s heartbeat watchdog would act)."""
    with host_script(HOST) as host:
        assert host.stdout is not None
        sandbox_id = host.stdout.readline().strip()
        assert sandbox_id in fake_e2b.live(), host.stderr.read() if host.stderr else ""
        processes = list(fake_e2b.sandboxes[sandbox_id].processes.values())
        assert wait_until(lambda: fake_e2b.calls.count(f"POST /sandboxes/{sandbox_id}/timeout"), 30)
        os.killpg(host.pid, signal.SIGKILL)
        host.wait(30)
        assert wait_until(lambda: sandbox_id not in fake_e2b.live(), 30)
        assert fake_e2b.reaped == [sandbox_id]
        assert wait_until(lambda: all(p.popen.poll() is not None for p in processes), 30)


def test_max_lifetime_is_the_servers_timeout(fake_e2b: FakeE2B) -> None:  # noqa: F811
    """With max_lifetime, renewals stop there and the service ends the sandbox."""
    env = start(lease_interval=1, max_lifetime=3)
    try:
        sandbox_id = env.active_launcher.sandbox_id  # type: ignore[union-attr]
        assert wait_until(lambda: sandbox_id not in fake_e2b.live(), 30)
        assert fake_e2b.reaped == [sandbox_id]
    finally:
        env.close()
