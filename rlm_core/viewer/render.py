"""Embed a loaded log into the viewer's HTML template: one self-contained page."""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path
from typing import Any

from rlm_core.viewer.load import load_log

DATA_SLOT = "__RLM_LOG_JSON__"
TITLE_SLOT = "__RLM_TITLE__"


def template() -> str:
    """The page template shipped with the package."""
    return resources.files("rlm_core.viewer").joinpath("template.html").read_text("utf-8")


def script_json(data: Any) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element: ``<``, ``>`` and ``&``
    are written as ``\\u`` escapes, so no ``</script>`` or ``<!--`` can appear in it."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(data: dict[str, Any]) -> str:
    """The page for a document made by :func:`~rlm_core.viewer.load.load_log`."""
    head, tail = template().split(DATA_SLOT)
    title = html.escape(f"RLM trajectory: {data.get('file', '')}")
    return head.replace(TITLE_SLOT, title) + script_json(data) + tail


def render_log(path: str | Path) -> str:
    """The page for the log at ``path``."""
    return render_html(load_log(path))


def default_output(log_path: str | Path) -> Path:
    """Where ``rlm view`` writes the page: next to the log, ending ``.html``."""
    path = Path(log_path)
    out = path.with_suffix(".html")
    return out if out != path else path.with_name(path.name + ".view.html")


def write_html(log_path: str | Path, out: str | Path | None = None) -> Path:
    """Write the page for the log at ``log_path`` to ``out`` (default:
    :func:`default_output`) and return its path."""
    page = render_log(log_path)
    target = Path(out) if out is not None else default_output(log_path)
    target.write_text(page, encoding="utf-8")
    return target
