"""The trajectory viewer: one self-contained HTML page for a log written by rlm-core or by
``rlms`` 0.1.3 (``rlm view LOGFILE``).

The page shows the iteration timeline, each iteration's response, code and outputs, the tree
of sub-calls and child RLMs, and tokens and cost per model and per depth. It loads nothing
from the network.
"""

from rlm_core.viewer.load import LogFileError, ViewerError, load_log
from rlm_core.viewer.render import default_output, render_html, render_log, write_html
from rlm_core.viewer.serve import ViewerServer, serve

__all__ = [
    "LogFileError",
    "ViewerError",
    "ViewerServer",
    "default_output",
    "load_log",
    "render_html",
    "render_log",
    "serve",
    "write_html",
]
