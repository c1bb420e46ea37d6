"""Serve the viewer page on the loopback interface; every request re-reads the log."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from rlm_core.viewer.load import LogFileError, ViewerError, load_log
from rlm_core.viewer.render import render_html

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; base-uri 'none'; form-action 'none'"
)


class ViewerServer(ThreadingHTTPServer):
    """An HTTP server for one log file; ``url`` is where its page is."""

    daemon_threads = True

    def __init__(self, log_path: Path, host: str, port: int) -> None:
        self.log_path = log_path
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        """``http://host:port/``."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"


class _Handler(BaseHTTPRequestHandler):
    server: ViewerServer

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] not in ("/", "/index.html"):
            self.send_error(404, "only / is served")
            return
        try:
            body = render_html(load_log(self.server.log_path)).encode("utf-8")
        except LogFileError as exc:
            self.send_error(500, str(exc))
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def serve(log_path: str | Path, host: str = "127.0.0.1", port: int = 0) -> ViewerServer:
    """A server (not yet started: call ``serve_forever``) for the log at ``log_path``.

    ``port=0`` picks a free port. The log is read once here, so a bad path fails at once.
    """
    path = Path(log_path)
    load_log(path)
    try:
        return ViewerServer(path, host, port)
    except OSError as exc:
        raise ViewerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
