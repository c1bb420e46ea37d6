"""Every error and warning rlm-core defines is public: importable from ``rlm_core``, listed in
``rlm_core.__all__``, and documented."""

from __future__ import annotations

import inspect

import pytest

import rlm_core
import rlm_core.exceptions

ERRORS = sorted(
    (
        cls
        for _, cls in inspect.getmembers(rlm_core.exceptions, inspect.isclass)
        if issubclass(cls, Exception) and cls.__module__ == rlm_core.exceptions.__name__
    ),
    key=lambda cls: cls.__name__,
)


def test_the_module_defines_errors() -> None:
    names = {cls.__name__ for cls in ERRORS}
    assert {"RLMError", "MessageTooLargeError", "RLMWarning"} <= names


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__name__)
def test_error_is_exported_from_rlm_core(cls: type[Exception]) -> None:
    assert cls.__name__ in rlm_core.__all__
    assert getattr(rlm_core, cls.__name__) is cls
    namespace: dict[str, object] = {}
    exec(f"from rlm_core import {cls.__name__}", namespace)
    assert namespace[cls.__name__] is cls


@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__name__)
def test_error_has_a_docstring(cls: type[Exception]) -> None:
    assert cls.__doc__ is not None and cls.__doc__.strip(), f"{cls.__name__} has no docstring"
    assert "__doc__" in vars(cls), f"{cls.__name__} only inherits its docstring"


def test_message_too_large_error_keeps_its_old_import_and_shape() -> None:
    from rlm_core.agent import MAX_MESSAGE_BYTES, codec

    assert codec.MessageTooLargeError is rlm_core.MessageTooLargeError
    error = rlm_core.MessageTooLargeError("the value", 70 * 1024 * 1024)
    assert isinstance(error, rlm_core.SandboxError) and isinstance(error, ValueError)
    assert (error.size, error.limit) == (70 * 1024 * 1024, MAX_MESSAGE_BYTES)
    assert str(error) == "the value is 73,400,320 bytes, over the 64 MiB message limit"
    with pytest.raises(rlm_core.MessageTooLargeError):
        codec.check_size("the value", MAX_MESSAGE_BYTES)


def test_rlm_warning_is_a_user_warning() -> None:
    assert issubclass(rlm_core.RLMWarning, UserWarning)
