"""
A pytest plugin: a failure whose traceback cannot be formatted is reported as a failure, not an INTERNALERROR.

Why: CPython before 3.11.8 keeps one AST recursion counter per interpreter (python/cpython#106905, fixed by #113035).
pytest formats a failure's traceback with `ast.parse`; if the garbage collector runs a finalizer that raises while
that parse builds its tree, the unraisable-exception hook formats *that* traceback, and 3.11's traceback module
calls `ast.parse` again (for its `^^^` carets). The nested parse leaves the shared counter off, the outer one raises
`SystemError: AST constructor recursion depth mismatch`, and pytest aborts the whole session. A half-built openai
client (its `__del__` raises) was such a finalizer. `tests/unit/test_report_guard.py` reproduces the chain.

The fallback report lists the traceback's frames without parsing any source, so it cannot hit the same bug.
"""

from __future__ import annotations

import linecache

import pytest

_AST_BUG = "AST constructor recursion depth mismatch"


def plain_traceback(item: pytest.Item, excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    """`file:line in function` and the line itself for each frame from the test's own file on, then the exception;
    no source is parsed."""
    lines = ["(pytest could not format this traceback: CPython's AST counter bug; plain frames follow)"]
    for entry in excinfo.traceback.cut(path=item.path) or excinfo.traceback:
        path, lineno = str(entry.path), entry.lineno + 1
        lines.append(f"{path}:{lineno}: in {entry.name}")
        source = linecache.getline(path, lineno).strip()
        if source:
            lines.append(f"    {source}")
    lines.append(f"E   {excinfo.exconly()}")
    return "\n".join(lines)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport | None:
    """pytest's own report; a plain-frames failure report when formatting its traceback hits the AST bug."""
    try:
        return pytest.TestReport.from_item_and_call(item, call)
    except SystemError as exc:
        if _AST_BUG not in str(exc) or call.excinfo is None:
            raise
        return pytest.TestReport(
            item.nodeid,
            item.location,
            dict.fromkeys(item.keywords, 1),
            "failed",
            plain_traceback(item, call.excinfo),
            call.when,
            duration=call.duration,
            start=call.start,
            stop=call.stop,
            user_properties=item.user_properties,
        )
