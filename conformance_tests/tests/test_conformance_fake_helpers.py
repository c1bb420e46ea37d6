"""The building blocks of provider fakes and install tests: an HTTP fake's server and
request helpers, the sandbox table, output relay and ``serving``, the listing and
completion scripts, ``require_wheels``, ``host_script`` and ``wait_until``."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from rlm_conformance import fake_http, fake_service, probes, venvs

pytestmark = pytest.mark.timeout(60)


def _echo_json(environ: fake_http.Environ, kind: str) -> tuple[int, Any]:
    body = fake_http.request_json(environ)
    assert fake_http.request_body(environ) == json.dumps(body).encode()  # read once, kept
    return 201, {kind: body}


def _missing(environ: fake_http.Environ) -> tuple[int, Any]:
    raise fake_http.HTTPError(404, "no such thing", code="missing")


ROUTES: dict[tuple[str, str], fake_http.Route] = {
    ("POST", "/echo/([a-z]+)"): _echo_json,
    ("GET", "/empty"): lambda environ: (204, None),
    ("POST", "/missing"): _missing,
}


def _echo(environ: fake_http.Environ, start: fake_http.StartResponse) -> Iterable[bytes]:
    try:
        return fake_http.dispatch(ROUTES, environ, start)
    except fake_http.HTTPError as exc:
        fake_http.drain(environ)
        return fake_http.reply(start, exc.status, {"message": exc.message, **exc.extra})


@pytest.fixture
def server() -> Iterable[fake_http.ThreadedWSGIServer]:
    served = fake_http.serve(_echo)
    yield served
    served.stop()


def _connection(server: fake_http.ThreadedWSGIServer) -> http.client.HTTPConnection:
    host, port = server.server_address[:2]
    return http.client.HTTPConnection(str(host), port, timeout=30)


def test_sized_and_chunked_bodies_on_one_connection(server: fake_http.ThreadedWSGIServer) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    conn = _connection(server)
    try:
        conn.request("POST", "/echo/got", body=json.dumps({"a": 1}).encode())
        answer = conn.getresponse()
        assert (answer.status, answer.reason) == (201, "Created")
        assert answer.getheader("Content-Type") == "application/json"
        assert json.loads(answer.read()) == {"got": {"a": 1}}
        chunks = [b'{"b": ', b'"x' + b"y" * 70000 + b'"', b"}"]
        conn.request("POST", "/echo/got", body=iter(chunks), encode_chunked=True)
        answer = conn.getresponse()
        assert json.loads(answer.read()) == {"got": {"b": "x" + "y" * 70000}}
        conn.request("POST", "/missing", body=b"unread " * 1000)  # drained: the next one works
        answer = conn.getresponse()
        assert answer.status == 404
        assert json.loads(answer.read()) == {"message": "no such thing", "code": "missing"}
        conn.request("GET", "/echo/got")  # a path without a route for its method
        answer = conn.getresponse()
        assert (answer.status, answer.reason) == (404, "Error")
        assert json.loads(answer.read()) == {"message": "no route GET /echo/got"}
        conn.request("GET", "/empty")
        answer = conn.getresponse()
        assert (answer.status, answer.getheader("Content-Type"), answer.read()) == (204, None, b"")
    finally:
        conn.close()


def test_stop_closes_the_port() -> None:
    served = fake_http.serve(_echo)
    conn = _connection(served)
    served.stop()
    with pytest.raises(OSError):
        conn.request("GET", "/empty")
        conn.getresponse()
    conn.close()


def test_form_parts() -> None:
    body = (
        b"--XX\r\n"
        b'Content-Disposition: form-data; name="f.file"; filename="a.txt"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
        b"\x00\xffdata\r\n"
        b"--XX--\r\n"
    )
    (part,) = fake_http.form_parts("multipart/form-data; boundary=XX", body)
    assert part.get_filename() == "a.txt"
    assert part.get_param("name", header="content-disposition") == "f.file"
    assert part.get_payload(decode=True) == b"\x00\xffdata"


class _Box:
    """A sandbox whose kill waits until the test lets it end."""

    def __init__(self) -> None:
        self.killing = threading.Event()
        self.release = threading.Event()
        self.kills = 0

    def kill(self) -> None:
        self.kills += 1
        self.killing.set()
        assert self.release.wait(30)


class _Record:
    def __init__(self) -> None:
        self.box = _Box()


def test_a_sandbox_is_listed_until_it_has_ended_and_ends_once() -> None:
    lock = threading.RLock()
    table: fake_service.SandboxTable[Any] = fake_service.SandboxTable(lock)
    table["b"], table["a"] = _Record(), _Record()
    ended: list[str] = []
    first: list[bool] = []
    ending = threading.Thread(target=lambda: first.append(table.end("a", record)))

    def record(sandbox: Any) -> None:
        assert "a" not in table  # dropped, and recorded in the same step
        ended.append("a")

    ending.start()
    assert table["a"].box.killing.wait(30)
    assert table.ids() == ["a", "b"]  # still listed while its kill runs
    assert table.end("a", record) is False  # already ending
    table["a"].box.release.set()
    ending.join(30)
    assert first == [True] and ended == ["a"] and table.ids() == ["b"]
    assert table.end("a", record) is False  # gone
    assert [r.box.kills for r in table.running()] == [0]


def test_output_chunks_keeps_the_pipes_apart() -> None:
    process = subprocess.Popen(
        ["sh", "-c", "printf out; printf err >&2; printf more"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    got: dict[str, bytes] = {"stdout": b"", "stderr": b""}
    for kind, chunk in fake_service.output_chunks(process):
        got[kind] += chunk
    assert process.wait(30) == 0
    assert got == {"stdout": b"outmore", "stderr": b"err"}
    for pipe in (process.stdout, process.stderr):
        assert pipe is not None
        pipe.close()


class _Service:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self) -> _Service:
        self.calls.append("start")
        return self

    def stop(self) -> None:
        self.calls.append("stop")

    def environ(self) -> dict[str, str]:
        return {"RLM_TEST_FAKE_URL": "http://127.0.0.1:1", "RLM_TEST_FAKE_KEY": "key"}


def test_serving_sets_the_variables_and_restores_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLM_TEST_FAKE_KEY", "before")
    monkeypatch.delenv("RLM_TEST_FAKE_URL", raising=False)
    fake = _Service()
    resets: list[dict[str, str | None]] = []

    def reset() -> None:
        resets.append({k: os.environ.get(k) for k in ("RLM_TEST_FAKE_KEY", "HOME")})

    with (
        pytest.raises(RuntimeError, match="the test failed"),
        fake_service.serving(fake, {"HOME": "/nonexistent"}, reset) as served,
    ):
        assert served is fake and fake.calls == ["start"]
        assert os.environ["RLM_TEST_FAKE_URL"] == "http://127.0.0.1:1"
        assert os.environ["RLM_TEST_FAKE_KEY"] == "key"
        assert os.environ["HOME"] == "/nonexistent"
        raise RuntimeError("the test failed")
    assert fake.calls == ["start", "stop"]
    assert "RLM_TEST_FAKE_URL" not in os.environ
    assert os.environ["RLM_TEST_FAKE_KEY"] == "before"
    assert os.environ.get("HOME") != "/nonexistent"
    assert resets == [
        {"RLM_TEST_FAKE_KEY": "key", "HOME": "/nonexistent"},
        {"RLM_TEST_FAKE_KEY": "before", "HOME": os.environ.get("HOME")},
    ]


LISTED = """\
NAME        DISTRIBUTION         VERSION  CAPABILITIES
----------  -------------------  -------  --------------------
local       rlm-core (built-in)  0.1.0    compaction, persistent
bare        rlm-bare             2.0
sdks loaded: ['thing']
"""


def test_listing_parse() -> None:
    listing = venvs.Listing.parse(LISTED)
    assert listing.rows["local"] == venvs.Listed(
        "local", "rlm-core (built-in)", "0.1.0", frozenset({"compaction", "persistent"})
    )
    assert listing.rows["bare"].capabilities == frozenset()
    assert list(listing.rows) == ["local", "bare"] and listing.sdks_loaded == ["thing"]
    with pytest.raises(AssertionError, match="listed twice"):
        venvs.Listing.parse(LISTED.replace("bare ", "local"))
    with pytest.raises(AssertionError, match="did not finish"):
        venvs.Listing.parse(LISTED.replace("sdks loaded", "sdks"))


def test_listing_script_sees_what_the_listing_imported() -> None:
    listing = venvs.list_environments(["rlm_core", "rlm_conformance_no_such_sdk"])
    assert listing.sdks_loaded == ["rlm_core"]
    assert listing.rows["local"].distribution == "rlm-core (built-in)"


def test_completion_script_on_local() -> None:
    done = subprocess.run(
        [sys.executable, "-c", venvs.completion_script("local", {})],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    said = venvs.printed(done.stdout)
    assert said["answer"] == "12"
    assert Path(said["core"]).parent == Path(__import__("rlm_core").__file__).parent


def test_require_wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "thing-1.0-py3-none-any.whl").touch()
    venvs.require_wheels(tmp_path, "thing")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"no wheel of \['other'\].*: fill it"):
        venvs.require_wheels(tmp_path, "thing", "other", hint="fill it")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no wheel of"):
        venvs.require_wheels(tmp_path, "other")


CHILD = """
import os, subprocess, sys, time
child = subprocess.Popen(["sleep", "600"])
print(child.pid, os.environ["TMPDIR"], sys.argv[1], flush=True)
time.sleep(600)
"""


def test_host_script_leaves_nothing() -> None:
    with probes.host_script(CHILD, "hello") as host:
        assert host.stdout is not None
        pid, tmp, said = host.stdout.readline().split()
        assert said == "hello" and os.path.isdir(tmp)
        child = probes.identity(int(pid))
        assert child is not None
    assert probes.wait_gone([child]) == []
    assert not os.path.exists(tmp) and host.returncode is not None


def test_wait_until() -> None:
    asked: list[int] = []

    def third_time() -> bool:
        asked.append(1)
        return len(asked) >= 3

    assert probes.wait_until(third_time, 30, every=0.01)
    assert len(asked) == 3
    never: list[int] = []
    assert not probes.wait_until(lambda: never.append(1), 0.05, every=0.01)
    assert len(never) >= 2
