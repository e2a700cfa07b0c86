"""
The access log without secrets.

Uvicorn's access log writes each request's path with its query string, and a client may put its key there
(`?api_key=...`, `?token=...`). A filter on the `uvicorn.access` logger replaces the values of query parameters whose
names look secret before the line is written, wherever the log goes (Hayhooks routes it through loguru).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

ACCESS_LOGGER = "uvicorn.access"
REDACTED = "[redacted]"
# parameter names that may carry a credential; redacting a harmless one costs nothing
_SECRET_NAME = re.compile(r"key|token|secret|passw|pwd|auth|sig|credential|session|jwt|bearer|code", re.IGNORECASE)
# uvicorn's access record: (client, method, path with query string, HTTP version, status)
_PATH_ARG = 2


def redact_query(path: str) -> str:
    """`path` with the values of its secret-looking query parameters replaced by `[redacted]`."""
    base, question, query = path.partition("?")
    if not question:
        return path
    pairs = []
    for pair in query.split("&"):
        name, equals, value = pair.partition("=")
        if equals and value and _SECRET_NAME.search(unquote_plus(name)):
            pair = f"{name}={REDACTED}"  # noqa: PLW2901 - the redacted form of this pair
        pairs.append(pair)
    return f"{base}?{'&'.join(pairs)}"


class RedactQuerySecrets(logging.Filter):
    """Rewrites the path argument of uvicorn's access records (filters run before any handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > _PATH_ARG and isinstance(args[_PATH_ARG], str) \
                and "?" in args[_PATH_ARG]:
            record.args = (*args[:_PATH_ARG], redact_query(args[_PATH_ARG]), *args[_PATH_ARG + 1:])
        return True


def install() -> None:
    """Add the filter to the access logger (once); handlers replaced later, e.g. by Hayhooks, keep it."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(existing, RedactQuerySecrets) for existing in logger.filters):
        logger.addFilter(RedactQuerySecrets())
