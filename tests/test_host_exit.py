"""A host that exits without closing its environments still stops their sandboxes and
removes their carriers' sockets and directories."""

from __future__ import annotations

import pytest
from hosts import Host, wait_gone

pytestmark = pytest.mark.timeout(120)

SCRIPT = """
import json, sys
from rlm_core.environments.base import Session
from rlm_core.environments.loopback import LoopbackEnvironment
from scripts import EchoHandler

env = LoopbackEnvironment(**json.loads(sys.argv[1]))
env.start(Session(subcalls=EchoHandler()))
print(env.execute("import os\\nprint(os.getpid())").stdout.strip(), flush=True)
# exits without env.close()
"""


@pytest.mark.parametrize(
    "settings",
    ['{"carrier": "stdio"}', '{"carrier": "reverse", "tls": true}', '{"carrier": "dial"}'],
)
def test_an_unclosed_environment_is_closed_at_exit(settings: str) -> None:
    with Host(SCRIPT, settings) as host:
        agent = int(host.read_line())
        host.tracked.append(agent)
        status, _, err = host.finish()
        assert status == 0, err
        assert wait_gone([agent]) == []
        assert host.leftovers() == []
