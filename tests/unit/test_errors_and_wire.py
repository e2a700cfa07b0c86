"""OpenAI error mapping, the idempotency store, exact SSE payloads and redacted traces."""

from __future__ import annotations

import asyncio
import json

import httpx
import letta_client
import pytest

from letta_hayhooks.chat.debug_trace import redact
from letta_hayhooks.chat.idempotency import IdempotencyStore
from letta_hayhooks.errors import from_letta_exception, model_not_found
from letta_hayhooks.openai_wire import DONE, WireChunk


def status_error(status: int, body: object) -> letta_client.APIStatusError:
    response = httpx.Response(status, request=httpx.Request("POST", "http://letta/v1/x"))
    return letta_client.APIStatusError("failed", response=response, body=body)


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (httpx.ConnectError("refused"), 503, "letta_unavailable"),
        (letta_client.APITimeoutError(request=httpx.Request("GET", "http://letta")), 504, "letta_timeout"),
        (status_error(401, {"detail": "nope"}), 502, "letta_auth_failed"),
        (status_error(409, {"detail": {"code": "PENDING_APPROVAL"}}), 409, "letta_conflict"),
        (status_error(429, {}), 429, "rate_limit_exceeded"),
        (status_error(400, {"detail": "CONTEXT_WINDOW_EXCEEDED: prompt too long"}), 400, "context_length_exceeded"),
        (status_error(400, {"detail": "bad field"}), 502, "letta_bad_request"),
        (status_error(503, {}), 503, "letta_unavailable"),
        (ValueError("bug"), 500, "internal_error"),
    ],
)
def test_letta_failures_map_to_openai_errors(exc: BaseException, status: int, code: str) -> None:
    error = from_letta_exception(exc)
    assert (error.status, error.code) == (status, code)
    assert set(error.body()["error"]) == {"message", "type", "param", "code"}
    assert "http://letta" not in error.message


def test_model_not_found_names_only_the_model() -> None:
    body = model_not_found("ghost").body()["error"]
    assert body["code"] == "model_not_found" and "ghost" in body["message"] and body["param"] == "model"


def test_wire_chunk_serialises_exactly() -> None:
    chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": "é"}}]}
    assert WireChunk.of(chunk).model_dump_json() == json.dumps(chunk, ensure_ascii=False, separators=(",", ":"))
    assert WireChunk.of(DONE).model_dump_json() == "[DONE]"


async def test_idempotency_shares_one_outcome_and_forgets_failures() -> None:
    store = IdempotencyStore()
    owner, future = store.claim("k")
    again, same = store.claim("k")
    assert owner and not again and same is future
    store.resolve("k", "answer")
    assert await same == "answer"
    owner, _ = store.claim("failing")
    store.fail("failing", RuntimeError("x"))
    owner_again, _ = store.claim("failing")
    assert owner and owner_again


async def test_idempotency_expires() -> None:
    store = IdempotencyStore(ttl=0.01)
    store.claim("k")
    await asyncio.sleep(0.02)
    owner, _ = store.claim("k")
    assert owner


def test_redaction_keeps_structure_and_lengths() -> None:
    event = {"message_type": "assistant_message", "content": "secret", "tool_call": {"arguments": "{\"a\": 1}"}}
    redacted = redact(event, include_text=False)
    assert redacted == {"message_type": "assistant_message", "content": "<redacted 6 chars>",
                        "tool_call": {"arguments": "<redacted 8 chars>"}}
    assert redact(event, include_text=True) is event


async def test_idempotency_success_survives_a_late_failure_report() -> None:
    store = IdempotencyStore()
    store.claim("k")
    store.resolve("k", "answer")
    store.fail("k", RuntimeError("late"))
    owner, future = store.claim("k")
    assert not owner and await future == "answer"


def test_logged_exceptions_carry_no_request_text() -> None:
    import httpx
    import letta_client

    from letta_hayhooks.errors import describe_exception

    payload = '{"messages": [{"content": "SECRET-PROMPT \\ud800"}]}'
    try:
        payload.encode("utf-8")
    except UnicodeEncodeError as exc:
        assert "SECRET" in repr(exc)  # what used to reach the WARNING line
        assert describe_exception(exc) == "UnicodeEncodeError"
    response = httpx.Response(400, request=httpx.Request("POST", "http://letta/v1/x"),
                              json={"detail": "bad image http://SECRET-URL"})
    error = letta_client.BadRequestError("bad image http://SECRET-URL", response=response, body=response.json())
    assert describe_exception(error) == "BadRequestError (HTTP 400)"


def test_redaction_covers_letta_error_details() -> None:
    event = {"message_type": "error_message", "detail": "could not fetch http://SECRET-URL", "error_type": "x"}
    assert redact(event, include_text=False)["detail"] == "<redacted 33 chars>"
