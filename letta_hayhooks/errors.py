"""
OpenAI-style errors and the mapping of Letta failures onto them.

Everything the proxy refuses or cannot do ends up as an `OpenAIError`, which knows its HTTP status and renders
the body OpenAI clients parse: `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import asyncio
import math
import re
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


def rate_limited(message: str, retry_after: float | None) -> OpenAIError:
    """429, with a Retry-After header when the wait is known."""
    return OpenAIError(
        429,
        message,
        type="rate_limit_exceeded",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None,
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


# What must never reach a client from Letta's error texts: URLs, addresses, credentials.
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_ADDRESS = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")
_CREDENTIAL = re.compile(
    r"\b(?:sk|pk|rk|ak)-[A-Za-z0-9_*-]{6,}|\bBearer\s+\S+"
    r"|\b(?:api[_-]?key|token|secret|password|authorization)\b['\"]?\s*[:=]\s*['\"]?[^\s'\",}]+",
    re.IGNORECASE,
)
# Letta's detail of a provider failure, e.g. "RATE_LIMIT_EXCEEDED: Rate limited by OpenAI: Error code: 429 - {'error':
# {'message': 'slow down', ...}}" or "INTERNAL_SERVER_ERROR: OpenAI API error: Error code: 500 - {...}".
_PROVIDER_STATUS = re.compile(r"\b(?:Error code|status code|status)\s*[:=]?\s*([1-5]\d\d)\b", re.IGNORECASE)
_PROVIDER_MESSAGE = re.compile(r"""['"]message['"]\s*:\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")""")
_PROVIDER_NAME = re.compile(r"\b(?:by|from)\s+([A-Z][A-Za-z0-9.-]+)\b|\b([A-Z][A-Za-z0-9.-]+) API error\b")
_RETRY_IN = re.compile(r"\b(?:try again|retry)\s+(?:in|after)\s+(\d+(?:\.\d+)?)\s*(ms|s|sec|secs|seconds?)\b",
                       re.IGNORECASE)
_CODE_PREFIX = re.compile(r"^[A-Z][A-Z_]+:\s*")
_MAX_DETAIL = 300
# Letta's stop reason (and error type) for a prompt that no longer fits the model's context window
CONTEXT_OVERFLOW = "context_window_overflow_in_system_prompt"


def sanitize(text: str, limit: int = _MAX_DETAIL) -> str:
    """Letta's or a provider's error text as a client may see it: no URLs, addresses or credentials, one line."""
    text = _URL.sub("[url]", text)
    text = _CREDENTIAL.sub("[redacted]", text)
    text = _ADDRESS.sub("[address]", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _provider(detail: str) -> tuple[int | None, str | None, str | None]:
    """The provider's HTTP status, name and own message in Letta's error detail (None where it does not say)."""
    status = _PROVIDER_STATUS.search(detail)
    name = _PROVIDER_NAME.search(detail)
    message = _PROVIDER_MESSAGE.search(detail)
    return (
        int(status.group(1)) if status else None,
        (name.group(1) or name.group(2)) if name else None,
        (message.group(1) or message.group(2)) if message else None,
    )


def _retry_after(text: str) -> float | None:
    found = _RETRY_IN.search(text)
    if found is None:
        return None
    value = float(found.group(1))
    return value / 1000 if found.group(2).lower() == "ms" else value


def from_letta_error(  # noqa: PLR0911 - one answer per kind of failure
    error_type: str | None, message: str | None, detail: str | None = None, *, stop_reason: str | None = None
) -> OpenAIError:
    """
    The client's error for a failure Letta reported (a stream's `error_message` event, or an error body):
    a provider 429 is a 429 (with Retry-After when the provider said how long), a provider 5xx a 502, an exceeded
    context window a 400 `context_length_exceeded`; each with the provider's own message where Letta passed it on.
    Texts are sanitised (`sanitize`): Letta's details can name URLs, addresses and keys.
    """
    error_type = (error_type or "").lower()
    detail = detail or ""
    status, name, said = _provider(detail)
    source = f"{name}, HTTP {status}" if name and status else (f"HTTP {status}" if status else name)
    reason = sanitize(said or _CODE_PREFIX.sub("", detail) or message or "no detail")
    where = f" ({source})" if source else ""
    if error_type == "llm_rate_limit" or status == 429:
        return rate_limited(f"The model provider is rate limiting the agent's requests{where}: {reason}",
                            _retry_after(detail))
    if CONTEXT_OVERFLOW in (error_type, stop_reason) or "CONTEXT_WINDOW_EXCEEDED" in detail:
        return OpenAIError(400, f"The agent's context window is exceeded: {sanitize(detail or message or '')}",
                           type="invalid_request_error", param="messages", code="context_length_exceeded")
    if error_type == "llm_timeout":
        return OpenAIError(504, f"The model provider did not answer the agent in time{where}.", type="server_error",
                           code="llm_timeout")
    if error_type == "llm_authentication":
        # the provider's message may echo part of the key: the status is enough
        return upstream_error(f"The model provider refused the Letta server's credentials{where}.",
                              code="llm_authentication_failed")
    if (status is not None and status >= 500) or error_type == "llm_error":
        return upstream_error(f"The model provider failed{where}: {reason}", code="llm_api_error")
    if error_type in ("llm_bad_request", "llm_empty_response", "llm_insufficient_credits"):
        return upstream_error(f"The model provider could not answer{where}: {reason}", code=error_type)
    code = error_type or "letta_error"
    return upstream_error(f"Letta reported an error: {sanitize(message or detail or 'no detail')}", code=code)


def _letta_error_body(body: object) -> dict[str, Any] | None:
    """Letta's own error report in a response body: `{"error": {"type", "message", "detail"}}`."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict) and body["error"].get("type"):
        return body["error"]
    return None


def _letta_detail(exc: letta_client.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        detail = body.get("detail", body.get("error", body))
        if isinstance(detail, dict):
            return sanitize(str(detail.get("message") or detail.get("code") or detail), 500)
        return sanitize(str(detail), 500)
    return sanitize(str(exc.message), 500)


def from_letta_exception(exc: BaseException) -> OpenAIError:  # noqa: PLR0911, PLR0912 - one answer per failure kind
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
        report = _letta_error_body(exc.body)
        if report is not None:  # a failure of the model call, reported by Letta
            return from_letta_error(str(report.get("type")), report.get("message"), report.get("detail"))
        detail = _letta_detail(exc)
        if status in (401, 403):
            return OpenAIError(502, "The proxy could not authenticate with Letta.", type="server_error",
                               code="letta_auth_failed")
        if status == 404:
            return upstream_error(f"Letta could not find a resource for this request: {detail}", code="letta_not_found")
        if status == 409:
            return OpenAIError(409, f"The Letta conversation is busy or waiting: {detail}", type="conflict_error",
                               code="letta_conflict")
        if status == 429:
            retry_after = exc.response.headers.get("retry-after")
            seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
            return rate_limited(f"Letta is rate limiting requests; retry later: {detail}", seconds)
        if status == 400 and "CONTEXT_WINDOW_EXCEEDED" in detail:
            return from_letta_error("context_window_exceeded", None, detail)
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
        return upstream_error(f"Letta stream error: {sanitize(str(exc.message))}")
    return OpenAIError(500, "Internal error in the proxy.", type="server_error", code="internal_error")
