"""tests/report_guard.py: finalizers that raise while `ast.parse` runs break neither a test nor pytest's report."""

from __future__ import annotations

import sys

import pytest

# An inner test module: garbage whose finalizers raise (as a half-built openai client's did) is collected while
# pytest parses this long file to format a failure, and while a test parses source itself.
INNER = '''
import gc

import pytest


class HalfBuilt:
    def __del__(self):
        return self.state_never_set


@pytest.fixture
def eager_collector():
    # the failure is formatted after the test returns and before its teardown: the garbage waits until then
    thresholds = gc.get_threshold()
    gc.set_threshold(20)
    yield
    gc.set_threshold(*thresholds)
    gc.collect()


def test_fails_while_garbage_with_raising_finalizers_waits(eager_collector):
    for _ in range(500):
        item = HalfBuilt()
        item.cycle = item
    del item  # every cycle is garbage now, none held by this frame
    assert 1 == 2


def test_parses_source_while_garbage_waits():
    import ast, inspect, sys
    source = inspect.getsource(sys.modules[__name__])
    thresholds = gc.get_threshold()
    gc.set_threshold(20)
    try:
        for _ in range(500):
            item = HalfBuilt()
            item.cycle = item
        del item
        for _ in range(3):
            ast.parse(source)
    finally:
        gc.set_threshold(*thresholds)
        gc.collect()


def test_after_it_runs():
    assert True
''' + "\n".join(f"def padding_{i}(a, b):\n    return [a + b for _ in range(a)] if a else {{b: a}}\n"
            for i in range(800))

FIXED = sys.version_info >= (3, 11, 8)


def _run(pytester: pytest.Pytester, *plugins: str, only: str | None = None) -> pytest.RunResult:
    pytester.makepyfile(test_inner=INNER)
    args = [arg for plugin in plugins for arg in ("-p", plugin)] + (["-k", only] if only else [])
    return pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider")


def test_the_run_goes_on_and_reports_the_failure(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "tests.report_guard")
    assert "INTERNALERROR" not in result.stdout.str()
    assert "recursion depth mismatch" not in result.stdout.str()
    result.assert_outcomes(failed=1, passed=2, warnings=None)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*assert 1 == 2*"])
    # the finalizers' exceptions are still reported, with the object they came from
    result.stdout.fnmatch_lines(["*PytestUnraisableExceptionWarning: Exception ignored in: <function HalfBuilt.__del__*"])
    assert "AttributeError: 'HalfBuilt' object has no attribute 'state_never_set'" in result.stdout.str()


@pytest.mark.skipif(FIXED, reason="CPython 3.11.8 and later keep a counter per parse (python/cpython#113035)")
def test_without_the_guard_this_python_aborts_the_run(pytester: pytest.Pytester) -> None:
    """The chains the guard exists for are real on this interpreter (if this fails, the guard may go)."""
    result = _run(pytester)
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    result.stdout.fnmatch_lines(["*AST constructor recursion depth mismatch*"])


@pytest.mark.skipif(FIXED, reason="CPython 3.11.8 and later keep a counter per parse (python/cpython#113035)")
def test_without_the_guard_a_test_that_parses_source_fails_for_nothing(pytester: pytest.Pytester) -> None:
    """What CI saw: a test reading source with `ast.parse` failed while garbage with raising finalizers waited."""
    result = _run(pytester, only="test_parses_source_while_garbage_waits")
    result.assert_outcomes(failed=1, warnings=None)
    result.stdout.fnmatch_lines(["*SystemError: AST constructor recursion depth mismatch*"])
