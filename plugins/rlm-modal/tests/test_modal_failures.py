"""Every way a start or a session can fail leaves no sandbox running on the fake."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

import pytest
from modal_fake import ModalFake
from modal_fixtures import modal_fake  # noqa: F401
from modal_proto import api_pb2
from rlm_conformance.doubles import RecordingSubcalls
from rlm_modal import ModalEnvironment

from rlm_core.environments.base import Session
from rlm_core.exceptions import SandboxCrashedError, SandboxError

pytestmark = pytest.mark.timeout(120)

Created = Callable[[], list[str]]

TERMINATED = api_pb2.GenericResult.GENERIC_STATUS_TERMINATED
TIMEOUT = api_pb2.GenericResult.GENERIC_STATUS_TIMEOUT


@pytest.fixture
def new_sandboxes(modal_fake: ModalFake) -> Created:  # noqa: F811
    """``new_sandboxes()``: the ids of the sandboxes created since the test began."""
    before = set(modal_fake.sandboxes)
    return lambda: sorted(set(modal_fake.sandboxes) - before)


def start(**settings: object) -> ModalEnvironment:
    env = ModalEnvironment(**{"idle_timeout": 2, "startup_timeout": 60, **settings})
    try:
        env.start(Session(subcalls=RecordingSubcalls()))
    except BaseException:
        env.close()
        raise
    return env


def assert_terminated(fake: ModalFake, ids: list[str]) -> None:
    """Each sandbox has ended, terminated (not reaped by a timeout), its processes gone."""
    assert ids, "the test created no sandbox"
    for sandbox_id in ids:
        record = fake.record(sandbox_id)
        assert record.result is not None, f"{sandbox_id} is still running"
        assert record.result.status == TERMINATED, record.result
        for process in fake.processes(sandbox_id):
            assert process.poll() is not None, f"{sandbox_id} left pid {process.pid} running"


def test_create_fails(modal_fake: ModalFake, new_sandboxes: Created) -> None:  # noqa: F811
    modal_fake.fail_create = "no capacity in region eu-west"
    with pytest.raises(SandboxError, match="no capacity in region eu-west"):
        start()
    assert new_sandboxes() == []
    assert modal_fake.calls.count("SandboxCreateV2") == 1


def test_upload_fails(modal_fake: ModalFake, new_sandboxes: Created) -> None:  # noqa: F811
    modal_fake.fail_uploads = True
    with pytest.raises(SandboxError, match="could not start the modal agent"):
        start()
    assert_terminated(modal_fake, new_sandboxes())


def test_python_missing(modal_fake: ModalFake, new_sandboxes: Created) -> None:  # noqa: F811
    modal_fake.missing_commands = {"python3"}
    with pytest.raises(SandboxError) as caught:
        start()
    message = str(caught.value)
    assert "exit status 127" in message and "python3: not found" in message
    assert_terminated(modal_fake, new_sandboxes())


def test_agent_exits_at_start(modal_fake: ModalFake, new_sandboxes: Created) -> None:  # noqa: F811
    modal_fake.corrupt_uploads = True  # the bundle arrives truncated: python3 cannot run it
    with pytest.raises(SandboxError) as caught:
        start()
    assert "exit status" in str(caught.value)
    assert_terminated(modal_fake, new_sandboxes())


def test_agent_crashes_mid_session(
    modal_fake: ModalFake,  # noqa: F811
    new_sandboxes: Created,
) -> None:
    env = start()
    try:
        assert env.execute("x = 1").error is None
        with pytest.raises(SandboxCrashedError) as caught:
            env.execute("import os\nos._exit(3)")
        assert caught.value.exit_status == 3
    finally:
        env.close()
    assert_terminated(modal_fake, new_sandboxes())


@pytest.mark.parametrize("rpc", ["SandboxCreateV2", "TaskExecStdinWriteStream", "TaskExecStart"])
def test_interrupted_start(
    modal_fake: ModalFake,  # noqa: F811
    new_sandboxes: Created,
    rpc: str,
) -> None:
    """Ctrl-C while the sandbox is being created, the agent uploaded or started: the
    sandbox is terminated as soon as the SDK hands it over, even after start() raised."""
    main = threading.main_thread().ident
    assert main is not None
    modal_fake.hooks[rpc] = lambda: signal.pthread_kill(main, signal.SIGINT)
    modal_fake.delays[rpc] = 1.0
    env = ModalEnvironment(idle_timeout=2)
    with pytest.raises(KeyboardInterrupt):
        env.start(Session(subcalls=RecordingSubcalls()))
    env.close()
    modal_fake.hooks.clear()
    deadline = time.monotonic() + 30
    while not new_sandboxes() and time.monotonic() < deadline:  # the creation lands late
        time.sleep(0.05)
    assert modal_fake.wait_gone(new_sandboxes(), 30) == []
    assert len(new_sandboxes()) == 1
    assert_terminated(modal_fake, new_sandboxes())


def test_lifetime_is_enforced(modal_fake: ModalFake, new_sandboxes: Created) -> None:  # noqa: F811
    """max_lifetime is the sandbox's server-side timeout: the fake ends it then."""
    env = start(max_lifetime=3)
    try:
        (sandbox_id,) = new_sandboxes()
        assert modal_fake.record(sandbox_id).definition.timeout_secs == 3
        assert modal_fake.wait_gone([sandbox_id], 30) == []
        assert modal_fake.record(sandbox_id).result.status == TIMEOUT  # type: ignore[union-attr]
        with pytest.raises(SandboxError):
            env.execute("print(1)")
    finally:
        env.close()
