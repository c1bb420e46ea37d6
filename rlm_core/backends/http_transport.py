"""A lean JSON-over-HTTP/1.1 client on the standard library's :mod:`http.client`.

:class:`JSONTransport` POSTs JSON to one URL and returns the decoded JSON reply. It keeps
its connections alive and reuses them from any thread (a small pool: an idle connection is
taken, used by one request and put back), so concurrent callers never share a connection
and connections outlive the threads that opened them. A kept-alive connection the server
has closed meanwhile is replaced transparently, once per request. Failures are raised as
:class:`HTTPStatusError` (the server answered with an error status), :class:`HTTPTimeoutError`
and :class:`HTTPConnectionError` (the exchange failed), all :class:`HTTPError`.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import importlib
import json
import os
import socket
import ssl
import sys
import threading
import urllib.request
from collections.abc import Mapping
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

_TRANSPORT_HEADERS = frozenset({"host", "content-length", "accept-encoding", "connection"})
"""Headers the transport sets itself; callers' values for them are dropped."""


class HTTPError(Exception):
    """A request through :class:`JSONTransport` failed."""


class HTTPStatusError(HTTPError):
    """The server answered with a status outside 2xx."""

    def __init__(
        self, status_code: int, body: Any, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"Error code: {status_code}")
        self.status_code = status_code
        """The HTTP status."""
        self.body = body
        """The reply body: decoded JSON when it was JSON, else its text."""
        self.headers: dict[str, str] = {k.lower(): v for k, v in (headers or {}).items()}
        """The reply headers (names lower-cased)."""


class HTTPConnectionError(HTTPError):
    """The request could not be sent or its reply not read (the cause is chained)."""


class HTTPTimeoutError(HTTPConnectionError):
    """The server did not answer within the timeout."""


def default_ssl_context() -> ssl.SSLContext:
    """A verifying TLS context: ``certifi``'s CA bundle when it is installed, else the system's."""
    try:
        certifi = importlib.import_module("certifi")
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def sdk_ssl_context(sdk: ModuleType) -> ssl.SSLContext:
    """The TLS settings of an SDK's default HTTP client.

    Made by ``create_ssl_context()`` of the HTTP library ``sdk.DefaultHttpxClient`` is built
    on (``httpx`` or ``httpx2``: the same CA certificates and ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR`` handling as the SDK), else by :func:`default_ssl_context`.
    """
    for cls in getattr(getattr(sdk, "DefaultHttpxClient", None), "__mro__", ()):
        library = sys.modules.get(cls.__module__.partition(".")[0])
        create = getattr(library, "create_ssl_context", None)
        if callable(create):
            context: ssl.SSLContext = create()
            return context
    return default_ssl_context()


@functools.lru_cache(maxsize=8)
def _ssl_context_for(
    sdk: ModuleType | None, cert_file: str | None, cert_dir: str | None
) -> ssl.SSLContext:
    if sdk is not None:
        return sdk_ssl_context(sdk)
    cafile = cert_file if cert_file and os.path.isfile(cert_file) else None
    capath = cert_dir if cert_dir and os.path.isdir(cert_dir) else None
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    return default_ssl_context()


def shared_ssl_context(sdk: ModuleType | None = None) -> ssl.SSLContext:
    """A verifying TLS context made once per process (per SDK, and per value of
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``) and shared by every direct transport: with
    ``sdk``, the one its HTTP client would make (:func:`sdk_ssl_context`); without, the CA
    certificates of the file and directory those variables name (when they exist, as
    ``httpx`` reads them), else :func:`default_ssl_context`."""
    environ = os.environ
    return _ssl_context_for(sdk, environ.get("SSL_CERT_FILE"), environ.get("SSL_CERT_DIR"))


def proxy_applies(url: str) -> bool:
    """Whether the proxy settings (``HTTP(S)_PROXY``, ``ALL_PROXY``, ``NO_PROXY``) cover ``url``.

    Uses :func:`urllib.request.getproxies` and :func:`urllib.request.proxy_bypass`, which read
    the same environment variables as ``httpx``.
    """
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.netloc.rpartition("@")[2])


