"""A local OpenAI-compatible chat-completions server for benchmarks (standard library only).

It listens on 127.0.0.1 only, answers every ``POST .../chat/completions`` (and every Gemini
``POST .../models/<model>:generateContent``, in Gemini's shape) with the reply ``"ok"`` and
pseudo-token usage, and waits before answering for the latency named in the path:
``http://127.0.0.1:PORT/lat/50/v1`` is a model that takes 50 ms per call,
``http://127.0.0.1:PORT/v1`` one that answers at once. Under ``/answer/`` it replies with a
cell that answers at once (:data:`_common.CELL_ANSWER`) instead, so it can be the root model
of a one-turn completion. Each request is served by its own thread and connections are kept
alive (HTTP/1.1), so concurrent calls overlap as they would against a real provider.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from _common import CELL_ANSWER, repl

_LATENCY = re.compile(r"^(?:/answer)?/lat/(\d+(?:\.\d+)?)/")
_GEMINI = re.compile(r"/models/[^/:]+:generateContent$")
ANSWER_PREFIX = "/answer/"
"""Path prefix under which the reply is a cell that answers at once."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else the header and body writes meet delayed ACKs (40 ms)
    server: LMServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b"{}"
        match = _LATENCY.match(self.path)
        if match:
            time.sleep(float(match.group(1)) / 1000)
        try:
            request: dict[str, Any] = json.loads(body)
        except ValueError:
            request = {}
        content = repl(CELL_ANSWER) if self.path.startswith(ANSWER_PREFIX) else "ok"
        if _GEMINI.search(self.path.partition("?")[0]):
            self._send(gemini_reply(request, content))
            return
        prompt_chars = sum(len(str(m.get("content") or "")) for m in request.get("messages", []))
        reply = {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "bench-lm"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": (prompt_chars + 3) // 4,
                "completion_tokens": (len(content) + 3) // 4,
                "total_tokens": (prompt_chars + 3) // 4 + (len(content) + 3) // 4,
            },
        }
        self._send(reply)

    def _send(self, reply: dict[str, Any]) -> None:
        data = json.dumps(reply).encode()
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode()
        self.wfile.write(head + data)  # one write: one segment
        self.server.count()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


def gemini_reply(request: dict[str, Any], content: str) -> dict[str, Any]:
    """A Gemini ``generateContent`` reply with ``content`` and pseudo-token usage."""
    texts = [
        str(part.get("text") or "")
        for item in [request.get("systemInstruction") or {}, *request.get("contents", [])]
        for part in item.get("parts", [])
    ]
    prompt = (sum(len(t) for t in texts) + 3) // 4
    output = (len(content) + 3) // 4
    return {
        "candidates": [
            {"content": {"parts": [{"text": content}], "role": "model"}, "finishReason": "STOP"}
        ],
        "usageMetadata": {
            "promptTokenCount": prompt,
            "candidatesTokenCount": output,
            "totalTokenCount": prompt + output,
        },
        "modelVersion": "bench-lm",
    }


class LMServer(ThreadingHTTPServer):
    """The server; :meth:`start` runs it in a daemon thread, :meth:`stop` ends it."""

    daemon_threads = True
    request_queue_size = 512  # a burst of 64+ concurrent connects must not overflow the backlog

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up early (an event loop closed under it) is not news."""
        with self._lock:
            self.errors += 1

    def count(self) -> None:
        """Count one answered request."""
        with self._lock:
            self.requests += 1

    @property
    def port(self) -> int:
        """The port chosen by the OS."""
        return int(self.server_address[1])

    def base_url(self, latency_ms: float = 0, answer: bool = False) -> str:
        """The ``base_url`` of a model with ``latency_ms`` per call; with ``answer``, one whose
        every reply is a cell that answers at once."""
        prefix = ("/answer" if answer else "") + (f"/lat/{latency_ms:g}" if latency_ms else "")
        return f"http://127.0.0.1:{self.port}{prefix}/v1"

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.shutdown()
        self.server_close()
