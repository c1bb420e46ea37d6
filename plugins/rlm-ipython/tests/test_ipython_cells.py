"""What a cell sees and reports in an IPython shell, the same in both kernel modes."""

from __future__ import annotations

import pytest

from rlm_core.environments.base import Environment


def test_last_expression_value_is_shown_as_text(env: Environment) -> None:
    result = env.execute("x = [1, 2]\nprint('before')\nx + [3]")
    assert (result.stdout, result.stderr, result.error) == ("before\n[1, 2, 3]\n", "", None)


def test_trailing_semicolon_hides_the_value(env: Environment) -> None:
    assert env.execute("41 + 1;").stdout == ""


def test_none_is_not_shown(env: Environment) -> None:
    assert env.execute("None").stdout == ""


def test_previous_value_is_underscore(env: Environment) -> None:
    env.execute("6 * 7")
    assert env.execute("_ + 1").stdout == "43\n"


def test_display_shows_each_object(env: Environment) -> None:
    result = env.execute("display('a', {'k': 1})")
    assert result.stdout == "'a'\n{'k': 1}\n"


def test_line_and_cell_magics(env: Environment) -> None:
    assert "per loop" in env.execute("%timeit -n1 -r1 sum(range(10))").stdout
    result = env.execute("%%capture captured\nprint('hidden')")
    assert result.stdout == ""
    assert env.execute("captured.stdout").stdout == "'hidden\\n'\n"


def test_shell_escape(env: Environment) -> None:
    result = env.execute("word = 'shell'\n!echo from-the-$word; echo to-stderr >&2; exit 3")
    assert (result.stdout, result.stderr) == ("from-the-shell\nto-stderr\n", "")
    assert env.get_variable("_exit_code") == 3
    result = env.execute("lines = !printf 'a\\nb\\n'\nlines.n")
    assert result.stdout == "'a\\nb'\n"


def test_top_level_await(env: Environment) -> None:
    result = env.execute("import asyncio\nawait asyncio.sleep(0)\n'done'")
    assert (result.stdout, result.error) == ("'done'\n", None)


def test_exception_is_an_ipython_traceback_on_stderr(env: Environment) -> None:
    result = env.execute("def f():\n    raise ValueError('boom')\nf()")
    assert result.error == "ValueError: boom"
    assert result.stdout == ""
    assert "Traceback (most recent call last)" in result.stderr
    assert "----> 3 f()" in result.stderr  # IPython's context lines, no colours
    assert "----> 2     raise ValueError('boom')" in result.stderr
    assert "\x1b[" not in result.stderr
    assert "interactiveshell" not in result.stderr  # no frames of IPython itself


def test_xmode_is_honoured(env: Environment) -> None:
    env.execute("%xmode Minimal")
    assert env.execute("1/0").stderr == "ZeroDivisionError: division by zero\n"


def test_syntax_error_is_reported_and_nothing_runs(env: Environment) -> None:
    result = env.execute("y = 1\ndef f(:")
    assert result.error is not None and "SyntaxError" in result.error
    assert "SyntaxError: invalid syntax" in result.stderr
    with pytest.raises(KeyError):
        env.get_variable("y")


def test_sys_exit_is_the_cells_error_without_terminal_advice(env: Environment) -> None:
    result = env.execute("import sys\nsys.exit(3)")
    assert result.error == "SystemExit: 3"
    assert "Ctrl-D" not in result.stderr
    assert env.execute("'still here'").stdout == "'still here'\n"


def test_ipython_names_are_not_reported_as_variables(env: Environment) -> None:
    result = env.execute("mine = 1\nSHOW_VARS()")
    assert result.stdout == "\"Available variables: {'mine': 'int'}\"\n"
    assert set(result.locals) == {"answer", "mine"}


def test_a_rebound_ipython_name_is_a_variable(env: Environment) -> None:
    assert "Out" in env.execute("Out = 'mine'").locals


def test_repl_names_work(env: Environment) -> None:
    env.add_context("some text")
    result = env.execute(
        "print(llm_query(context))\nanswer.update(content='done', ready=True)\nlen(context)"
    )
    assert result.stdout == "llm:some text\n9\n"
    assert result.final_answer == "done"
    assert [c.response for c in result.rlm_calls] == ["llm:some text"]


def test_get_ipython_is_the_cells_own_shell(env: Environment) -> None:
    env.execute("get_ipython().user_ns['marker'] = 5")
    assert env.get_variable("marker") == 5


def test_a_deep_recursion_shows_its_first_and_last_frames(env: Environment) -> None:
    result = env.execute("def down(n):\n    return down(n + 1)\ndown(0)")
    assert result.error is not None and "RecursionError" in result.stderr
    assert "frames in the middle left out" in result.stderr
    assert result.stderr.count("down(n + 1)") <= 60
    assert env.execute("print('still here')").stdout == "still here\n"
