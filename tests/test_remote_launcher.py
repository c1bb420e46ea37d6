"""RemoteLauncher: what every cloud launcher shares, on the fake sandbox provider.

The provider's SDK calls are those of :class:`~rlm_conformance.doubles.FakeSandboxLauncher`
(isolated local sandboxes); each test slows or breaks one of them and checks that the
sandbox ends all the same.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rlm_conformance.doubles import (
    FakeSandboxEnvironment,
    FakeSandboxLauncher,
    RecordingSubcalls,
)
from rlm_conformance.fakes import FakeSandbox

from rlm_core.environments.base import Session
from rlm_core.environments.launcher import Launcher, LaunchRequest
from rlm_core.environments.remote import PushExec, pump, status_from_exit_code
from rlm_core.exceptions import SandboxError

pytestmark = pytest.mark.timeout(120)


class Hooked(FakeSandboxLauncher):
    """The fake provider with a hook before each SDK call's return."""

    def __init__(self, hooks: dict[str, Any], lease_interval: float | None = None) -> None:
        super().__init__()
        self.lease_interval = lease_interval
        self.hooks = hooks
        self.renewals: list[int] = []
        self.created: list[FakeSandbox] = []

    def _hook(self, step: str) -> None:
        hook = self.hooks.get(step)
        if hook is not None:
            hook()

    def create_sandbox(self, request: LaunchRequest) -> FakeSandbox:
        self._hook("before create")
        sandbox = super().create_sandbox(request)
        self.created.append(sandbox)
        self._hook("create")
        return sandbox

    def upload(self, sandbox: FakeSandbox, path: str, data: bytes, request: LaunchRequest) -> None:
        self._hook("upload")
        super().upload(sandbox, path, data, request)

    def renew_sandbox(self, sandbox: Any, seconds: int) -> None:
        self.renewals.append(seconds)


