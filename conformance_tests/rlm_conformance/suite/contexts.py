"""CTX: contexts of every kind and size arrive intact, or are refused clearly."""

from __future__ import annotations

import hashlib

import pytest

from rlm_conformance.cases import case
from rlm_conformance.suite.helpers import ok, value
from rlm_core.environments.base import Environment
from rlm_core.exceptions import ContextError

UNICODE = "héllo wörld · 中文 · русский · \U0001d518\U0001d52b\U0001d526 😀🚀 · \u200b\u00a0 · end"

DIGEST = (
    "import hashlib as _h\n"
    "_c = {name}\n"
    "print(_h.sha256(_c if isinstance(_c, bytes) else _c.encode('utf-8')).hexdigest(), len(_c))"
)


def digest_in_cell(env: Environment, name: str = "context") -> tuple[str, int]:
    """``(sha256, len)`` of a str or bytes variable, computed inside the sandbox."""
    digest, length = ok(env, DIGEST.format(name=name)).split()
    return digest, int(length)


def digest(payload: str | bytes) -> tuple[str, int]:
    """``(sha256, len)`` of ``payload`` computed here."""
    data = payload if isinstance(payload, bytes) else payload.encode("utf-8")
    return hashlib.sha256(data).hexdigest(), len(payload)


class ContextTests:
    """Contexts: empty, unicode, bytes, lists, dicts, several, huge, refused."""

    @case("CTX-001", "an empty string context")
    def test_empty(self, env: Environment) -> None:
        env.add_context("")
        assert value(env, "[type(context).__name__, len(context)]") == ["str", 0]

    @case("CTX-002", "unicode and non-BMP characters arrive unchanged")
    def test_unicode(self, env: Environment) -> None:
        env.add_context(UNICODE)
        assert digest_in_cell(env) == digest(UNICODE)
        assert value(env, "context") == UNICODE

    @case("CTX-003", "a bytes context holding all 256 byte values stays bytes")
    def test_bytes(self, env: Environment) -> None:
        payload = bytes(range(256)) * 64
        env.add_context(payload)
        assert value(env, "type(context).__name__") == "bytes"
        assert digest_in_cell(env) == digest(payload)

    @case("CTX-004", "a list context keeps its items and their types")
    def test_list(self, env: Environment) -> None:
        payload = ["a", 1, 2.5, None, True, ["nested", {"k": "v"}]]
        env.add_context(payload)
        assert value(env, "context") == payload
        assert value(env, "[type(x).__name__ for x in context]") == [
            "str", "int", "float", "NoneType", "bool", "list",
        ]  # fmt: skip

    @case("CTX-005", "a dict context keeps its keys, their order and nested values")
    def test_dict(self, env: Environment) -> None:
        payload = {"zeta": [1, {"x": "é"}], "alpha": None, "mid": {"deep": [True, 1.5]}}
        env.add_context(payload)
        assert value(env, "context") == payload
        assert value(env, "list(context)") == ["zeta", "alpha", "mid"]

    @case("CTX-006", "several contexts are context_0, context_1, ...; context is context_0")
    def test_several(self, env: Environment) -> None:
        assert env.add_context("zero") == 0
        assert env.add_context(["one"]) == 1
        assert env.add_context({"two": 2}) == 2
        assert env.get_context_count() == 3
        assert value(env, "[context == context_0, context_1[0], context_2['two']]") == [
            True, "one", 2,
        ]  # fmt: skip

    @case("CTX-007", "a 50 MiB context arrives whole")
    def test_50_mib(self, env: Environment) -> None:
        line = "line of a long document · 長い文書の行 · 🚀\n"
        payload = line * (50 * 1024 * 1024 // len(line.encode("utf-8")) + 1)
        assert len(payload.encode("utf-8")) >= 50 * 1024 * 1024
        env.add_context(payload)
        assert digest_in_cell(env) == digest(payload)

    @case("CTX-008", "a context that is not JSON-compatible is a clear ContextError")
    def test_not_json(self, env: Environment) -> None:
        for payload in ({1, 2}, object(), ["fine", {"bad": {3, 4}}], {(1, 2): "tuple key"}):
            with pytest.raises(ContextError) as raised:
                env.add_context(payload)
            assert "JSON" in str(raised.value)
        env.add_context("after")  # the environment is still usable
        assert ok(env, "print(context)") == "after\n"

    @case("CTX-009", "a context nested too deeply is a clear ContextError")
    def test_too_deep(self, env: Environment) -> None:
        deep: list[object] = []
        for _ in range(2_000):
            deep = [deep]
        with pytest.raises(ContextError, match="nested"):
            env.add_context(deep)

    @case("CTX-010", "a list context of 200,000 records arrives whole")
    def test_many_records(self, env: Environment) -> None:
        payload = [{"id": i, "text": f"record {i}"} for i in range(200_000)]
        env.add_context(payload)
        assert value(env, "[len(context), sum(r['id'] for r in context), context[-1]]") == [
            200_000, sum(range(200_000)), {"id": 199_999, "text": "record 199999"},
        ]  # fmt: skip

    @case("CTX-011", "loading context 0 again replaces it")
    def test_replace(self, env: Environment) -> None:
        env.add_context("old")
        env.add_context("new", 0)
        assert value(env, "[context, context_0]") == ["new", "new"]

    @case("CTX-012", "a 20 MiB bytes context arrives whole")
    def test_big_bytes(self, env: Environment) -> None:
        payload = bytes(range(256)) * (20 * 1024 * 1024 // 256)
        env.add_context(payload)
        assert digest_in_cell(env) == digest(payload)

    @case("CTX-013", "control characters, NUL and CRLF survive in a string context")
    def test_control_characters(self, env: Environment) -> None:
        payload = "a\x00b\x01c\r\nd\te\x7f\x1b[31mred\x1b[0m\u2028\u2029"
        env.add_context(payload)
        assert value(env, "context") == payload
