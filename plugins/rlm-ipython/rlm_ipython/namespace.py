"""The REPL namespace of rlm-core with its cells run by an IPython shell.

:class:`IPythonNamespace` is rlm-core's :class:`~rlm_core.repl.REPLNamespace` (every REPL
name, output capture, answers, sub-calls) with one step replaced: a cell's source goes
through :meth:`InteractiveShell.run_cell <IPython.core.interactiveshell.InteractiveShell.run_cell>`
of a private shell, so magics (``%timeit``), shell escapes (``!ls``), top-level ``await``,
``display()`` and the value of a cell's last expression behave as in IPython, and an
exception's report is IPython's traceback. Both kernel modes use it: in this process, and
in the agent (``python -m rlm_core.agent --repl rlm_ipython.namespace:IPythonNamespace``).
"""

# IPython's InteractiveShell is only partly annotated: calling it is no error here.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from rlm_core.repl import REPLNamespace
from rlm_core.vocabulary import SubcallHandler
from rlm_ipython.shell import CellShell, shell_config
from rlm_ipython.tracebacks import show_cell_traceback

_LAST_EXCEPTION = ("last_type", "last_value", "last_traceback", "last_exc")


class IPythonNamespace(REPLNamespace):
    """rlm-core's REPL namespace whose cells run through a private IPython shell.

    IPython's own names (``In``, ``Out``, ``get_ipython``, ``display``, ``exit``, ...)
    are bound in the namespace but, like the REPL functions, not reported as the model's
    variables (``SHOW_VARS``, ``REPLResult.locals``) unless a cell rebinds them.
    """

    def __init__(self, subcalls: SubcallHandler | None = None) -> None:
        super().__init__(subcalls)
        self.shell = CellShell(self, config=shell_config(), user_ns=self.ns)
        self.shell.set_custom_exc((BaseException,), show_cell_traceback)
        self.shell.push({"display": self.shell.display}, interactive=False)

    def execute_source(self, code: str, filename: str) -> None:
        """Run the cell through the shell; raise what the cell (or its parsing) raised."""
        if not code.isascii():
            try:
                code.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: escaped, as on the wire
                code = code.encode("utf-8", "backslashreplace").decode("utf-8")
        saved = {name: getattr(sys, name) for name in _LAST_EXCEPTION if hasattr(sys, name)}
        try:
            result = self.shell.run_cell(code, store_history=True)
        finally:  # IPython sets them for a terminal's %debug: keep the host's own
            for name in _LAST_EXCEPTION:
                if name in saved:
                    setattr(sys, name, saved[name])
                elif hasattr(sys, name):
                    delattr(sys, name)
        error = result.error_before_exec or result.error_in_exec
        if error is not None:
            raise error

    def format_exception(self, exc: BaseException) -> str:
        """IPython's traceback of ``exc`` (rlm-core's when IPython formatted none)."""
        text = self.shell.take_traceback(exc)
        return text if text is not None else super().format_exception(exc)

    def hidden_names(self) -> Iterable[str]:
        """IPython's names still bound to what the shell put there."""
        hidden = self.shell.user_ns_hidden
        return [k for k, v in hidden.items() if self.ns.get(k, hidden) is v]

    def reported_variables(self) -> dict[str, Any]:
        """:meth:`REPLNamespace.reported_variables` without IPython's own names."""
        hidden = set(self.hidden_names())
        return {k: v for k, v in super().reported_variables().items() if k not in hidden}

    def clear(self) -> None:
        """Drop every variable and release the shell."""
        self.shell.dispose()
        super().clear()
        self.shell.user_ns_hidden.clear()