class HookedEnvironment(FakeSandboxEnvironment):
    """Hands out :class:`Hooked` launchers and keeps them."""

    def __init__(self, launcher: Hooked, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.launcher = launcher

    def make_launcher(self) -> Launcher:
        return self.launcher


@pytest.fixture
def nothing_left() -> Iterator[None]:
    """Fails the test if a fake sandbox it started is still listed at its end."""
    before = set(FakeSandboxLauncher.list_sandboxes() or [])
    yield
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = set(FakeSandboxLauncher.list_sandboxes() or []) - before
        if not left:
            return
        time.sleep(0.05)
    pytest.fail(f"sandboxes left running: {sorted(left)}")


def start(env: FakeSandboxEnvironment) -> None:
    env.start(Session(subcalls=RecordingSubcalls()))


def wait_killed(launcher: Hooked) -> None:
    deadline = time.monotonic() + 30
    while not (launcher.created and launcher.created[0].killed):
        assert time.monotonic() < deadline, "the sandbox was not killed"
        time.sleep(0.05)


def test_a_sandbox_created_after_the_deadline_is_killed(nothing_left: None) -> None:
    launcher = Hooked({"before create": lambda: time.sleep(2.0)})
    env = HookedEnvironment(launcher, startup_timeout=0.5)
    with pytest.raises(SandboxError, match="did not start in time"):
        start(env)
    assert launcher.created == []  # the SDK's create call has not returned yet
    wait_killed(launcher)  # killed as soon as it did


def test_terminate_during_create_finds_the_sandbox_by_its_session(nothing_left: None) -> None:
    release = threading.Event()
    in_create = threading.Event()
    launcher = Hooked({"create": lambda: (in_create.set(), release.wait(30))})
    env = HookedEnvironment(launcher)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            start(env)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert in_create.wait(30)
    launcher.terminate()  # the SDK's create call has not returned: found by its label
    assert launcher.created[0].killed
    release.set()
    thread.join(30)
    assert failure and isinstance(failure[0], SandboxError)
    assert "terminated while" in str(failure[0])


def test_interrupted_during_create(nothing_left: None) -> None:
    main = threading.main_thread().ident
    assert main is not None
    launcher = Hooked(
        {"create": lambda: (signal.pthread_kill(main, signal.SIGINT), time.sleep(0.5))}
    )
    env = HookedEnvironment(launcher)
    with pytest.raises(KeyboardInterrupt):
        start(env)
    wait_killed(launcher)


def test_a_create_call_that_fails_late_still_ends_its_sandbox(nothing_left: None) -> None:
    def time_out() -> None:  # the service made the sandbox, the SDK gave up waiting for it
        raise TimeoutError("the sandbox did not become ready")

    launcher = Hooked({"create": time_out})
    env = HookedEnvironment(launcher)
    with pytest.raises(SandboxError, match="did not become ready"):
        start(env)
    assert launcher.created[0].killed  # found by its session label, never returned


def test_a_failed_upload_kills_the_sandbox(nothing_left: None) -> None:
    def refuse() -> None:
        raise OSError("the service refused the upload")

    launcher = Hooked({"upload": refuse})
    env = HookedEnvironment(launcher)
    with pytest.raises(SandboxError, match="refused the upload"):
        start(env)
    assert launcher.created[0].killed
    assert launcher.timings.keys() == {"create"}


def test_the_lease_is_renewed_until_close(nothing_left: None) -> None:
    launcher = Hooked({}, lease_interval=0.05)
    env = HookedEnvironment(launcher, max_lifetime=600)
    start(env)
    try:
        assert env.execute("x = 1").error is None
        deadline = time.monotonic() + 30
        while len(launcher.renewals) < 3:
            assert time.monotonic() < deadline, "the lease was not renewed"
            time.sleep(0.05)
        assert set(launcher.renewals) == {1}  # twice the interval, rounded up
    finally:
        env.close()
    after = len(launcher.renewals)
    time.sleep(0.3)
    assert len(launcher.renewals) == after
    assert launcher.timings.keys() == {"create", "ship", "exec"}


def test_lease_seconds_never_pass_the_max_lifetime() -> None:
    launcher = Hooked({}, lease_interval=30)
    launcher._max_lifetime = 45.0
    launcher._created_at = time.monotonic() - 40.0
    assert launcher.lease_seconds() == 5
    launcher._max_lifetime = None
    assert launcher.lease_seconds() == 60


def test_cleanup_by_tag_and_by_id(nothing_left: None) -> None:
    envs = [FakeSandboxEnvironment() for _ in range(2)]
    for env in envs:
        start(env)
    try:
        ids = [env.active_launcher.sandbox_id for env in envs]  # type: ignore[union-attr]
        assert FakeSandboxLauncher.cleanup(ids=[ids[0]]) == [ids[0]]
        listed = FakeSandboxLauncher.list_sandboxes() or []
        assert ids[0] not in listed and ids[1] in listed
        assert ids[1] in FakeSandboxLauncher.cleanup()  # neither: every rlm-core sandbox
        assert ids[1] not in (FakeSandboxLauncher.list_sandboxes() or [])
    finally:
        for env in envs:
            env.close()


def test_status_from_exit_code() -> None:
    assert status_from_exit_code(137) == -9
    assert status_from_exit_code(0) == 0
    assert status_from_exit_code(1) == 1
    assert status_from_exit_code(255) == 255


def test_push_exec_relays_stdin_stdout_and_stderr() -> None:
    class Exec(PushExec):
        def __init__(self) -> None:
            self.written: list[bytes] = []
            super().__init__()

        def write_stdin(self, data: bytes) -> None:
            self.written.append(data)

    command = Exec()
    command.send(b"hello")
    pump(iter([b"out", "put"]), command.stdout, "a test's output")
    command.stderr.feed(b"first line\nsecond ")
    command.stderr.feed("line")
    assert command.written == [b"hello"]
    assert list(command) == [b"out", "put"]
    assert command.stderr_tail() == "first line\nsecond line"
    assert command.exit_status() is None
