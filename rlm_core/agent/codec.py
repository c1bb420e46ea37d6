"""Encoding of values, contexts and sub-call records on the wire (standard library only)."""

from __future__ import annotations

import json
import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rlm_core.agent import CHUNK_BYTES, MAX_MESSAGE_BYTES
from rlm_core.exceptions import MessageTooLargeError as MessageTooLargeError  # re-exported
from rlm_core.types import RLMChatCompletion

TEXT, BYTES, JSON = 1, 2, 3
"""Context kinds (the ``ContextKind`` enum values of the protocol)."""


def dumps(value: Any) -> bytes:
    """JSON-encode a value (``TypeError`` when it is not JSON-compatible).

    Lone surrogates in strings (``"\\udcff"``, as ``os.fsdecode`` makes of undecodable
    file names) travel as they are: the UTF-8 is written with ``surrogatepass``."""
    return json.dumps(value, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")


def loads(data: bytes) -> Any:
    """Decode :func:`dumps` output."""
    return json.loads(data.decode("utf-8", "surrogatepass")) if data else None


def text(value: str) -> str:
    """``value`` made fit for a protobuf ``string`` field, which must be valid UTF-8: lone
    surrogates become backslash escapes (``"a\\udcff"`` arrives as ``"a\\\\udcff"``).
    Text that is valid already is returned as it is."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def check_size(what: str, size: int, limit: int = MAX_MESSAGE_BYTES) -> None:
    """Raise :class:`MessageTooLargeError` when ``size`` leaves no room under ``limit``."""
    if size > limit - 4096:  # leave room for the message envelope
        raise MessageTooLargeError(what, size, limit)


def encode_context(payload: Any) -> tuple[int, bytes]:
    """``(kind, bytes)`` for a context payload: str as UTF-8 text, bytes raw, else JSON."""
    if isinstance(payload, str):
        try:
            return TEXT, payload.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: kept, see decode_context
            return TEXT, payload.encode("utf-8", "surrogatepass")
    if isinstance(payload, bytes | bytearray | memoryview):
        return BYTES, bytes(payload)
    try:
        return JSON, dumps(payload)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"a context must be str, bytes or JSON-compatible, not {type(payload).__name__}: {exc}"
        ) from exc


@dataclass(frozen=True)
class EncodedContext:
    """A context payload ready for the wire: its kind, its size in bytes, and the bytes as
    pieces of at most ``piece_bytes`` (produced on demand, so a big ASCII text is never held
    encoded in full)."""

    kind: int
    total_bytes: int
    _text: str | None = None
    _data: bytes | memoryview | None = None

    def pieces(self, piece_bytes: int = CHUNK_BYTES) -> Iterator[bytes | memoryview]:
        """The encoded bytes in order (at least one piece, even when empty)."""
        if self._text is not None:  # ASCII: one character is one byte
            text = self._text
            yield text[:piece_bytes].encode("ascii")
            for start in range(piece_bytes, len(text), piece_bytes):
                yield text[start : start + piece_bytes].encode("ascii")
            return
        assert self._data is not None
        yield from chunks(self._data, piece_bytes)


def encode_context_lazily(payload: Any) -> EncodedContext:
    """Like :func:`encode_context`, but an ASCII ``str`` (the usual big context) is encoded
    piece by piece as it is sent: the cache-sized pieces are cheaper than one big copy."""
    if isinstance(payload, str) and payload.isascii():
        return EncodedContext(TEXT, len(payload), _text=payload)
    kind, data = encode_context(payload)
    return EncodedContext(kind, len(data), _data=data)


def decode_context(kind: int, data: bytes | bytearray | memoryview | mmap.mmap) -> Any:
    """Inverse of :func:`encode_context`."""
    if kind == TEXT:  # ``surrogatepass`` changes nothing for valid UTF-8
        return str(data, "utf-8", "surrogatepass")
    if kind == BYTES:
        return bytes(data)
    if kind == JSON:
        return json.loads(data if isinstance(data, bytes | bytearray) else bytes(data))
    raise ValueError(f"unknown context kind {kind}")


def chunks(data: bytes | memoryview, size: int = CHUNK_BYTES) -> Iterator[memoryview]:
    """Slices of ``data`` without copying (at least one, even when ``data`` is empty)."""
    view = memoryview(data)
    if not data:
        yield view
        return
    for start in range(0, len(data), size):
        yield view[start : start + size]


def completion_to_bytes(completion: RLMChatCompletion) -> bytes:
    """Serialise a sub-call record; a non-JSON prompt is replaced by its ``str``."""
    record = completion.to_dict()
    try:
        return dumps(record)
    except (TypeError, ValueError):
        record["prompt"] = str(record["prompt"])
        return dumps(record)


def completion_from_bytes(data: bytes) -> RLMChatCompletion:
    """Inverse of :func:`completion_to_bytes`."""
    return RLMChatCompletion.from_dict(loads(data))
