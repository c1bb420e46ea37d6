"""``execution_instructions``: what the model is told about the runtime its code runs in.

Derived from the environment's declared capabilities and its settings, so a third-party
sandbox plugin is described by what it claims (isolation, network, timeouts, memory, files).
"""

from __future__ import annotations

from rlm_core import AgentEnvironment, Environment
from rlm_core.environments.base import FILES, ISOLATED, NETWORK_OFF, TIMEOUT

COMMON = (
    "State, imports, functions, and JSON-compatible variables persist across executions in "
    "this session. Host tools (llm_query, llm_query_batched and any tools listed) and SUBMIT "
    "are global functions: call them with JSON-compatible arguments (keyword arguments work) "
    "and they return JSON-compatible values; several threads may call them at once."
)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def describe_runtime(environment: Environment) -> str:
    """A few sentences on where code runs, its isolation, network, time and memory limits."""
    name = environment.name or type(environment).__name__
    caps = environment.capabilities
    remote = isinstance(environment, AgentEnvironment)
    place = "a separate process" if remote else "the host's own process"
    where = f"Code runs as Python in {place} (the rlm-core {name!r} environment)"
    if ISOLATED in caps:
        isolation = "isolated from the host's memory and files."
    elif remote:
        isolation = "which is not a security sandbox: it has the host user's files and permissions."
    else:
        isolation = "which is not a sandbox: code can do anything the host process can."
    sentences = [f"{where}, {isolation}"]
    sentences.append(
        "It has no network access."
        if NETWORK_OFF in caps
        else "Network access is not restricted by the runtime."
    )
    timeout = _number(getattr(environment, "cell_timeout", None))
    if TIMEOUT not in caps:
        sentences.append("An execution cannot be interrupted, so avoid unbounded loops.")
    elif timeout is not None:
        sentences.append(
            f"Each execution may run for at most {timeout:g} seconds; one that runs longer "
            "ends the session and all its state."
        )
    else:
        sentences.append("Executions have no time limit.")
    memory = _number(getattr(environment, "memory_limit_mb", None))
    if memory is not None:
        sentences.append(f"Memory is limited to {memory:g} MB.")
    lifetime = _number(getattr(environment, "max_lifetime", None))
    if lifetime is not None:
        sentences.append(f"The sandbox lives at most {lifetime:g} seconds.")
    if FILES in caps:
        sentences.append("There is a writable working directory.")
    sentences.append(COMMON)
    return " ".join(sentences)
