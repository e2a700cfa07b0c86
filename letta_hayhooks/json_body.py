"""
One parser for every JSON request body the server reads, so no route can forget a check.

`parse_json_object` turns the bytes into a JSON object or an OpenAI 400: not JSON, not an object, nested deeper than
`MAX_NESTING`, a non-finite number (`NaN`, `Infinity`, `1e999`: Python's parser takes them, JSON has none), or a
lone UTF-16 surrogate in a string or key (`"\\ud800"` parses but cannot be encoded for Letta). Duplicate keys keep the
last value, as Python's parser and OpenAI's do.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from letta_hayhooks.errors import invalid_request

# Deeper than any real transcript or tool schema; the bound keeps every later walk (and Letta's) off the stack limit.
MAX_NESTING = 100


def parse_json_object(raw: bytes | str) -> dict[str, Any]:
    """
    The JSON object of a request body, checked (see the module docstring).

    :raises OpenAIError: 400 `invalid_request_error` naming what is wrong (and the field, where there is one).
    """
    try:
        body = json.loads(raw)
    except RecursionError:
        # thousands of nested brackets exhaust the parser's stack: the client's fault, not a 500
        msg = "The request body is nested too deeply."
        raise invalid_request(msg, code="nested_too_deeply") from None
    except ValueError:  # also bytes that are not UTF-8
        msg = "The request body is not valid JSON."
        raise invalid_request(msg) from None
    if not isinstance(body, dict):
        msg = "The request body must be a JSON object."
        raise invalid_request(msg)
    check_values(body)
    return body


def _path(entry: tuple | None) -> str:
    keys: list[Any] = []
    while entry is not None:
        entry, key = entry
        keys.append(key)
    text = ""
    for key in reversed(keys):
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


def _has_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_values(body: dict[str, Any]) -> None:
    """
    Refuse values that cannot be forwarded: lone UTF-16 surrogates in any string or key (JSON's "\\ud800" parses,
    but cannot be encoded for Letta), non-finite numbers (NaN, Infinity, 1e999) and nesting deeper than `MAX_NESTING`.

    :raises OpenAIError: 400 naming the field.
    """
    # (value, parent entry, depth); parent entries are (grandparent entry, key) so paths are built only on error
    stack: list[tuple[Any, tuple | None, int]] = [(body, None, 0)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, str):
            if _has_surrogate(value):
                param = _path(where)
                msg = f"'{param}' is not valid Unicode: it holds a lone UTF-16 surrogate."
                raise invalid_request(msg, param=param, code="invalid_unicode")
        elif isinstance(value, float):
            if not math.isfinite(value):
                param = _path(where)
                msg = f"'{param}' must be a finite number (NaN and Infinity are not JSON)."
                raise invalid_request(msg, param=param)
        elif isinstance(value, dict | list):
            if depth >= MAX_NESTING:
                param = re.split(r"[.\[]", _path(where), maxsplit=1)[0]  # the top-level field; the full path is huge
                msg = f"The request is nested too deeply in '{param}' (more than {MAX_NESTING} levels)."
                raise invalid_request(msg, param=param, code="nested_too_deeply")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, child in items:
                if isinstance(key, str) and _has_surrogate(key):
                    param = _path(where)
                    msg = f"A key in '{param or 'the request'}' is not valid Unicode: it holds a lone UTF-16 surrogate."
                    raise invalid_request(msg, param=param or None, code="invalid_unicode")
                stack.append((child, (where, key), depth + 1))
