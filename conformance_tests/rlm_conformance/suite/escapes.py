"""ESC: escape attempts a hostile cell makes; each fails safely and the session goes on.

The corpus also counts tests of other groups: a host file placed by the test (ISO-001),
host processes (ISO-002), the host's loopback and Unix sockets (ISO-005, ISO-006), a
fork storm (CEL-017), a memory hog (CEL-016) and a process kept alive past close
(CEL-019, LIF-010). ``docs/conformance.md`` lists which test covers which attempt.
"""

from __future__ import annotations

import json
import os
import secrets

import pytest

from rlm_conformance.cases import case
from rlm_conformance.fixtures import StartEnv
from rlm_conformance.probes import (
    file_identity,
    host_private_file,
    loopback_server,
    remove_planted,
)
from rlm_conformance.suite.helpers import ok, value
from rlm_conformance.suite.isolation import TRY_READ
from rlm_core.environments.base import DISK_LIMIT, ISOLATED, NETWORK_OFF, Environment
from rlm_core.exceptions import SandboxError

SHADOW = "/etc/shadow"

TRY_SHADOW = f"""
import os as _os
try:
    _fd = _os.open({SHADOW!r}, _os.O_RDONLY)
    try:
        _st = _os.fstat(_fd)
        _os.read(_fd, 1)
        _r = [_st.st_dev, _st.st_ino, _st.st_mtime_ns]
    finally:
        _os.close(_fd)
except OSError as _e:
    _r = 'refused: ' + type(_e).__name__
"""

# A child process (single-threaded, as setns into a user or mount namespace needs) enters
# the namespaces of each process in its list, then dials the host's loopback server.
SETNS_CHILD = r"""
import ctypes, json, os, socket, sys
host, port, which = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def ancestors():
    pid, seen = os.getppid(), []
    while pid > 0 and pid not in seen:
        seen.append(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return seen
targets = [1] if which == "init" else ancestors()
libc = ctypes.CDLL(None, use_errno=True)
report = {"entered": [], "reply": []}
for pid in targets:
    for kind in ("user", "mnt", "net"):
        try:
            fd = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY)
        except OSError:
            continue
        try:
            if libc.setns(fd, 0) == 0:
                report["entered"].append(f"{pid}:{kind}")
        finally:
            os.close(fd)
    try:
        c = socket.create_connection((host, port), timeout=2)
        report["reply"].append(c.recv(64).decode("utf-8", "replace"))
        c.close()
    except OSError as e:
        report["reply"].append("refused: " + type(e).__name__)
print(json.dumps(report))
"""

TRY_SETNS = """
import subprocess as _sp, sys as _sys
try:
    _p = _sp.run([_sys.executable, '-S', '-c', {child!r}, {host!r}, '{port}', {which!r}],
                 capture_output=True, text=True, timeout=20)
    _r = (_p.stdout.strip().splitlines() or [_p.stderr.strip()[-300:]])[-1]
except Exception as _e:
    _r = 'refused: ' + type(_e).__name__
"""

TRY_WRITES = """
import os as _os, sys as _sys
_targets = ['/', '/usr', _sys.prefix, _sys.base_prefix, _os.path.dirname(_sys.executable)]
try:
    import rlm_core.agent as _agent
    _targets.append(_os.path.dirname(_agent.__file__))
except Exception:
    pass
_r = []
for _t in _targets:
    _path = _os.path.join(_t, {name!r})
    _r.append(_path)
    try:
        with open(_path, 'w') as _f:
            _f.write({marker!r})
    except Exception:
        pass
"""

FILL_DISK = """
import os as _os, tempfile as _tempfile
_r = {{}}
for _where in dict.fromkeys([_tempfile.gettempdir(), _os.getcwd()]):
    _path = _os.path.join(_where, 'rlm-conformance-fill')
    _written = 0
    try:
        with open(_path, 'wb') as _f:
            for _ in range({chunks}):
                _f.write(b'x' * (1 << 20))
                _f.flush()
                _written += 1
        _r[_where] = 'wrote everything'
    except OSError as _e:
        _r[_where] = 'refused after %d MiB' % _written
    finally:
        try:
            _os.remove(_path)
        except OSError:
            pass
"""


def _setns_escape(env: Environment, which: str) -> None:
    with loopback_server() as (host, port, server):
        code = TRY_SETNS.format(child=SETNS_CHILD, host=host, port=port, which=which)
        env.execute(code)
        seen = str(value(env, "_r"))
        assert "host-server-hello" not in seen and server.connections == 0, (
            f"after setns the sandbox reached {host}:{port}: {seen}"
        )
    assert ok(env, "print('still here')") == "still here\n"


class EscapeTests:
    """Escape attempts: what a hostile cell tries against the host, beyond ISO's."""

    @case(
        "ESC-001",
        "a host file only its owner may read (0600, root's under root) is unreadable",
        requires=[ISOLATED],
    )
    def test_private_host_file(self, env: Environment) -> None:
        with host_private_file() as secret:
            env.execute(TRY_READ.format(path=secret.path))
            seen = str(value(env, "_r"))
            assert secret.secret not in seen, f"the sandbox read {secret.path}"

    @case("ESC-002", "the host's /etc/shadow is not the sandbox's to read", requires=[ISOLATED])
    def test_host_shadow(self, env: Environment) -> None:
        host = file_identity(SHADOW)
        if host is None:
            pytest.skip(f"this host has no {SHADOW}")
        env.execute(TRY_SHADOW)
        seen = value(env, "_r")
        assert seen != list(host), f"the sandbox read the host's {SHADOW}"

    @case(
        "ESC-003",
        "setns into the namespaces of the sandbox's pid 1 does not reach the host's loopback",
        requires=[NETWORK_OFF],
    )
    def test_setns_init(self, env: Environment) -> None:
        _setns_escape(env, "init")

    @case(
        "ESC-004",
        "setns into the namespaces of each ancestor of the cell's process does not reach "
        "the host's loopback",
        requires=[NETWORK_OFF],
    )
    def test_setns_ancestors(self, env: Environment) -> None:
        _setns_escape(env, "ancestors")

    @case(
        "ESC-005",
        "writes to /, /usr, the interpreter's prefix and the agent's own files never reach "
        "the host",
        requires=[ISOLATED],
    )
    def test_write_outside_tmp(self, env: Environment) -> None:
        marker = "rlm-conformance-planted-" + secrets.token_hex(8)
        name = marker + ".txt"
        env.execute(TRY_WRITES.format(name=name, marker=marker))
        tried = [str(p) for p in value(env, "_r")]
        planted = remove_planted([*tried, os.path.join(os.sep, name)], marker)
        assert not planted, f"the sandbox wrote host files: {planted}"
        assert ok(env, "print('still here')") == "still here\n"

    @case(
        "ESC-006",
        "filling the temporary and working directories stops at disk_limit_mb; the session goes on",
        requires=[DISK_LIMIT],
    )
    def test_fill_disk(self, start_env: StartEnv) -> None:
        env = start_env(disk_limit_mb=8)
        try:
            env.execute(FILL_DISK.format(chunks=64))
        except SandboxError:
            pass  # the sandbox was stopped for it: a typed error is a pass too
        else:
            outcome = value(env, "_r")
            assert all(v.startswith("refused") for v in outcome.values()), (
                f"64 MiB were written under an 8 MiB disk limit: {json.dumps(outcome)}"
            )
        assert "freed" in ok(
            env,
            FILL_DISK.format(chunks=4) + "print('freed' if all(v == 'wrote everything' "
            "for v in _r.values()) else _r)",
        )
