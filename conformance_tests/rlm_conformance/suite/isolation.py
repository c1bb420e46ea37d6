"""ISO: isolation claims, checked against things this test puts on the host."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile

import pytest

from rlm_conformance.cases import case
from rlm_conformance.probes import host_file, host_process, loopback_server, unix_server
from rlm_conformance.suite.helpers import value
from rlm_core.environments.base import ISOLATED, NETWORK_OFF, Environment

TRY_READ = """
try:
    with open({path!r}) as _f:
        _r = _f.read()
except Exception as _e:
    _r = 'refused: ' + type(_e).__name__
"""

TRY_TCP = """
import socket as _s
try:
    _c = _s.create_connection(({host!r}, {port}), timeout=5)
    _r = _c.recv(64).decode('utf-8', 'replace')
    _c.close()
except Exception as _e:
    _r = 'refused: ' + type(_e).__name__
"""

TRY_UNIX = """
import socket as _s
try:
    _c = _s.socket(_s.AF_UNIX, _s.SOCK_STREAM)
    _c.settimeout(5)
    _c.connect({path!r})
    _r = _c.recv(64).decode('utf-8', 'replace')
    _c.close()
except Exception as _e:
    _r = 'refused: ' + type(_e).__name__
"""


class IsolationTests:
    """A claim of ``isolated`` or ``network_off`` is tested, never taken on trust."""

    @case("ISO-001", "a file placed on the host is unreadable", requires=[ISOLATED])
    def test_host_file(self, env: Environment) -> None:
        with host_file() as secret:
            env.execute(TRY_READ.format(path=secret.path))
            seen = str(value(env, "_r"))
            assert secret.secret not in seen, f"the sandbox read {secret.path}"

    @case("ISO-002", "other host processes are invisible", requires=[ISOLATED])
    def test_host_processes(self, env: Environment) -> None:
        with host_process() as (marker, _):
            code = (
                "import os\n_hits = []\nfor _p in os.listdir('/proc'):\n"
                "    if _p.isdigit():\n        try:\n"
                "            with open(f'/proc/{_p}/cmdline', 'rb') as _f:\n"
                f"                if {marker!r}.encode() in _f.read():\n"
                "                    _hits.append(_p)\n"
                "        except OSError:\n            pass"
            )
            env.execute(code)
            assert value(env, "_hits") == [], "a host process is visible in the sandbox"

    @case("ISO-003", "a writable host directory cannot be written", requires=[ISOLATED])
    def test_host_write(self, env: Environment) -> None:
        folder = tempfile.mkdtemp(prefix="rlm-conformance-write-")
        os.chmod(folder, 0o777)
        target = os.path.join(folder, "planted.txt")
        try:
            env.execute(f"try:\n    open({target!r}, 'w').write('x')\nexcept Exception:\n    pass")
            assert not os.path.exists(target), "the sandbox wrote into a host directory"
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @case("ISO-004", "the host's environment variables are invisible", requires=[ISOLATED])
    def test_host_environment(self, env: Environment, monkeypatch: pytest.MonkeyPatch) -> None:
        secret = "rlm-conformance-env-" + secrets.token_hex(8)
        monkeypatch.setenv("RLM_CONFORMANCE_HOST_SECRET", secret)
        assert secret not in str(value(env, "dict(__import__('os').environ)"))

    @case("ISO-005", "a TCP server on the host's loopback is unreachable", requires=[NETWORK_OFF])
    def test_loopback_server(self, env: Environment) -> None:
        with loopback_server() as (host, port, server):
            env.execute(TRY_TCP.format(host=host, port=port))
            seen = str(value(env, "_r"))
            assert "host-server-hello" not in seen and server.connections == 0, (
                f"the sandbox reached {host}:{port}"
            )

    @case("ISO-006", "a Unix socket on the host is unreachable", requires=[NETWORK_OFF])
    def test_unix_socket(self, env: Environment) -> None:
        with unix_server() as (path, server):
            env.execute(TRY_UNIX.format(path=path))
            seen = str(value(env, "_r"))
            assert "host-server-hello" not in seen and server.connections == 0, (
                f"the sandbox reached {path}"
            )
