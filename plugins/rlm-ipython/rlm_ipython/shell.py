"""The IPython shell that runs one namespace's cells and leaves the process alone."""

# IPython's InteractiveShell is only partly annotated: calling it is no error here.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import atexit
import subprocess
import sys
import warnings
from typing import TYPE_CHECKING, Any

from IPython.core.interactiveshell import InteractiveShell
from traitlets import Type
from traitlets.config import Config

from rlm_ipython.commands import run_command
from rlm_ipython.traps import NoBuiltinTrap, ThreadDisplayTrap, ValueDisplayHook

if TYPE_CHECKING:
    from rlm_ipython.namespace import IPythonNamespace

_EXIT_ADVICE = r"To exit: use 'exit', 'quit', or Ctrl-D\."


def silence_exit_advice() -> None:
    """Filter out IPython's advice after ``sys.exit()`` in a cell, which is for people at
    a terminal (the cell's error already says the REPL keeps running). Checked before each
    cell, since whoever owns the process (a test runner) may have reset the filters."""
    for action, message, *_ in warnings.filters:
        if action == "ignore" and getattr(message, "pattern", None) == _EXIT_ADVICE:
            return
    warnings.filterwarnings("ignore", message=_EXIT_ADVICE, category=UserWarning)


class CellShell(InteractiveShell):
    """An ``InteractiveShell`` that runs one :class:`IPythonNamespace`'s cells.

    It leaves the process alone: ``sys.modules['__main__']``, ``sys.path`` (no virtualenv
    guessing), ``sys.ps1`` and the singleton ``InteractiveShell.instance()`` stay as they
    were, so several shells can live in one process. Tracebacks are kept for the
    namespace instead of printed, and only the cell's own code is interruptible.
    """

    displayhook_class = Type(ValueDisplayHook)

    def __init__(self, namespace: IPythonNamespace, **kwargs: Any) -> None:
        self._namespace = namespace
        self._last_traceback: tuple[BaseException | None, str] | None = None
        super().__init__(**kwargs)

    # -- leave the process alone ----------------------------------------------------------

    def init_sys_modules(self) -> None:
        """Keep ``sys.modules['__main__']``: the host's, not this shell's."""

    def init_virtualenv(self) -> None:
        """Never change ``sys.path`` to match ``$VIRTUAL_ENV``."""

    def init_prompts(self) -> None:
        """Leave ``sys.ps1``/``sys.ps2`` unset: the process is not an interactive session."""

    def init_builtins(self) -> None:
        """Leave the ``builtins`` module alone (see :class:`~rlm_ipython.traps.NoBuiltinTrap`)."""
        self.builtin_trap = NoBuiltinTrap(shell=self)

    def init_displayhook(self) -> None:
        """The value hook, routed per thread (see :class:`~rlm_ipython.traps.ThreadDisplayTrap`)."""
        super().init_displayhook()
        self.display_trap = ThreadDisplayTrap(hook=self.displayhook)

    def excepthook(self, etype: Any, value: Any, tb: Any) -> None:
        """What a cell's direct ``sys.excepthook(...)`` call does: Python's own report.
        (IPython sets this method as ``sys.excepthook`` while a cell runs.)"""
        sys.__excepthook__(etype, value, tb)

    # -- running cells ----------------------------------------------------------------------

    async def run_code(self, code_obj: Any, result: Any = None, *, async_: bool = False) -> Any:
        """Run compiled cell code with the namespace marked as executing (a timeout
        interrupts this, never IPython's own bookkeeping)."""
        silence_exit_advice()
        with self._namespace.interruptible():
            return await super().run_code(code_obj, result, async_=async_)

    def _format_exception_for_storage(self, exception: Any, *args: Any, **kwargs: Any) -> Any:
        """What IPython (9+) keeps of a failed cell in its history: the error's name and
        text only. Its own version formats the whole traceback once more, which for a deep
        recursion takes minutes; the cell's report has the traceback already."""
        return {"ename": type(exception).__name__, "evalue": str(exception), "traceback": []}

    def _showtraceback(self, etype: Any, evalue: Any, stb: Any) -> None:
        """Keep the formatted traceback for the cell's report instead of printing it."""
        self._last_traceback = (evalue, self.InteractiveTB.stb2text(stb))

    def take_traceback(self, exc: BaseException) -> str | None:
        """The traceback IPython formatted for ``exc`` (``None`` if it formatted none)."""
        kept, self._last_traceback = self._last_traceback, None
        if kept is None or kept[0] is not exc:
            return None
        return kept[1]

    def system_piped(self, cmd: str) -> None:
        """``!cmd``: run it (see :func:`run_command`), its output on the cell's stdout,
        its exit status in ``_exit_code``."""
        if cmd.rstrip().endswith("&"):
            raise OSError("Background processes not supported.")
        exit_code = run_command(self.var_expand(cmd, depth=1), sys.stdout.write)
        self.user_ns["_exit_code"] = exit_code
        if getattr(self, "system_raise_on_error", False) and exit_code != 0:
            raise subprocess.CalledProcessError(exit_code, cmd)

    system = system_piped

    def getoutput(self, cmd: str, split: bool = True, depth: int = 0) -> Any:
        """``x = !cmd``: its output as IPython's ``SList`` of lines (``LSString`` with
        ``split=False``)."""
        from IPython.utils.text import LSString, SList

        if cmd.rstrip().endswith("&"):
            raise OSError("Background processes not supported.")
        parts: list[str] = []
        run_command(self.var_expand(cmd, depth=depth + 1), parts.append)
        out = "".join(parts)
        return SList(out.splitlines()) if split else LSString(out)

    def display(self, *objs: Any, include: Any = None, exclude: Any = None, **_: Any) -> None:
        """``display(obj, ...)``: each object's richest text representation, on stdout."""
        for obj in objs:
            formatter = self.display_formatter
            assert formatter is not None
            data, metadata = formatter.format(obj, include=include, exclude=exclude)
            if data:
                self.display_pub.publish(data=data, metadata=metadata)

    def dispose(self) -> None:
        """Release what the shell holds in the process: its exit handlers, its temporary
        files, and the processes ``%%script --bg`` left running."""
        script = self.magics_manager.registry.get("ScriptMagics")
        if script is not None:
            atexit.unregister(script.kill_bg_processes)
            script.kill_bg_processes()
        atexit.unregister(self.atexit_operations)
        self.atexit_operations()


def shell_config() -> Config:
    """IPython settings of every cell shell."""
    config = Config()
    config.HistoryAccessor.enabled = False  # no SQLite history file
    config.InteractiveShell.colors = "nocolor"  # tracebacks are read by a model, not a tty
    config.InteractiveShell.autocall = 0
    return config
