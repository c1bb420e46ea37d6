"""A real local HTTP server speaking the OpenAI and Anthropic chat APIs, for tests.

:class:`LMServer` runs a stdlib :class:`http.server.ThreadingHTTPServer` on
``127.0.0.1`` (a free port) in a background thread. It answers

* OpenAI chat completions: ``POST`` to any path ending in ``/chat/completions``
  (``/v1/chat/completions``, ``/chat/completions``, Azure's
  ``/openai/deployments/<name>/chat/completions``), and
* Anthropic messages: ``POST`` to any path ending in ``/messages`` (``/v1/messages``).

Replies are deterministic. Token usage is reported as:

* ``prompt_tokens`` / ``input_tokens`` = total characters of the message contents
  (plus the ``system`` prompt for Anthropic requests) ``// 4``;
* ``completion_tokens`` / ``output_tokens`` = ``len(reply) // 4``;
* prompt-cache tokens as the providers report them: :attr:`LMServer.cached_tokens` of the
  prompt tokens (at most all of them) as OpenAI's ``prompt_tokens_details.cached_tokens``
  (included in ``prompt_tokens``) and Anthropic's ``cache_read_input_tokens``, and
  :attr:`LMServer.cache_write_tokens` as Anthropic's ``cache_creation_input_tokens``
  (Anthropic's ``input_tokens`` leave both out). Both are 0 unless set.

:func:`expected_usage` computes the same numbers for a message list.

Per test, set :attr:`LMServer.reply` (a function of the request JSON returning the reply
text), queue failures with :meth:`LMServer.fail_next` (HTTP status codes such as ``429`` or
``500``, or one of :data:`FAILURE_MODES`), add :attr:`LMServer.latency` seconds per request
or a :attr:`LMServer.cost` (reported OpenRouter style in ``usage``). Every request is
recorded in :attr:`LMServer.requests`, and :attr:`LMServer.max_concurrent` is the largest
number of requests that were being served at once. :attr:`LMServer.connections_opened`
counts the client connections accepted (kept-alive connections serve many requests), and
:meth:`LMServer.drop_connections` closes the open ones, as a server's idle timeout does.

Use it with the ``openai_server`` / ``anthropic_server`` fixtures (function scoped)::

    def test_something(openai_server):
        openai_server.fail_next(429)
        backend = OpenAIBackend(base_url=openai_server.base_url, api_key="k", model_name="m")
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import pytest

Failure = int | str
"""A queued failure: an HTTP status code, or one of :data:`FAILURE_MODES`."""

FAILURE_MODES: dict[str, str] = {
    "malformed": "HTTP 200 with valid JSON that lacks `choices` (Anthropic: lacks `content`)",
    "null_content": "HTTP 200 whose message content is null and has no refusal",
    "refusal": "HTTP 200 whose message content is null and whose refusal is set",
    "no_usage": "a normal reply without the `usage` object",
    "content_parts": "a normal reply whose message content is a list of two text parts",
    "garbage": "HTTP 200, content-type application/json, body that is not JSON",
    "disconnect": "close the connection without sending any response",
}
"""The non-status failure modes :meth:`LMServer.fail_next` accepts."""


def content_chars(content: Any) -> int:
    """Characters of a message ``content`` (a string or a list of ``text`` parts)."""
    if content is None:
        return 0
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict):
                total += len(str(part.get("text") or ""))
            else:
                total += len(str(part))
        return total
    return len(str(content))


def prompt_chars(body: dict[str, Any]) -> int:
    """Total characters of a request's messages (and ``system`` prompt, if any)."""
    total = sum(content_chars(m.get("content")) for m in body.get("messages") or [])
    return total + content_chars(body.get("system"))


def expected_usage(messages: list[dict[str, Any]], reply: str) -> tuple[int, int]:
    """The ``(prompt_tokens, completion_tokens)`` the server reports for this exchange."""
    return prompt_chars({"messages": messages}) // 4, len(reply) // 4