def _decode(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")


class JSONTransport:
    """POSTs JSON bodies to one ``http://`` or ``https://`` URL over kept-alive connections.

    ``headers`` are sent with every request (``Host``, ``Content-Length``, ``Connection`` and
    ``Accept-Encoding: identity`` are the transport's own). ``timeout`` bounds the connect
    and each read or write of one attempt (``None``: no limit). ``ssl_context`` is used for
    ``https`` URLs (default :func:`default_ssl_context`). Thread-safe.
    """

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        timeout: float | None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"JSONTransport needs an http:// or https:// URL, not {url!r}")
        self.url = url
        """The URL every request is sent to."""
        self._host = parts.hostname
        self._port = parts.port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {
            **{k: v for k, v in headers.items() if k.lower() not in _TRANSPORT_HEADERS},
            "Accept-Encoding": "identity",
        }
        self._timeout = timeout
        self._ssl_context = (
            (ssl_context or default_ssl_context()) if parts.scheme == "https" else None
        )
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []
        self._open: set[http.client.HTTPConnection] = set()
        self._closed = False

    # -- the interface -----------------------------------------------------------------------

    def post(self, payload: Any, path: str | None = None) -> Any:
        """POST ``payload`` as JSON and return the decoded JSON reply.

        ``path`` (a path with an optional query) is requested instead of the URL's, on the
        same host and connections. Raises :class:`HTTPStatusError` for a non-2xx status,
        :class:`HTTPConnectionError` / :class:`HTTPTimeoutError` when the exchange fails,
        :class:`json.JSONDecodeError` when a 2xx reply is not JSON, and :class:`TypeError` /
        :class:`ValueError` when ``payload`` cannot be encoded.
        """
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        status, data, headers = self._exchange(body.encode(), path or self._target)
        if not 200 <= status < 300:
            raise HTTPStatusError(status, _decode(data), headers)
        return json.loads(data)

    def close(self) -> None:
        """Close every connection, including those in use by other threads (their requests
        fail); later requests raise :class:`HTTPError`."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            in_use = self._open.difference(idle)
            self._open.clear()
        for conn in in_use:  # wake the owner's blocked read; the owner closes it
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for conn in idle:
            conn.close()

    # -- connections -------------------------------------------------------------------------

    def _acquire(self) -> http.client.HTTPConnection:
        with self._lock:
            if self._closed:
                raise HTTPError("the transport is closed")
            if self._idle:
                return self._idle.pop()
            conn = self._connect()
            self._open.add(conn)
            return conn

    def _connect(self) -> http.client.HTTPConnection:
        """A new, not yet connected connection (it connects on its first request)."""
        if self._ssl_context is not None:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=self._ssl_context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def _release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def _discard(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._open.discard(conn)
        conn.close()

    # -- one exchange ------------------------------------------------------------------------

    def _exchange(self, body: bytes, target: str) -> tuple[int, bytes, dict[str, str]]:
        """Send ``body`` to ``target``; the reply's status, body and headers. Replaces a stale
        kept-alive connection."""
        conn = self._acquire()
        try:
            reused = conn.sock is not None
            try:
                result = self._roundtrip(conn, body, target)
            except ConnectionError:
                # A kept-alive connection the server closed before it read the request.
                if not reused or self._closed:
                    raise
                conn.close()
                result = self._roundtrip(conn, body, target)  # reconnects
        except TimeoutError as exc:
            self._discard(conn)
            raise HTTPTimeoutError(f"no reply within {self._timeout}s") from exc
        except (OSError, http.client.HTTPException) as exc:
            self._discard(conn)
            raise HTTPConnectionError("connection error") from exc
        except BaseException:
            self._discard(conn)
            raise
        self._release(conn)
        return result

    def _roundtrip(
        self, conn: http.client.HTTPConnection, body: bytes, target: str
    ) -> tuple[int, bytes, dict[str, str]]:
        conn.request("POST", target, body, self._headers)
        response = conn.getresponse()
        data = response.read()
        if 200 <= response.status < 300:
            return response.status, data, {}
        return response.status, data, {k.lower(): v for k, v in response.getheaders()}
