"""``python -m rlm_core.agent``: see :mod:`rlm_core.agent.main`."""

import sys

from rlm_core.agent.main import main

sys.exit(main())