def default_reply(body: dict[str, Any]) -> str:
    """``"echo: <last message content>"``: deterministic and prompt-dependent."""
    messages = body.get("messages") or []
    last = messages[-1].get("content") if messages else ""
    if isinstance(last, list):
        last = "".join(str(p.get("text") or "") for p in last if isinstance(p, dict))
    return f"echo: {last}"


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    """The URL path without the query string."""
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Header names are lower-cased."""
    body: Any
    """The decoded JSON body, or ``None`` when it was not JSON."""


class _Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True  # headers and body go in two writes: no delayed-ACK stall
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def do_GET(self) -> None:
        self._send_json(404, {"error": {"message": f"no route for GET {self.path}"}})

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        split = urlsplit(self.path)
        record = RecordedRequest(
            method="POST",
            path=split.path,
            query=parse_qs(split.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        owner._begin(record)
        try:
            if owner.latency:
                time.sleep(owner.latency)
            failure = owner._pop_failure()
            if split.path.endswith("/chat/completions"):
                self._serve(owner, body, failure, api="openai")
            elif split.path.endswith("/messages"):
                self._serve(owner, body, failure, api="anthropic")
            else:
                self._send_json(404, {"error": {"message": f"no route for POST {split.path}"}})
        finally:
            owner._end()

    def _serve(
        self,
        owner: LMServer,
        body: Any,
        failure: Failure | None,
        api: Literal["openai", "anthropic"],
    ) -> None:
        if isinstance(failure, int):
            self._send_error_status(failure, api)
            return
        if failure == "disconnect":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if failure == "garbage":
            self._send_raw(200, b"<html>this is not JSON</html>", "application/json")
            return
        if not isinstance(body, dict):
            self._send_error_status(400, api, "request body must be a JSON object")
            return
        text = owner.reply(body)
        prompt_tokens = prompt_chars(body) // 4
        completion_tokens = len(text) // 4
        model = str(body.get("model") or "unknown")
        if api == "openai":
            payload = owner._openai_payload(model, text, prompt_tokens, completion_tokens, failure)
        else:
            payload = owner._anthropic_payload(
                model, text, prompt_tokens, completion_tokens, failure
            )
        self._send_json(200, payload)

    def _send_error_status(
        self, status: int, api: Literal["openai", "anthropic"], message: str | None = None
    ) -> None:
        message = message or f"forced HTTP {status} from the test server"
        payload: dict[str, Any]
        if api == "anthropic":
            payload = {"type": "error", "error": {"type": "api_error", "message": message}}
        else:
            payload = {"error": {"message": message, "type": "test_error", "code": str(status)}}
        self._send_json(status, payload)

    def _send_json(self, status: int, payload: Any) -> None:
        self._send_raw(status, json.dumps(payload).encode(), "application/json")

    def _send_raw(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    owner: LMServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that hung up (timeouts, closed pools); report anything else."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class LMServer:
    """A local OpenAI/Anthropic-compatible chat server (see the module docstring).

    Use as a context manager or call :meth:`start` / :meth:`stop`. Attributes may be
    changed while it runs; they are read for each request.
    """

    def __init__(
        self,
        reply: Callable[[dict[str, Any]], str] | None = None,
        failures: list[Failure] | None = None,
        latency: float = 0.0,
        cost: float | None = None,
        cost_style: Literal["cost", "upstream"] = "cost",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.reply: Callable[[dict[str, Any]], str] = reply or default_reply
        """Returns the reply text for a request's JSON body."""
        self.latency = latency
        """Seconds to sleep before answering each request."""
        self.cost = cost
        """USD reported in ``usage`` of OpenAI-style replies (``None``: no cost field)."""
        self.cost_style = cost_style
        """``"cost"``: ``usage.cost``; ``"upstream"``: ``usage.cost_details.upstream_...``."""
        self.cached_tokens = 0
        """Prompt tokens of each reply reported as read from the prompt cache."""
        self.cache_write_tokens = 0
        """Prompt tokens of each Anthropic reply reported as written to the prompt cache."""
        self.ssl_context = ssl_context
        """A server-side TLS context: serve HTTPS (set before :meth:`start`)."""
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_concurrent = 0
        self.connections_opened = 0
        """Client connections accepted so far."""
        self._failures: deque[Failure] = deque()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.fail_next(*(failures or []))

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LMServer:
        """Bind ``127.0.0.1`` on a free port and serve in a background thread."""
        if self._httpd is not None:
            return self
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        if self.ssl_context is not None:
            httpd.socket = self.ssl_context.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop every open connection."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port."""
        if self._httpd is None:
            raise RuntimeError("the LM server is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the Anthropic SDK's ``base_url``; it adds ``/v1``);
        ``https://`` with :attr:`ssl_context`."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` (an OpenAI-style ``base_url``)."""
        return f"{self.url}/v1"

    # -- configuration -----------------------------------------------------------------------

    def fail_next(self, *failures: Failure) -> None:
        """Queue failures served, in order, to the next requests before normal replies."""
        for failure in failures:
            if isinstance(failure, str) and failure not in FAILURE_MODES:
                raise ValueError(f"unknown failure mode {failure!r}; use {sorted(FAILURE_MODES)}")
        with self._lock:
            self._failures.extend(failures)

    def drop_connections(self) -> int:
        """Close every open client connection (as an idle timeout does); how many were open."""
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        return len(connections)

    @property
    def open_connections(self) -> int:
        """Client connections open now."""
        with self._lock:
            return len(self._connections)

    @property
    def request_count(self) -> int:
        """Requests received so far."""
        with self._lock:
            return len(self.requests)

    @property
    def bodies(self) -> list[Any]:
        """The JSON bodies of the requests received so far."""
        with self._lock:
            return [r.body for r in self.requests]

    # -- internals ---------------------------------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
                self.connections_opened += 1
            else:
                self._connections.discard(conn)

    def _begin(self, record: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(record)
            self.in_flight += 1
            self.max_concurrent = max(self.max_concurrent, self.in_flight)

    def _end(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _pop_failure(self) -> Failure | None:
        with self._lock:
            return self._failures.popleft() if self._failures else None

    def _openai_payload(
        self,
        model: str,
        text: str,
        prompt_tokens: int,
        completion_tokens: int,
        failure: Failure | None,
    ) -> dict[str, Any]:
        if failure == "malformed":
            return {"id": "chatcmpl-test", "object": "chat.completion", "model": model}
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if failure == "null_content":
            message = {"role": "assistant", "content": None}
        elif failure == "refusal":
            message = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
        elif failure == "content_parts":
            half = len(text) // 2
            parts = [{"type": "text", "text": text[:half]}, {"type": "text", "text": text[half:]}]
            message = {"role": "assistant", "content": parts}
        payload: dict[str, Any] = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }
        if failure != "no_usage":
            usage: dict[str, Any] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {
                    "cached_tokens": min(self.cached_tokens, prompt_tokens),
                    "audio_tokens": 0,
                },
            }
            if self.cost is not None:
                if self.cost_style == "upstream":
                    usage["cost"] = 0
                    usage["cost_details"] = {"upstream_inference_cost": self.cost}
                else:
                    usage["cost"] = self.cost
            payload["usage"] = usage
        return payload

    def _anthropic_payload(
        self,
        model: str,
        text: str,
        input_tokens: int,
        output_tokens: int,
        failure: Failure | None,
    ) -> dict[str, Any]:
        read = min(self.cached_tokens, input_tokens)
        written = min(self.cache_write_tokens, input_tokens - read)
        payload: dict[str, Any] = {
            "id": "msg_test",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens - read - written,
                "output_tokens": output_tokens,
                "cache_read_input_tokens": read,
                "cache_creation_input_tokens": written,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": written,
                    "ephemeral_1h_input_tokens": 0,
                },
            },
        }
        if failure == "malformed":
            del payload["content"]
        elif failure in ("null_content", "refusal"):
            payload["content"] = []
        elif failure == "no_usage":
            del payload["usage"]
        return payload


@pytest.fixture
def openai_server() -> Iterator[LMServer]:
    """A running :class:`LMServer`; point OpenAI-style backends at ``.base_url``."""
    with LMServer() as server:
        yield server


@pytest.fixture
def anthropic_server() -> Iterator[LMServer]:
    """A running :class:`LMServer`; point Anthropic backends at ``.url``."""
    with LMServer() as server:
        yield server
