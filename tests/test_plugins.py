"""The plugin system: built-ins, entry points, lazy loading, the allow-list and events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from scripts import Script, finish, repl

from rlm_core import RLM, CellRejectedError, hookimpl
from rlm_core.exceptions import PluginError, UnknownBackendError, UnknownEnvironmentError
from rlm_core.plugins import PROVIDER_DISTRIBUTIONS, PluginRegistry, get_registry

SDK_MODULES = [
    "openai",
    "anthropic",
    "modal",
    "e2b",
    "e2b_code_interpreter",
    "daytona",
    "prime_sandboxes",
    "docker",
]


def make_plugin_dist(root: Path) -> None:
    """Install (onto a PYTHONPATH directory) a distribution with two environment entry
    points; importing either module leaves a marker file so tests can see what loaded."""
    dist = root / "rlm_fakeprov-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rlm-fakeprov\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text(
        "[rlm.environments]\nfakeprov = fakeprov_plugin\nslowprov = slowprov_plugin\n"
        "[rlm.backends]\nfakelm = fakeprov_plugin\n"
    )
    template = textwrap.dedent(
        """
        import os, pathlib
        pathlib.Path(os.environ["MARKER_DIR"], "{name}").touch()
        from rlm_core import hookimpl
        from rlm_core.environments.local import LocalEnvironment
        from rlm_core.backends.scripted import ScriptedBackend

        class {cls}(LocalEnvironment):
            capabilities = frozenset({{"persistent", "subcalls", "marker-{name}"}})

        @hookimpl
        def rlm_register_environments(register):
            register("{name}", {cls})

        @hookimpl
        def rlm_register_backends(register):
            register("fakelm", ScriptedBackend)
        """
    )
    (root / "fakeprov_plugin.py").write_text(template.format(name="fakeprov", cls="FakeEnv"))
    slow = template.format(name="slowprov", cls="SlowEnv").replace(
        'register("fakelm", ScriptedBackend)', "pass"
    )
    (root / "slowprov_plugin.py").write_text(slow)


def run_python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    full_env = {**os.environ, "PYTHONPATH": str(tmp_path), "MARKER_DIR": str(markers), **env}
    if env.get("RLM_LOAD_PLUGINS") is None:
        full_env.pop("RLM_LOAD_PLUGINS", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


@pytest.fixture
def plugin_path(tmp_path: Path) -> Path:
    make_plugin_dist(tmp_path)
    return tmp_path


def test_builtins_are_registered_through_the_hooks() -> None:
    registry = get_registry()
    envs = {r.name: r for r in registry.environments()}
    assert envs["local"].plugin == "rlm_core.environments.builtin"
    backends = {r.name for r in registry.backends()}
    assert {
        "scripted",
        "openai",
        "anthropic",
        "openrouter",
        "vercel",
        "vllm",
        "azure_openai",
    } <= backends


def test_selecting_a_name_loads_only_that_entry_point(plugin_path: Path) -> None:
    proc = run_python(
        """
        import json, os
        from rlm_core import RLM
        from rlm_core.backends.scripted import ScriptedBackend
        code = "```repl\\nanswer['content'] = type(context).__name__\\nanswer['ready'] = True\\n```"
        r = RLM(backend="scripted", backend_kwargs={"responses": [code]}, environment="fakeprov")
        print(json.dumps({"answer": r.completion("x").response,
                          "markers": sorted(os.listdir(os.environ["MARKER_DIR"]))}))
        """,
        plugin_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == {"answer": "str", "markers": ["fakeprov"]}


def test_listing_reports_distribution_version_and_capabilities(plugin_path: Path) -> None:
    proc = run_python(
        """
        import json
        from rlm_core.plugins import get_registry
        rows = {r.name: [r.distribution, r.version, sorted(r.capabilities)]
                for r in get_registry().environments()}
        print(json.dumps(rows))
        """,
        plugin_path,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows["fakeprov"] == [
        "rlm-fakeprov",
        "1.2.3",
        ["marker-fakeprov", "persistent", "subcalls"],
    ]
    assert rows["slowprov"][0] == "rlm-fakeprov"
    assert rows["local"][0] is None


def test_allow_list_blocks_plugins_not_named(plugin_path: Path) -> None:
    code = """
        from rlm_core.plugins import get_registry
        try:
            get_registry().environment("fakeprov")
        except Exception as e:
            print(type(e).__name__, e)
        else:
            print("loaded")
        """
    blocked = run_python(code, plugin_path, RLM_LOAD_PLUGINS="slowprov")
    assert "PluginError" in blocked.stdout and "RLM_LOAD_PLUGINS" in blocked.stdout
    assert not (plugin_path / "markers" / "fakeprov").exists()
    none_allowed = run_python(code, plugin_path, RLM_LOAD_PLUGINS="")
    assert "PluginError" in none_allowed.stdout
    by_name = run_python(code, plugin_path, RLM_LOAD_PLUGINS="fakeprov")
    assert by_name.stdout.strip() == "loaded"
    by_dist = run_python(code, plugin_path, RLM_LOAD_PLUGINS="rlm-fakeprov, other")
    assert by_dist.stdout.strip() == "loaded"


def test_listing_skips_plugins_the_allow_list_excludes(plugin_path: Path) -> None:
    proc = run_python(
        """
        import os
        from rlm_core.plugins import get_registry
        print(sorted(r.name for r in get_registry().environments()))
        print(sorted(os.listdir(os.environ["MARKER_DIR"])))
        """,
        plugin_path,
        RLM_LOAD_PLUGINS="slowprov",
    )
    assert proc.returncode == 0, proc.stderr
    names, markers = proc.stdout.strip().splitlines()
    assert "'slowprov'" in names and "fakeprov" not in names
    assert markers == "['slowprov']"


def test_entry_point_backends_load_by_name(plugin_path: Path) -> None:
    proc = run_python(
        """
        from rlm_core.plugins import get_registry
        print(get_registry().backend("fakelm").distribution)
        """,
        plugin_path,
    )
    assert proc.stdout.strip() == "rlm-fakeprov", proc.stderr


def test_import_and_listing_import_no_sdk(plugin_path: Path) -> None:
    proc = run_python(
        f"""
        import sys, json
        import rlm_core
        from rlm_core import RLM
        from rlm_core.plugins import get_registry
        get_registry().environments(); get_registry().backends()
        from rlm_core.cli import main
        main(["environments"]); main(["backends"])
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {SDK_MODULES!r})
        print(json.dumps(loaded))
        """,
        plugin_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_import_rlm_core_is_light() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, rlm_core; print(sorted(m for m in sys.modules if m.startswith(('pluggy', 'grpc', 'rlm_core.'))))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.strip() == "[]", proc.stdout


def test_unknown_environment_names_installed_ones_and_the_distribution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name, dist = "acme-cloud", "rlm-acme-cloud"  # known, not installed (real ones may be)
    monkeypatch.setitem(PROVIDER_DISTRIBUTIONS, name, dist)
    with pytest.raises(UnknownEnvironmentError) as info:
        RLM(environment=name)
    message = str(info.value)
    assert "installed: " in message and "local" in message
    assert f"pip install {dist}" in message
    with pytest.raises(UnknownEnvironmentError, match="no-such-env"):
        RLM(environment="no-such-env")


def test_every_rlms_backend_name_is_built_in() -> None:
    names = {registration.name for registration in get_registry().backends()}
    assert {"openai", "anthropic", "gemini", "portkey", "azure_openai"} <= names
    with pytest.raises(UnknownBackendError, match="installed: "):
        RLM(backend="nope").completion("c")


def test_misspelled_hook_implementation_is_caught() -> None:
    class Typo:
        @hookimpl
        def rlm_register_enviroments(self, register: Any) -> None:  # misspelled
            pass

    registry = PluginRegistry(load_defaults=False)
    with pytest.raises(Exception, match="unknown hook"):
        registry.register(Typo(), name="typo")


def test_two_plugins_cannot_claim_one_name(register_plugin: Any) -> None:
    class Clash:
        @hookimpl
        def rlm_register_environments(self, register: Any) -> None:
            register("local", object)

    with pytest.raises(PluginError, match="registered by both"):
        register_plugin(Clash(), "clash")


def test_event_hooks_see_cells_subcalls_and_completions(register_plugin: Any) -> None:
    events: list[tuple[Any, ...]] = []

    class Recorder:
        @hookimpl
        def rlm_before_cell(self, code: str, depth: int) -> None:
            events.append(("before", code.splitlines()[0], depth))

        @hookimpl
        def rlm_after_cell(self, result: Any) -> None:
            events.append(("after", result.stdout.strip()))

        @hookimpl
        def rlm_on_subcall(self, kind: str, prompt: Any, result: Any, depth: int) -> None:
            events.append(("subcall", kind, prompt, result.response, depth))

        @hookimpl
        def rlm_on_completion(self, completion: Any, depth: int) -> None:
            events.append(("completion", completion.response, depth))

    register_plugin(Recorder(), "recorder")
    script = Script([repl("print(llm_query('hi'))"), finish("done")], sub=lambda p: "HI")
    RLM(backend="scripted", backend_kwargs={"responses": script}).completion("c")
    assert events == [
        ("before", "print(llm_query('hi'))", 0),
        ("subcall", "llm_query", "hi", "HI", 0),
        ("after", "HI"),
        ("before", "answer['content'] = 'done'", 0),
        ("after", ""),
        ("completion", "done", 0),
    ]


def test_policy_plugin_can_reject_a_cell(register_plugin: Any) -> None:
    class NoImports:
        @hookimpl
        def rlm_before_cell(self, code: str) -> None:
            if "import os" in code:
                raise CellRejectedError("imports of os are not allowed here")

    register_plugin(NoImports(), "no-imports")
    seen: list[str] = []

    def root(messages: list[dict[str, str]]) -> str:
        seen.append(messages[-2]["content"] if len(messages) > 3 else "")
        return [repl("import os\nprint(os.getcwd())"), finish("ok")][len(seen) - 1]

    result = RLM(backend="scripted", backend_kwargs={"responses": Script(root)}).completion("c")
    assert result.response == "ok"
    assert "CellRejectedError: imports of os are not allowed here" in seen[1]


def test_public_names_type_check_in_a_consumer(tmp_path: Path) -> None:
    """``from rlm_core import RLM`` is an explicit export under ``mypy --strict``."""
    import rlm_core

    consumer = tmp_path / "consumer.py"
    names = ", ".join(n for n in rlm_core.__all__ if n != "__version__")
    consumer.write_text(f"from rlm_core import {names}\nprint(RLM)\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(consumer)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout


def test_listed_capabilities_are_those_of_the_default_settings() -> None:
    from rlm_core.environments.local import LocalEnvironment

    class EgressOffByDefault(LocalEnvironment):
        def __init__(self, block_network: bool = True, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            if block_network:
                self.capabilities = type(self).capabilities | {"network_off"}

    class NeedsAnArgument(LocalEnvironment):
        capabilities = LocalEnvironment.capabilities | {"marker"}

        def __init__(self, endpoint: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)

    class Plugin:
        @staticmethod
        @hookimpl
        def rlm_register_environments(register: Any) -> None:
            register("egress-off", EgressOffByDefault)
            register("needs-argument", NeedsAnArgument)

    registry = PluginRegistry()
    registry.register(Plugin())
    rows = {r.name: r.capabilities for r in registry.environments()}
    assert "network_off" in rows["egress-off"]
    assert "network_off" not in EgressOffByDefault.capabilities
    assert "marker" in rows["needs-argument"]  # cannot be built bare: the class's own
