"""Building blocks of a wire-level fake service over HTTP/1.1, on the standard library.

A provider's SDK talks REST (and often Connect, whose Python server is a WSGI application)
to its service; a fake of that service is a WSGI application served on the loopback by
:func:`serve`. The server is wsgiref's, threaded, and reads chunked request bodies too
(which wsgiref alone does not: streaming SDK clients send them). The rest are the small
pieces every such application repeats: a JSON answer (:func:`reply`), the request's body
read once (:func:`request_body`, :func:`request_json`, :func:`drain`), a multipart form's
parts (:func:`form_parts`), routing by method and path (:func:`dispatch`) and an error
that becomes an answer (:class:`HTTPError`).

    def create(environ, kind):
        return 201, {"kind": kind, **request_json(environ)}

    ROUTES = {("POST", r"/v1/things/([a-z]+)"): create}

    def app(environ, start_response):
        try:
            return dispatch(ROUTES, environ, start_response)
        except HTTPError as exc:
            drain(environ)
            return reply(start_response, exc.status, {"message": exc.message})

    server = serve(app)          # on 127.0.0.1, a free port: server.url
    ...
    server.stop()
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import json
import re
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable, Mapping
from email.message import EmailMessage
from typing import IO, Any, BinaryIO, Protocol, cast
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

Environ = dict[str, Any]
"""A WSGI request's environment."""

StartResponse = Callable[..., Any]
"""WSGI's ``start_response``."""

App = Callable[[Environ, StartResponse], Iterable[bytes]]
"""A WSGI application."""

Route = Callable[..., tuple[int, Any]]
"""A route's handler: ``handler(environ, *groups)`` returns ``(status, body)``, the body
JSON-compatible or ``None``; ``groups`` are the path pattern's groups."""

REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content"}
"""The reason phrases :func:`reply` sends (``Error`` for any other status)."""


