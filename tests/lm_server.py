"""A real local HTTP server speaking the OpenAI, Anthropic and Gemini APIs, for tests.

:class:`LMServer` runs a stdlib :class:`http.server.ThreadingHTTPServer` on
``127.0.0.1`` (a free port) in a background thread. It answers

* OpenAI chat completions: ``POST`` to any path ending in ``/chat/completions``
  (``/v1/chat/completions``, ``/chat/completions``, Azure's
  ``/openai/deployments/<name>/chat/completions``); with :attr:`LMServer.portkey_api_key`
  set it is Portkey's gateway (below);
* Anthropic messages: ``POST`` to any path ending in ``/messages`` (``/v1/messages``), and
* Gemini ``generateContent``: ``POST /<version>/models/<model>:generateContent`` (any path
  prefix; ``tunedModels/<name>`` too), with the API key in ``x-goog-api-key`` or ``?key=``.

Replies are deterministic. Token usage is reported as:

* ``prompt_tokens`` / ``input_tokens`` / ``promptTokenCount`` = total characters of the
  message contents (plus the ``system`` prompt for Anthropic requests, the
  ``systemInstruction`` for Gemini ones) ``// 4``;
* ``completion_tokens`` / ``output_tokens`` / ``candidatesTokenCount`` = ``len(reply) // 4``;
* prompt-cache tokens as the providers report them: :attr:`LMServer.cached_tokens` of the
  prompt tokens (at most all of them) as OpenAI's ``prompt_tokens_details.cached_tokens``
  (included in ``prompt_tokens``), Anthropic's ``cache_read_input_tokens`` and Gemini's
  ``cachedContentTokenCount`` (included in ``promptTokenCount``), and
  :attr:`LMServer.cache_write_tokens` as Anthropic's ``cache_creation_input_tokens``
  (Anthropic's ``input_tokens`` leave both out). Both are 0 unless set;
* Gemini's thinking tokens: :attr:`LMServer.thoughts_tokens` as ``thoughtsTokenCount``
  (billed as output, not part of ``candidatesTokenCount``); 0 (and left out) unless set.

:func:`expected_usage` computes the same numbers for a message list. A Gemini request is
seen by :attr:`LMServer.reply` (and :func:`prompt_chars`) as the equivalent chat request
(:func:`gemini_as_chat`: ``systemInstruction`` becomes a system message, role ``model``
becomes ``assistant``), so one reply function serves every API.

Gemini errors have Google's shape, ``{"error": {"code", "message", "status", "details"}}``:
a missing key is HTTP 403 ``PERMISSION_DENIED``, a wrong one (when
:attr:`LMServer.gemini_api_key` is set) HTTP 400 ``INVALID_ARGUMENT`` with reason
``API_KEY_INVALID``, a prompt over :attr:`LMServer.max_input_tokens` HTTP 400
``INVALID_ARGUMENT``, and a forced 429 ``RESOURCE_EXHAUSTED`` carries a
``google.rpc.RetryInfo`` when :attr:`LMServer.retry_after` is set.

As Portkey's gateway (:attr:`LMServer.portkey_api_key` set), a chat request needs
``x-portkey-api-key`` equal to it (else HTTP 401) and a route: ``x-portkey-provider``,
``x-portkey-virtual-key`` or ``x-portkey-config`` (else HTTP 400); errors are Portkey's
``{"status": "failure", "message": ...}``, and replies carry ``x-portkey-trace-id`` and
``x-portkey-provider`` headers. Forced OpenAI-style 429s carry ``retry-after`` when
:attr:`LMServer.retry_after` is set.

Per test, set :attr:`LMServer.reply` (a function of the request JSON returning the reply
text), queue failures with :meth:`LMServer.fail_next` (HTTP status codes such as ``429`` or
``500``, or one of :data:`FAILURE_MODES`), add :attr:`LMServer.latency` seconds per request
or a :attr:`LMServer.cost` (reported OpenRouter style in ``usage``). Every request is
recorded in :attr:`LMServer.requests`, and :attr:`LMServer.max_concurrent` is the largest
number of requests that were being served at once. :attr:`LMServer.connections_opened`
counts the client connections accepted (kept-alive connections serve many requests), and
:meth:`LMServer.drop_connections` closes the open ones, as a server's idle timeout does.

Use it with the ``openai_server`` / ``anthropic_server`` / ``gemini_server`` /
``portkey_server`` fixtures (function scoped)::

    def test_something(openai_server):
        openai_server.fail_next(429)
        backend = OpenAIBackend(base_url=openai_server.base_url, api_key="k", model_name="m")
"""

from __future__ import annotations

import contextlib
import json
import re
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
    """Total characters of a request's messages (and ``system`` prompt, if any); a Gemini
    request's ``contents`` and ``systemInstruction``."""
    if "contents" in body:
        body = gemini_as_chat(body)
    total = sum(content_chars(m.get("content")) for m in body.get("messages") or [])
    return total + content_chars(body.get("system"))


