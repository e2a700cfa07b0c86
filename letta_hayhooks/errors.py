"""
OpenAI-style errors and the mapping of Letta failures onto them.

Everything the proxy refuses or cannot do ends up as an `OpenAIError`, which knows its HTTP status and renders
the body OpenAI clients parse: `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import letta_client


class OpenAIError(Exception):
    """An error with an HTTP status and an OpenAI error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 - OpenAI's field name
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The OpenAI error envelope."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def __repr__(self) -> str:
        return f"OpenAIError({self.status}, {self.type}, {self.code}, {self.message!r})"


def invalid_request(message: str, *, param: str | None = None, code: str | None = None) -> OpenAIError:
    """400 for a request the client must fix."""
    return OpenAIError(400, message, type="invalid_request_error", param=param, code=code)


def model_not_found(model: str) -> OpenAIError:
    """404 naming the model only (never the list of agents)."""
    return OpenAIError(
        404,
        f"The model '{model}' does not exist or you do not have access to it.",
        type="invalid_request_error",
        param="model",
        code="model_not_found",
    )


def too_large(message: str, *, param: str | None = None) -> OpenAIError:
    """413 for bodies or prompts above the configured limits."""
    return OpenAIError(413, message, type="invalid_request_error", param=param, code="request_too_large")


def rate_limited(message: str, retry_after: float) -> OpenAIError:
    """429 with a Retry-After header."""
    return OpenAIError(
        429,
        message,
        type="rate_limit_exceeded",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(max(1, round(retry_after)))},
    )


def upstream_unavailable(message: str = "The Letta server is unreachable.") -> OpenAIError:
    """503 when Letta cannot be reached."""
    return OpenAIError(503, message, type="server_error", code="letta_unavailable")


def upstream_timeout(message: str = "The Letta agent did not finish the turn in time.") -> OpenAIError:
    """504 when Letta (or the turn) takes longer than allowed."""
    return OpenAIError(504, message, type="server_error", code="letta_timeout")


def upstream_error(message: str, *, code: str = "letta_error") -> OpenAIError:
    """502 when Letta answers with an error."""
    return OpenAIError(502, message, type="server_error", code=code)


def describe_exception(exc: BaseException) -> str:
    """
    An exception for a log line: its type and, for HTTP failures, the status; never its message.

    Messages can carry request data (a `UnicodeEncodeError` holds the whole payload it failed on, Letta's error
    bodies echo user input), and logs must not carry message text unless the operator turned debug text on.
    """
    status = getattr(exc, "status_code", None)
    return f"{type(exc).__name__} (HTTP {status})" if isinstance(status, int) else type(exc).__name__


def _letta_detail(exc: letta_client.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        detail = body.get("detail", body.get("error", body))
        if isinstance(detail, dict):
            return str(detail.get("message") or detail.get("code") or detail)
        return str(detail)
    return str(exc.message)


def from_letta_exception(exc: BaseException) -> OpenAIError:  # noqa: PLR0911 - one answer per failure kind
    """
    Map an exception raised while talking to Letta onto an OpenAI error.

    Letta's own bodies are summarised, never passed through raw, and never carry the backend's credentials.
    """
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, letta_client.APITimeoutError | httpx.TimeoutException | asyncio.TimeoutError | TimeoutError):
        return upstream_timeout()
    if isinstance(exc, letta_client.APIConnectionError | httpx.TransportError | ConnectionError):
        return upstream_unavailable()
    if isinstance(exc, letta_client.APIStatusError):
        status = exc.status_code
        detail = _letta_detail(exc)[:500]
        if status in (401, 403):
            return OpenAIError(502, "The proxy could not authenticate with Letta.", type="server_error",
                               code="letta_auth_failed")
        if status == 404:
            return upstream_error(f"Letta could not find a resource for this request: {detail}", code="letta_not_found")
        if status == 409:
            return OpenAIError(409, f"The Letta conversation is busy or waiting: {detail}", type="conflict_error",
                               code="letta_conflict")
        if status == 429:
            return rate_limited("Letta is rate limiting requests; retry later.", 5)
        if status in (400, 422):
            return upstream_error(f"Letta rejected the request: {detail}", code="letta_bad_request")
        if status in (502, 503):
            # Letta's reason (e.g. "database is locked") helps operators; the first line is enough
            reason = (detail.splitlines() or [""])[0][:160]
            return upstream_unavailable(f"The Letta server is unavailable ({status}): {reason}")
        if status == 504:
            return upstream_timeout()
        return upstream_error(f"Letta failed with status {status}: {detail}")
    if isinstance(exc, letta_client.APIError):
        return upstream_error(f"Letta stream error: {exc.message}"[:500])
    return OpenAIError(500, "Internal error in the proxy.", type="server_error", code="internal_error")