class HTTPError(Exception):
    """An error answer: ``status``, a ``message`` and ``extra`` fields for its body (the
    application decides the body's shape)."""

    def __init__(self, status: int, message: str, **extra: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def reply(start_response: StartResponse, status: int, body: Any) -> list[bytes]:
    """Answer with ``body`` as JSON (no body, and no content type, for ``None``)."""
    data = b"" if body is None else json.dumps(body).encode()
    headers = [("Content-Length", str(len(data)))]
    if body is not None:
        headers.append(("Content-Type", "application/json"))
    start_response(f"{status} {REASONS.get(status, 'Error')}", headers)
    return [data]


def dispatch(
    routes: Mapping[tuple[str, str], Route], environ: Environ, start_response: StartResponse
) -> list[bytes]:
    """Answer with the first of ``routes`` (``(METHOD, path pattern)`` -> handler) whose
    method is the request's and whose pattern, a regular expression, matches its whole
    path; :class:`HTTPError` 404 when none does."""
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
    for (verb, pattern), handler in routes.items():
        match = re.fullmatch(pattern, path)
        if verb == method and match:
            status, body = handler(environ, *match.groups())
            return reply(start_response, status, body)
    raise HTTPError(404, f"no route {method} {path}")


def request_body(environ: Environ) -> bytes:
    """The request's body (read once, then kept in the environ; empty when it has none)."""
    if "fake.body" not in environ:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        stream: BinaryIO = environ["wsgi.input"]
        environ["fake.body"] = stream.read(length) if length else stream.read()
    body: bytes = environ["fake.body"]
    return body


def request_json(environ: Environ) -> dict[str, Any]:
    """The request's body as a JSON object (``{}`` when it has none)."""
    data: dict[str, Any] = json.loads(request_body(environ) or b"{}")
    return data


def drain(environ: Environ) -> None:
    """Read what is left of the request's body, so that an early answer leaves the
    connection ready for the next request (a client that went away is not an error)."""
    with contextlib.suppress(OSError, ValueError):
        request_body(environ)


def form_parts(content_type: str, body: bytes) -> list[EmailMessage]:
    """The parts of a ``multipart/form-data`` body (``part.get_filename()``,
    ``part.get_param("name", header="content-disposition")``,
    ``part.get_payload(decode=True)``)."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    assert isinstance(message, EmailMessage)  # the HTTP policy's message class
    return [part for part in message.iter_parts() if isinstance(part, EmailMessage)]


# -- the server -------------------------------------------------------------------------------


class Stream(Protocol):
    """The connection's buffered input, as a request body reader needs it."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (fewer only at the end of the stream)."""
        ...

    def readline(self, size: int = -1, /) -> bytes:
        """One line, with its end."""
        ...


class ChunkedBody:
    """A reader of an HTTP/1.1 chunked request body (trailers skipped)."""

    def __init__(self, raw: Stream) -> None:
        self._raw = raw
        self._left = 0
        self._done = False

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes of the body (all of it for a negative size)."""
        out = bytearray()
        while not self._done and (size < 0 or len(out) < size):
            if self._left == 0:
                line = self._raw.readline()
                self._left = int(line.split(b";")[0].strip() or b"0", 16)
                if self._left == 0:
                    while self._raw.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    self._done = True
                    break
            want = self._left if size < 0 else min(self._left, size - len(out))
            data = self._raw.read(want)
            if not data:
                self._done = True
                break
            out += data
            self._left -= len(data)
            if self._left == 0:
                self._raw.readline()
        return bytes(out)

    def readline(self, size: int = -1) -> bytes:
        """As :meth:`read` (the applications served read bodies whole)."""
        return self.read(size)


class SizedBody:
    """A request body of known length: reading past it would wait for the next request."""

    def __init__(self, raw: Stream, length: int) -> None:
        self._raw = raw
        self._left = length

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes of the body (the rest of it for a negative size)."""
        want = self._left if size < 0 else min(size, self._left)
        data = self._raw.read(want) if want else b""
        self._left -= len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        """As :meth:`read` (the applications served read bodies whole)."""
        return self.read(size)


class RequestHandler(WSGIRequestHandler):
    """wsgiref's handler with the body as :class:`SizedBody` or :class:`ChunkedBody`,
    and no access log."""

    def handle(self) -> None:
        """Serve one request."""
        self.raw_requestline = self.rfile.readline(65537)
        if not self.raw_requestline or not self.parse_request():
            return
        stdin: Any = SizedBody(self.rfile, int(self.headers.get("Content-Length") or 0))
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            stdin = ChunkedBody(self.rfile)
        out = cast(IO[bytes], self.wfile)
        handler = ServerHandler(stdin, out, self.get_stderr(), self.get_environ(), multithread=True)
        handler.request_handler = self  # type: ignore[attr-defined]
        handler.run(self.server.get_app())  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing."""


class ClosesConnections(socketserver.ThreadingMixIn):
    """A threaded server that keeps its open connections, so that :meth:`close_connections`
    ends those an SDK's connection pool keeps alive: their handler threads, blocked reading
    the next request, end instead of outliving the fake."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._open_connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Note the connection, then serve it on a thread of its own."""
        with self._connections_lock:
            self._open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection and close it."""
        with self._connections_lock:
            self._open_connections.discard(request)
        super().shutdown_request(request)  # type: ignore[misc]

    def close_connections(self) -> None:
        """Shut down every connection still open (its handler then reads the end)."""
        with self._connections_lock:
            requests = list(self._open_connections)
        for request in requests:
            with contextlib.suppress(OSError):
                request.shutdown(socket.SHUT_RDWR)


class ThreadedWSGIServer(ClosesConnections, WSGIServer):
    """wsgiref's server with a daemon thread per request (see :func:`serve`)."""

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the server."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        """Stop serving, close the socket and every connection still open."""
        self.shutdown()
        self.server_close()
        self.close_connections()


def serve(app: App, host: str = "127.0.0.1") -> ThreadedWSGIServer:
    """Serve ``app`` on a free port of ``host`` from a daemon thread; :meth:`stop
    <ThreadedWSGIServer.stop>` ends it."""
    server = ThreadedWSGIServer((host, 0), RequestHandler)
    server.set_app(app)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
