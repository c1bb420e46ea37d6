"""The sandbox's Python: the agent's packages and ``packages``, nothing else installed."""

from __future__ import annotations

import pytest
from bwrap_support import envs, require_bwrap, start  # noqa: F401
from rlm_bwrap import BwrapEnvironment, BwrapUnavailableError

require_bwrap()

pytestmark = pytest.mark.timeout(120)

TRY_IMPORT = (
    "try:\n    import pluggy\n    print('imported')\nexcept ImportError:\n    print('missing')"
)


def test_host_packages_stay_out_unless_asked_for(envs: list[BwrapEnvironment]) -> None:  # noqa: F811
    plain, asked = start(prewarm=False), start(prewarm=False, packages=["pluggy"])
    envs.extend([plain, asked])
    assert plain.execute(TRY_IMPORT).stdout == "missing\n"
    assert asked.execute(TRY_IMPORT).stdout == "imported\n"
    assert plain.execute("import grpc, google.protobuf\nprint('agent packages')").stdout == (
        "agent packages\n"
    )


def test_a_package_the_interpreter_lacks_is_a_typed_error() -> None:
    with pytest.raises(BwrapUnavailableError, match="no_such_package_here"):
        start(packages=["no_such_package_here"])


def test_the_runtime_is_read_only(envs: list[BwrapEnvironment]) -> None:  # noqa: F811
    env = start()
    envs.append(env)
    code = (
        "import os, sys, rlm_core\nout = []\n"
        "for d in (sys.prefix, os.path.dirname(rlm_core.__file__), '/', '/dev'):\n"
        "    try:\n        open(os.path.join(d, 'x'), 'w')\n        out.append('wrote')\n"
        "    except OSError as e:\n        out.append(e.strerror)\nprint(out)"
    )
    assert env.execute(code).stdout == f"{['Read-only file system'] * 4}\n"
