"""
A pytest plugin: exceptions raised in finalizers are formatted after the test phase, never inside the finalizer.

Why: CPython before 3.11.8 keeps one AST recursion counter per interpreter (python/cpython#106905, fixed by #113035).
The garbage collector can run a finalizer while any `ast.parse` builds its tree (pytest formatting a failure, a
test reading source). If the finalizer raises (a half-built openai client's `__del__` did), pytest's unraisable hook
formats that traceback at once, and 3.11's traceback module calls `ast.parse` again for its `^^^` carets. The nested
parse leaves the shared counter off, and the outer one raises `SystemError: AST constructor recursion depth
mismatch`: a test fails for no reason of its own, or pytest aborts the whole session with an INTERNALERROR.

This plugin sits in front of pytest's hook: the hook itself only notes the exception (and the finalized object's
repr, which may not be computable later); at the end of each test phase, before pytest collects them, the noted
exceptions go to pytest's hook, which formats and reports them as always. `tests/unit/test_report_guard.py`
reproduces both chains.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pytest


@dataclass(frozen=True)
class _Described:
    """Stands in for the finalized object: pytest's report shows its repr, taken while the object was whole."""

    text: str

    def __repr__(self) -> str:
        return self.text


@dataclass(frozen=True)
class NotedUnraisable:
    """What `sys.UnraisableHookArgs` carries, with the object replaced by its repr."""

    exc_type: type[BaseException]
    exc_value: BaseException | None
    exc_traceback: TracebackType | None
    err_msg: str | None
    object: Any


class DeferredUnraisableHook:
    """Notes unraisable exceptions while tests run; `flush` hands them to the hook it replaced."""

    def __init__(self, report: Callable[[Any], object]) -> None:
        self.report = report
        self.noted: list[NotedUnraisable] = []
        self.deferring = True

    def __call__(self, unraisable: sys.UnraisableHookArgs) -> None:
        try:
            described = _Described(repr(unraisable.object))
        except Exception as exc:  # a half-torn-down object may not even have a repr
            described = _Described(f"<object whose repr raised {type(exc).__name__}>")
        noted = NotedUnraisable(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback,
                                unraisable.err_msg, described)
        if self.deferring:
            self.noted.append(noted)
        else:
            self.report(noted)

    def flush(self) -> None:
        noted, self.noted = self.noted, []
        for unraisable in noted:
            self.report(unraisable)


_hook: DeferredUnraisableHook | None = None


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Wraps the hook pytest's unraisableexception plugin installed (it configures before conftest plugins)."""
    global _hook
    _hook = DeferredUnraisableHook(sys.unraisablehook)
    sys.unraisablehook = _hook


# trylast like pytest's own collectors, and registered after them, so these run first among them: after the phase
# itself, before pytest collects what its hook was given.
@pytest.hookimpl(trylast=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if _hook is not None:
        _hook.flush()


@pytest.hookimpl(trylast=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    if _hook is not None:
        _hook.flush()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    if _hook is not None:
        _hook.flush()


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """From here on (pytest's last collection of garbage) exceptions go straight to pytest's hook."""
    global _hook
    if _hook is None:
        return
    _hook.flush()
    _hook.deferring = False
    if sys.unraisablehook is _hook:
        sys.unraisablehook = _hook.report
    _hook = None