def _gemini_text(content: Any) -> str:
    parts = content.get("parts") if isinstance(content, dict) else None
    return "".join(
        str(p.get("text") or "")
        for p in parts or []
        if isinstance(p, dict) and not p.get("thought")
    )


def gemini_as_chat(body: dict[str, Any], model: str = "") -> dict[str, Any]:
    """A Gemini ``generateContent`` request as the equivalent chat request: ``model``, and
    ``messages`` with the ``systemInstruction`` first and role ``model`` as ``assistant``."""
    messages: list[dict[str, Any]] = []
    if body.get("systemInstruction") is not None:
        messages.append({"role": "system", "content": _gemini_text(body["systemInstruction"])})
    for content in body.get("contents") or []:
        role = "assistant" if content.get("role") == "model" else "user"
        messages.append({"role": role, "content": _gemini_text(content)})
    return {"model": model, "messages": messages}


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
    time: float = 0.0
    """When it arrived (:func:`time.monotonic`)."""


_GEMINI_PATH = re.compile(
    r"^(?P<prefix>.*)/(?P<version>v1(?:alpha|beta)?)/"
    r"(?P<model>(?:models|tunedModels)/[^/:]+):generateContent$"
)
"""The path of a Gemini ``generateContent`` request."""

_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
"""The ``google.rpc.Code`` name Google APIs send with each HTTP status."""


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
            time=time.monotonic(),
        )
        owner._begin(record)
        try:
            if owner.latency:
                time.sleep(owner.latency)
            failure = owner._pop_failure()
            gemini = _GEMINI_PATH.match(split.path)
            if gemini:
                self._serve_gemini(owner, record, gemini.group("model"), failure)
            elif split.path.endswith("/chat/completions"):
                if owner.portkey_api_key is not None and not self._portkey_allows(owner, record):
                    return
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
        if self._broken_reply(failure):
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
        owner._record_usage(payload.get("usage"))
        self._send_json(200, payload)

    def _serve_gemini(
        self, owner: LMServer, record: RecordedRequest, model: str, failure: Failure | None
    ) -> None:
        key = record.headers.get("x-goog-api-key") or (record.query.get("key") or [None])[0]
        if not key:
            self._send_google_error(
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
            )
            return
        if owner.gemini_api_key is not None and key != owner.gemini_api_key:
            info = {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
            self._send_google_error(400, "API key not valid. Please pass a valid API key.", [info])
            return
        if isinstance(failure, int):
            self._send_google_error(
                failure, owner._google_message(failure), owner._details(failure)
            )
            return
        if self._broken_reply(failure):
            return
        body = record.body
        if not isinstance(body, dict) or not isinstance(body.get("contents"), list):
            self._send_google_error(
                400, "* GenerateContentRequest.contents: contents is not specified"
            )
            return
        chat = gemini_as_chat(body, model.split("/", 1)[1])
        prompt_tokens = prompt_chars(chat) // 4
        if owner.max_input_tokens is not None and prompt_tokens > owner.max_input_tokens:
            self._send_google_error(
                400,
                f"The input token count ({prompt_tokens}) exceeds the maximum number of tokens "
                f"allowed ({owner.max_input_tokens}).",
            )
            return
        text = owner.reply(chat)
        payload = owner._gemini_payload(chat["model"], body, text, prompt_tokens, failure)
        owner._record_usage(payload.get("usageMetadata"))
        self._send_json(200, payload)

    def _portkey_allows(self, owner: LMServer, record: RecordedRequest) -> bool:
        """Check a request's Portkey headers as the gateway does; answer it if they fail."""
        headers = record.headers
        if headers.get("x-portkey-api-key") != owner.portkey_api_key:
            self._send_json(401, {"status": "failure", "message": "Invalid API Key"})
            return False
        routes = ("x-portkey-provider", "x-portkey-virtual-key", "x-portkey-config")
        if not any(headers.get(name) for name in routes):
            message = "Either x-portkey-config or x-portkey-provider header is required"
            self._send_json(400, {"status": "failure", "message": message})
            return False
        return True

    def _send_google_error(
        self, status: int, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": _GOOGLE_STATUS.get(status, "UNKNOWN"),
        }
        if details:
            error["details"] = details
        self._send_json(status, {"error": error})

    def _send_error_status(
        self, status: int, api: Literal["openai", "anthropic"], message: str | None = None
    ) -> None:
        message = message or f"forced HTTP {status} from the test server"
        payload: dict[str, Any]
        if api == "anthropic":
            payload = {"type": "error", "error": {"type": "api_error", "message": message}}
        else:
            payload = {"error": {"message": message, "type": "test_error", "code": str(status)}}
        owner = self.server.owner
        headers = {}
        if status == 429 and owner.retry_after is not None:
            headers["retry-after"] = f"{owner.retry_after:g}"
        if owner.portkey_api_key is not None:
            payload["provider"] = "openai"
        self._send_json(status, payload, headers)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        if self.server.owner.portkey_api_key is not None:
            headers = {**self._portkey_reply_headers(), **(headers or {})}
        self._send_raw(status, json.dumps(payload).encode(), "application/json", headers)

    def _portkey_reply_headers(self) -> dict[str, str]:
        trace = self.headers.get("x-portkey-trace-id") or "trace-from-test-gateway"
        return {"x-portkey-trace-id": trace, "x-portkey-provider": "openai"}

    def _broken_reply(self, failure: Failure | None) -> bool:
        """Answer as a broken server does (``"disconnect"``, ``"garbage"``); ``True`` if so."""
        if failure == "disconnect":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return True
        if failure == "garbage":
            self._send_raw(200, b"<html>this is not JSON</html>", "application/json")
            return True
        return False

    def _send_raw(
        self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
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
        self.thoughts_tokens = 0
        """Thinking tokens of each Gemini reply (``thoughtsTokenCount``)."""
        self.retry_after: float | None = None
        """Seconds a forced 429 asks the client to wait (``retry-after`` header; a
        ``google.rpc.RetryInfo`` for Gemini)."""
        self.max_input_tokens: int | None = None
        """Gemini: prompts with more tokens are refused with HTTP 400 ``INVALID_ARGUMENT``."""
        self.gemini_api_key: str | None = None
        """Gemini: the only key accepted (``None``: any non-empty key)."""
        self.portkey_api_key: str | None = None
        """Serve chat completions as Portkey's gateway, accepting only this key."""
        self.ssl_context = ssl_context
        """A server-side TLS context: serve HTTPS (set before :meth:`start`)."""
        self.requests: list[RecordedRequest] = []
        self.usages: list[dict[str, Any]] = []
        """The usage object of every reply sent (``usage``, or Gemini's ``usageMetadata``)."""
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

    @property
    def gemini_requests(self) -> list[RecordedRequest]:
        """The Gemini ``generateContent`` requests received so far."""
        with self._lock:
            return [r for r in self.requests if _GEMINI_PATH.match(r.path)]

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

    def _record_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            with self._lock:
                self.usages.append(usage)

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

    def _google_message(self, status: int) -> str:
        if status == 429:
            message = "You exceeded your current quota, please check your plan and billing details."
            if self.retry_after is not None:
                message += f" Please retry in {self.retry_after:g}s."
            return message
        if status == 503:
            return "The model is overloaded. Please try again later."
        return f"forced HTTP {status} from the test server"

    def _details(self, status: int) -> list[dict[str, Any]]:
        if status != 429 or self.retry_after is None:
            return []
        return [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{self.retry_after:g}s",
            },
        ]

    def _gemini_payload(
        self,
        model: str,
        request: dict[str, Any],
        text: str,
        prompt_tokens: int,
        failure: Failure | None,
    ) -> dict[str, Any]:
        if failure == "malformed":
            return {"modelVersion": model, "responseId": "resp-test"}
        if failure == "refusal":
            return {
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": {
                    "promptTokenCount": prompt_tokens,
                    "totalTokenCount": prompt_tokens,
                },
                "modelVersion": model,
            }
        parts: list[dict[str, Any]] = [{"text": text}]
        if failure == "content_parts":
            half = len(text) // 2
            parts = [{"text": text[:half]}, {"text": text[half:]}]
        thinking = (request.get("generationConfig") or {}).get("thinkingConfig") or {}
        if thinking.get("includeThoughts"):
            parts.insert(0, {"text": "**Thinking** about the question first.", "thought": True})
        candidate: dict[str, Any] = {
            "content": {"parts": parts, "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }
        if failure == "null_content":
            candidate = {"finishReason": "SAFETY", "index": 0}
        output_tokens = len(text) // 4
        usage: dict[str, Any] = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens + self.thoughts_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
        }
        cached = min(self.cached_tokens, prompt_tokens)
        if cached:
            usage["cachedContentTokenCount"] = cached
            usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
        if self.thoughts_tokens:
            usage["thoughtsTokenCount"] = self.thoughts_tokens
        payload: dict[str, Any] = {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": "resp-test",
        }
        if failure == "no_usage":
            del payload["usageMetadata"]
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


GEMINI_TEST_KEY = "gemini-test-key"
"""The only API key :func:`gemini_server` accepts."""

PORTKEY_TEST_KEY = "pk-test-key"
"""The only Portkey API key :func:`portkey_server` accepts."""


@pytest.fixture
def gemini_server() -> Iterator[LMServer]:
    """A running :class:`LMServer` accepting the Gemini key :data:`GEMINI_TEST_KEY`; point
    Gemini backends at ``.url``."""
    with LMServer() as server:
        server.gemini_api_key = GEMINI_TEST_KEY
        yield server


@pytest.fixture
def portkey_server() -> Iterator[LMServer]:
    """A running :class:`LMServer` acting as Portkey's gateway for the key
    :data:`PORTKEY_TEST_KEY`; point Portkey backends at ``.base_url``."""
    with LMServer() as server:
        server.portkey_api_key = PORTKEY_TEST_KEY
        yield server
