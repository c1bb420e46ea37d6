"""Test doubles for plugin authors: the scripted LM's scripts, a recording sub-call
handler, and a fake launcher that runs the real agent as a local process.

* :class:`Script` (with :func:`repl` and :func:`finish`) drives the core's ``scripted``
  backend, a deterministic stand-in LM: ``RLM(backend="scripted",
  backend_kwargs={"responses": Script([...])})``.
* :class:`RecordingSubcalls` is the host side of ``llm_query`` and friends for an
  environment started by hand: it answers deterministically, records every prompt, counts
  how many calls are answered at the same moment, and can fail chosen prompts.
* :class:`LocalAgentLauncher` / :class:`LocalAgentEnvironment` start the real agent on
  this machine and reach it over any carrier (``dial``, ``stdio``, ``reverse``), as a cloud
  plugin does, and list their sandboxes by tag, as a provider's API does: a provider's
  glue can be tested against them without an account.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from rlm_conformance.fakes import FakeSandbox
from rlm_core.bridge.carriers import Connection, Framing
from rlm_core.environments.agent import AgentEnvironment
from rlm_core.environments.base import ISOLATED, NETWORK_OFF
from rlm_core.environments.launcher import Carrier, Launcher, LaunchRequest
from rlm_core.environments.loopback import LoopbackLauncher
from rlm_core.environments.remote import ProcessExec, RemoteLauncher
from rlm_core.types import RLMChatCompletion, UsageSummary

Messages = list[dict[str, Any]]

__all__ = [
    "FakeSandboxEnvironment",
    "FakeSandboxLauncher",
    "LocalAgentEnvironment",
    "LocalAgentLauncher",
    "RecordingSubcalls",
    "Script",
    "finish",
    "is_root",
    "repl",
]


# -- scripts for the scripted LM ---------------------------------------------------------


def repl(code: str) -> str:
    """A root-LM reply holding one ```` ```repl ```` block."""
    return f"Let me run this.\n```repl\n{code}\n```"


def finish(content: str) -> str:
    """A root-LM reply that submits ``content`` as the answer."""
    return repl(f"answer['content'] = {content!r}\nanswer['ready'] = True")


def is_root(messages: Messages) -> bool:
    """Root-LM calls start with the RLM system prompt; sub-calls do not."""
    return bool(messages) and messages[0].get("role") == "system"


class Script:
    """Serve ``root`` replies to root-LM calls; answer sub-calls with ``sub``.

    ``root`` is a list (reply N for the call with N assistant turns already in the
    transcript, so concurrent child RLMs stay independent) or a function of the messages.
    ``sub`` maps a sub-call's prompt to its reply. Counts root calls and records sub-call
    prompts.
    """

    def __init__(
        self,
        root: list[str] | Callable[[Messages], str],
        sub: Callable[[str], str] | None = None,
    ) -> None:
        self.root = root
        self.sub = sub or (lambda prompt: f"sub-answer to: {prompt[:40]}")
        self.lock = threading.Lock()
        self.root_calls = 0
        self.sub_calls: list[str] = []

    def __call__(self, messages: Messages) -> str:
        """The scripted LM's reply to ``messages``."""
        if is_root(messages):
            with self.lock:
                self.root_calls += 1
            if callable(self.root):
                return self.root(messages)
            turn = sum(1 for m in messages if m["role"] == "assistant")
            if turn >= len(self.root):
                return "I have nothing more to add."
            return self.root[turn]
        prompt = str(messages[-1]["content"])
        with self.lock:
            self.sub_calls.append(prompt)
        return self.sub(prompt)


# -- the host side of sub-calls -----------------------------------------------------------


class RecordingSubcalls:
    """A sub-call handler (``Session(subcalls=...)``) that answers ``<kind>:<prompt>``.

    ``answer(prompt, kind)`` shapes replies; prompts for which ``fail(prompt)`` is true get
    a failed completion (``error`` set, ``response`` ``"Error: ..."``), as an LM error
    does. ``hold`` makes each call wait until that many calls are in flight at once (or
    ``hold_timeout`` passes), so concurrency is counted, not timed: see :attr:`peak`.
    """

    def __init__(
        self,
        answer: Callable[[Any, str], str] | None = None,
        fail: Callable[[Any], bool] | None = None,
        hold: int = 0,
        hold_timeout: float = 20.0,
    ) -> None:
        self._answer = answer or (lambda prompt, kind: f"{kind}:{prompt}")
        self._fail = fail or (lambda prompt: False)
        self._hold = hold
        self._hold_timeout = hold_timeout
        self._lock = threading.Lock()
        self._enough = threading.Event()
        self._now = 0
        self.peak = 0
        """The most calls that were being answered at the same moment."""
        self.calls: list[tuple[str, Any, str | None]] = []
        """Every call as ``(kind, prompt, model)``, in the order they arrived."""

    def _one(self, prompt: Any, kind: str, model: str | None) -> RLMChatCompletion:
        with self._lock:
            self.calls.append((kind, prompt, model))
            self._now += 1
            self.peak = max(self.peak, self._now)
            if self._hold and self._now >= self._hold:
                self._enough.set()
        try:
            if self._hold:
                self._enough.wait(self._hold_timeout)
            if self._fail(prompt):
                return RLMChatCompletion(
                    "recording", prompt, "Error: the LM failed", UsageSummary(), 0.0,
                    error="the LM failed",
                )  # fmt: skip
            reply = self._answer(prompt, kind)
            return RLMChatCompletion(model or "recording", prompt, reply, UsageSummary(), 0.0)
        finally:
            with self._lock:
                self._now -= 1

    def _many(self, prompts: list[Any], kind: str, model: str | None) -> list[RLMChatCompletion]:
        results: list[RLMChatCompletion | None] = [None] * len(prompts)

        def run(i: int, prompt: Any) -> None:
            results[i] = self._one(prompt, kind, model)

        threads = [threading.Thread(target=run, args=(i, p)) for i, p in enumerate(prompts)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return [r for r in results if r is not None]

    def llm_query(self, prompt: Any, model: str | None = None) -> RLMChatCompletion:
        """One plain call."""
        return self._one(prompt, "llm", model)

    def llm_query_batched(
        self, prompts: list[Any], model: str | None = None
    ) -> list[RLMChatCompletion]:
        """Plain calls, answered concurrently, in prompt order."""
        return self._many(prompts, "llm", model)

    def rlm_query(self, prompt: Any, model: str | None = None) -> RLMChatCompletion:
        """A child RLM's stand-in."""
        return self._one(prompt, "rlm", model)

    def rlm_query_batched(
        self, prompts: list[Any], model: str | None = None
    ) -> list[RLMChatCompletion]:
        """Child RLMs' stand-ins, answered concurrently, in prompt order."""
        return self._many(prompts, "rlm", model)


# -- fake providers: the real agent as a local process ----------------------------------

_ids = itertools.count(1)


class _Sandboxes:
    """The running sandboxes of one fake provider: id -> (tags, how to stop it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[str, tuple[frozenset[str], Callable[[], None]]] = {}

    def add(self, sandbox_id: str, tags: Iterable[str], stop: Callable[[], None]) -> None:
        with self._lock:
            self._live[sandbox_id] = (frozenset(tags), stop)

    def remove(self, sandbox_id: str | None) -> None:
        with self._lock:
            self._live.pop(sandbox_id or "", None)

    def ids(self, tag: str | None = None) -> list[str]:
        with self._lock:
            return sorted(i for i, (t, _) in self._live.items() if tag is None or tag in t)

    def stop(self, ids: Iterable[str], tag: str | None) -> list[str]:
        wanted = set(ids)
        everything = not wanted and tag is None
        with self._lock:
            chosen = [
                (i, stop)
                for i, (t, stop) in self._live.items()
                if everything or i in wanted or (tag is not None and tag in t)
            ]
        for _, stop in chosen:
            stop()
        return [i for i, _ in chosen]


_local = _Sandboxes()


class LocalAgentLauncher(LoopbackLauncher):
    """A launcher that behaves like a provider's: each launch is a "sandbox" with an id and
    an optional ``tag`` (besides the request's labels), listed by :meth:`list_sandboxes`
    until it is terminated and stoppable by :meth:`cleanup`. The sandbox is the real agent
    as a local process, reached over ``carrier`` (``dial``, ``stdio`` with ``framing``, or
    ``reverse``). Not isolated.
    """

    def __init__(
        self,
        carrier: Carrier = "stdio",
        framing: Framing = "binary",
        tag: str | None = None,
        ship: bool = False,
    ) -> None:
        super().__init__(carrier, framing, ship=ship)
        self.tag = tag
        self._id: str | None = None

    def launch(self, request: LaunchRequest) -> Connection:
        """Start the agent as sandbox ``local-<pid>-<n>`` and connect over the carrier."""
        self._id = f"local-{os.getpid()}-{next(_ids)}"
        tags = [*request.labels.values(), *([self.tag] if self.tag else [])]
        _local.add(self._id, tags, self.terminate)
        return super().launch(request)

    @property
    def sandbox_id(self) -> str | None:
        """This launch's sandbox id, once launched."""
        return self._id

    def terminate(self) -> None:
        """Stop the agent; the sandbox is no longer listed."""
        super().terminate()
        _local.remove(self._id)

    @classmethod
    def list_sandboxes(cls, *, tag: str | None = None) -> list[str] | None:
        """Ids of this host's running local sandboxes (with ``tag``, when given)."""
        return _local.ids(tag)

    @classmethod
    def cleanup(cls, *, ids: Iterable[str] = (), tag: str | None = None) -> list[str]:
        """Stop the local sandboxes named by ``ids`` or carrying ``tag`` (with neither:
        all of them)."""
        return _local.stop(ids, tag)


class LocalAgentEnvironment(AgentEnvironment):
    """An agent-backed environment on :class:`LocalAgentLauncher`: what a cloud plugin's
    environment looks like, with a local process for a sandbox. Settings beyond
    :class:`AgentEnvironment`'s: ``carrier``, ``framing``, ``tag`` and ``ship`` (run the
    agent from the bundle a cloud plugin ships)."""

    name = "local-agent"
    launcher_class = LocalAgentLauncher

    def __init__(
        self,
        carrier: Carrier = "stdio",
        framing: Framing = "binary",
        tag: str | None = None,
        ship: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.carrier = carrier
        self.framing = framing
        self.tag = tag
        self.ship = ship

    def make_launcher(self) -> Launcher:
        """A :class:`LocalAgentLauncher` for this environment's carrier and tag."""
        return LocalAgentLauncher(self.carrier, self.framing, self.tag, ship=self.ship)


_fake = _Sandboxes()


class FakeSandboxLauncher(RemoteLauncher):
    """Ships the agent into a :class:`~rlm_conformance.fakes.FakeSandbox` (an isolated
    local "sandbox") and starts it there over the ``stdio`` carrier: a cloud plugin's
    launcher (the core's :class:`~rlm_core.environments.remote.RemoteLauncher`) with the
    provider's SDK calls replaced by calls of the fake. ``network`` false turns the
    sandbox's network off."""

    provider = "fake"

    def __init__(self, network: bool = False, framing: Framing = "binary") -> None:
        super().__init__()
        self.network = network
        self.framing = framing
        self.sandbox: FakeSandbox | None = None

    def create_sandbox(self, request: LaunchRequest) -> FakeSandbox:
        """A new fake sandbox with the request's labels, listed until it is killed."""
        sandbox = FakeSandbox(f"fake-{next(_ids)}", network=self.network, labels=request.labels)
        _fake.add(sandbox.id, request.labels.values(), lambda: self.kill_sandbox(sandbox))
        self.sandbox = sandbox
        return sandbox

    def identify(self, sandbox: FakeSandbox) -> str:
        """The fake sandbox's id."""
        return sandbox.id

    def upload(self, sandbox: FakeSandbox, path: str, data: bytes, request: LaunchRequest) -> None:
        """Write the file into the sandbox."""
        sandbox.write_file(path, data)

    def exec_agent(
        self, sandbox: FakeSandbox, argv: list[str], request: LaunchRequest
    ) -> ProcessExec:
        """Run the agent in the sandbox with binary pipes."""
        return ProcessExec(sandbox.exec(argv))

    def kill_sandbox(self, sandbox: FakeSandbox) -> None:
        """Kill the sandbox and everything in it; it is no longer listed."""
        sandbox.kill()
        _fake.remove(sandbox.id)

    @classmethod
    def list_sandboxes(cls, *, tag: str | None = None) -> list[str] | None:
        """Ids of the running fake sandboxes (with ``tag`` among their labels' values)."""
        return _fake.ids(tag)

    @classmethod
    def kill_sandbox_ids(cls, ids: list[str]) -> list[str]:
        """Kill the fake sandboxes with these ids."""
        return _fake.stop(ids, None) if ids else []


class FakeSandboxEnvironment(AgentEnvironment):
    """An agent-backed environment on :class:`FakeSandboxLauncher`: isolated from the
    host (own processes, files and environment), and with ``network`` false (the
    default), without a network: it claims ``isolated`` and ``network_off``, and the
    conformance suite checks both."""

    name = "fake-sandbox"
    launcher_class = FakeSandboxLauncher
    capabilities = AgentEnvironment.capabilities | {ISOLATED}

    def __init__(self, network: bool = False, framing: Framing = "binary", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.network = network
        self.framing = framing
        if not network:
            self.capabilities = type(self).capabilities | {NETWORK_OFF}

    def make_launcher(self) -> Launcher:
        """A :class:`FakeSandboxLauncher` with this environment's settings."""
        return FakeSandboxLauncher(self.network, self.framing)
