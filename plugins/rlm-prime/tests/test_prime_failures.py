"""Every way a start or a session can fail leaves no sandbox running on the fake, and a
sandbox whose host was killed ends by Prime's own timeouts."""

from __future__ import annotations

import _thread
import json
import os
import select
import signal
import textwrap
import threading
import time

import pytest
from prime_fake import FakePrime
from prime_fixtures import fake_prime, serving  # noqa: F401  (a fixture)
from rlm_conformance.doubles import RecordingSubcalls
from rlm_conformance.probes import host_script, wait_until
from rlm_prime.environment import PrimeEnvironment

from rlm_core import SandboxError
from rlm_core.environments.base import Session

pytestmark = pytest.mark.timeout(120)


def start(**settings: object) -> PrimeEnvironment:
    env = PrimeEnvironment(**settings)  # type: ignore[arg-type]
    env.start(Session(subcalls=RecordingSubcalls()))
    return env


def start_abandoned() -> bool:
    """The start thread of an abandoned start has finished (its create call returned)."""
    return not any(thread.name == "rlm-prime-start" for thread in threading.enumerate())


def ended_alone(fake: FakePrime) -> None:
    """One sandbox was started, and it is gone with every process in it."""
    assert len(fake.killed) == 1 and fake.live() == []
    sandbox = fake.ended[fake.killed[0]]
    assert all(session.popen.poll() is not None for session in sandbox.sessions.values())


def test_create_fails(fake_prime: FakePrime) -> None:  # noqa: F811
    fake_prime.create_error = (400, "no capacity in the fake region")
    with pytest.raises(SandboxError, match="no capacity in the fake region"):
        start()
    assert fake_prime.live() == [] and fake_prime.killed == []


def test_sandbox_never_runs(fake_prime: FakePrime) -> None:  # noqa: F811
    fake_prime.status_on_create = "ERROR"
    with pytest.raises(SandboxError, match="ERROR"):
        start()
    ended_alone(fake_prime)


def test_upload_fails(fake_prime: FakePrime) -> None:  # noqa: F811
    fake_prime.upload_error = (400, "disk full in the fake")
    with pytest.raises(SandboxError, match="disk full in the fake"):
        start()
    ended_alone(fake_prime)


@pytest.mark.parametrize(
    ("image", "said"),
    [("no-python:latest", "python3: not found"), ("python:3.12-slim", "No module named 'grpc'")],
)
def test_agent_never_comes_up(fake_prime: FakePrime, image: str, said: str) -> None:  # noqa: F811
    with pytest.raises(SandboxError, match="could not start the prime agent") as raised:
        start(docker_image=image)
    assert said in str(raised.value)
    ended_alone(fake_prime)


def test_agent_crashes_mid_session(fake_prime: FakePrime) -> None:  # noqa: F811
    env = start()
    try:
        sandbox = fake_prime.sandboxes[fake_prime.live()[0]]
        assert env.execute("print(1)").stdout == "1\n"
        for session in list(sandbox.sessions.values()):
            if session.popen.poll() is None:
                os.killpg(session.popen.pid, signal.SIGKILL)
        with pytest.raises(SandboxError, match="died"):
            env.execute("print(2)")
    finally:
        env.close()
    assert fake_prime.live() == [] and fake_prime.killed == [sandbox.sandbox_id]


def test_interrupted_while_creating(fake_prime: FakePrime) -> None:  # noqa: F811
    """A KeyboardInterrupt inside the create call: the launcher never learnt the id, and
    finds the sandbox by its session label."""
    fake_prime.on_create = _thread.interrupt_main  # Ctrl-C while the call is in flight
    fake_prime.create_delay = 0.5
    with pytest.raises(KeyboardInterrupt):
        start()
    assert wait_until(lambda: len(fake_prime.killed) == 1, 10)
    assert wait_until(start_abandoned, 30) and fake_prime.live() == []


def test_start_times_out(fake_prime: FakePrime) -> None:  # noqa: F811
    fake_prime.create_delay = 3.0
    with pytest.raises(SandboxError, match="did not start in time"):
        start(startup_timeout=1.0)
    assert wait_until(lambda: len(fake_prime.killed) == 1, 10)
    assert wait_until(start_abandoned, 30) and fake_prime.live() == []


def test_interrupted_while_starting_the_agent(fake_prime: FakePrime) -> None:  # noqa: F811
    env = PrimeEnvironment()

    def interrupt(message: str) -> None:
        if message == "starting the agent":
            raise KeyboardInterrupt

    env._report_progress = interrupt  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        env.start(Session(subcalls=RecordingSubcalls()))
    ended_alone(fake_prime)


HOST = textwrap.dedent(
    """
    import json
    from rlm_conformance.doubles import RecordingSubcalls
    from rlm_core.environments.base import Session
    from rlm_prime import PrimeEnvironment

    env = PrimeEnvironment(heartbeat_timeout=3, heartbeat_interval=0.5, idle_timeout_minutes=2)
    env.start(Session(subcalls=RecordingSubcalls()))
    result = env.execute("import subprocess; kid = subprocess.Popen(['sleep', '600'])")
    print(json.dumps([env.active_launcher.sandbox_id, result.error]), flush=True)
    env.execute("while True:\\n    pass")
    """
)


def test_host_killed_mid_cell(fake_prime: FakePrime) -> None:  # noqa: F811
    """SIGKILL the host in the middle of a cell: the agent's heartbeat watchdog ends the
    agent (3 s), and the fake ends the now idle sandbox at its idle timeout (2 minutes of
    the fake's, 2 s): Prime's timeouts cannot be extended, so no lease is involved."""
    with host_script(HOST) as host:
        assert host.stdout is not None
        ready, _, _ = select.select([host.stdout], [], [], 60)
        assert ready, "the host printed nothing"
        line = host.stdout.readline()
        assert line, f"the host failed: {host.stderr.read() if host.stderr else ''}"
        sandbox_id, error = json.loads(line)
        assert error is None and sandbox_id in fake_prime.live()
        time.sleep(0.5)  # the endless cell runs
        os.killpg(host.pid, signal.SIGKILL)
        host.wait(30)
        assert wait_until(lambda: sandbox_id not in fake_prime.live(), 60)
        assert fake_prime.reaped == [sandbox_id]
        assert fake_prime.ended[sandbox_id].reason == "IDLE_TIMEOUT"
        sessions = fake_prime.ended[sandbox_id].sessions.values()
        assert all(session.popen.poll() is not None for session in sessions)


def test_max_lifetime_is_the_servers_timeout() -> None:
    """``max_lifetime`` becomes ``timeout_minutes`` (whole minutes, up): the service ends
    the sandbox then (a minute of this fake is 10 s)."""
    with serving(minute=10.0) as fake:
        env = start(max_lifetime=30, heartbeat_timeout=60)
        try:
            sandbox_id = env.active_launcher.sandbox_id  # type: ignore[union-attr]
            request = fake.sandbox(sandbox_id).request
            assert (request["timeout_minutes"], request["idle_timeout_minutes"]) == (1, 1)
            assert wait_until(lambda: sandbox_id not in fake.live(), 60)
            assert fake.reaped == [sandbox_id] and fake.ended[sandbox_id].reason == "TIMEOUT"
        finally:
            env.close()
