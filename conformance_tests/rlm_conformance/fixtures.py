"""The fixtures every standard test uses. An implementer overrides one:
:meth:`EnvironmentFixtures.environment_setup`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rlm_conformance.cases import MARKER
from rlm_conformance.doubles import RecordingSubcalls
from rlm_conformance.probes import TempDirWatch
from rlm_conformance.record import SETUP_KEY, SKIPPED_FOR_KEY, SetupInfo
from rlm_conformance.setup import EnvironmentSetup
from rlm_core import RLM
from rlm_core.environments.base import Environment, Session, ToolSpec

StartEnv = Callable[..., Environment]
MakeRLM = Callable[..., RLM]


class EnvironmentFixtures:
    """Fixtures of the suite. Override :meth:`environment_setup` to return
    the :class:`EnvironmentSetup` under test; everything else builds on it."""

    @pytest.fixture
    def environment_setup(self) -> EnvironmentSetup:
        """The environment under test. Override it in your subclass::

        @pytest.fixture
        def environment_setup(self) -> EnvironmentSetup:
            return EnvironmentSetup("myprovider", {"region": "test"})
        """
        raise NotImplementedError(
            "the conformance suite needs the environment under test: override the "
            "environment_setup fixture in your subclass and return an EnvironmentSetup"
        )

    @pytest.fixture
    def claimed(self, environment_setup: EnvironmentSetup) -> frozenset[str]:
        """The capabilities the environment claims with the setup's settings."""
        return environment_setup.capabilities()

    @pytest.fixture(autouse=True)
    def _conformance_case(
        self,
        request: pytest.FixtureRequest,
        environment_setup: EnvironmentSetup,
        claimed: frozenset[str],
        tmp_path_factory: pytest.TempPathFactory,
    ) -> Iterator[TempDirWatch]:
        """Skip a test whose capabilities are not claimed (naming them); point temporary
        files at a private directory and fail the test if the environment leaves
        anything there that no running process uses."""
        node = request.node
        node.stash[SETUP_KEY] = SetupInfo.of(environment_setup, claimed)
        marker = node.get_closest_marker(MARKER)
        if marker is not None:
            missing = [c for c in marker.kwargs.get("requires", ()) if c not in claimed]
            if missing:
                node.stash[SKIPPED_FOR_KEY] = missing[0]
                pytest.skip(
                    f"{marker.kwargs['id']} needs the {missing[0]!r} capability, which "
                    f"{environment_setup.describe()} does not claim"
                )
        tmp_path_factory.getbasetemp()  # pytest's own temporary root stays where it is
        with TempDirWatch() as watch:
            yield watch
        try:
            left = watch.leftovers()
            assert not left, f"the environment left {left} in the temporary directory after closing"
        finally:
            watch.remove()

    @pytest.fixture
    def subcalls(self) -> RecordingSubcalls:
        """The host side of sub-calls for environments started by hand."""
        return RecordingSubcalls()

    @pytest.fixture
    def start_env(
        self, environment_setup: EnvironmentSetup, subcalls: RecordingSubcalls
    ) -> Iterator[StartEnv]:
        """``start_env(subcalls=None, tools=(), depth=1, max_concurrent_subcalls=4,
        **settings)``: a started environment (closed at the end of the test)."""
        started: list[Environment] = []

        def start(
            subcalls_: Any = None,
            tools: tuple[ToolSpec, ...] | list[ToolSpec] = (),
            depth: int = 1,
            max_concurrent_subcalls: int = 4,
            **settings: Any,
        ) -> Environment:
            env = environment_setup.build(**settings)
            started.append(env)
            env.start(
                Session(
                    subcalls=subcalls_ or subcalls,
                    depth=depth,
                    custom_tools=list(tools),
                    max_concurrent_subcalls=max_concurrent_subcalls,
                )
            )
            return env

        yield start
        for env in reversed(started):
            with contextlib.suppress(Exception):
                env.close()

    @pytest.fixture
    def env(self, start_env: StartEnv) -> Environment:
        """A started environment with the setup's settings."""
        return start_env()

    @pytest.fixture
    def make_rlm(self, environment_setup: EnvironmentSetup) -> Iterator[MakeRLM]:
        """``make_rlm(script, environment_kwargs=None, backend_kwargs=None, **rlm_kwargs)``:
        an RLM on the scripted LM and this environment (closed at the end of the test)."""
        made: list[RLM] = []

        def make(
            script: Any,
            environment_kwargs: dict[str, Any] | None = None,
            backend_kwargs: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> RLM:
            rlm = RLM(
                backend="scripted",
                backend_kwargs={"responses": script, **(backend_kwargs or {})},
                environment=environment_setup.name,
                environment_kwargs={**environment_setup.kwargs, **(environment_kwargs or {})},
                **kwargs,
            )
            made.append(rlm)
            return rlm

        yield make
        for rlm in reversed(made):
            with contextlib.suppress(Exception):
                rlm.close()
