"""
Errors that say why: Letta's reports of a failed model call reach the client with the provider's words and the
matching status, and nothing of Letta's internals (URLs, addresses, keys).

The event texts are what Letta 0.16.8 sends when the scripted model answers HTTP 429 / 500 (`FAIL:<status>`).
"""

from __future__ import annotations

import httpx
import letta_client
import pytest

from letta_hayhooks.errors import from_letta_error, from_letta_exception, sanitize
from letta_hayhooks.letta_access.events import LettaEventTranslator

RATE_LIMIT = {
    "message_type": "error_message", "run_id": "run-1", "error_type": "llm_rate_limit",
    "message": "Rate limit exceeded for LLM model provider. Please wait before making another request.",
    "detail": "RATE_LIMIT_EXCEEDED: Rate limited by OpenAI: Error code: 429 - {'error': {'message': "
              "'scripted failure 429', 'type': 'server_error'}}",
}
PROVIDER_500 = {
    "message_type": "error_message", "run_id": "run-2", "error_type": "llm_error",
    "message": "An error occurred with the LLM request.",
    "detail": "INTERNAL_SERVER_ERROR: OpenAI API error: Error code: 500 - {'error': {'message': "
              "'scripted failure 500', 'type': 'server_error'}}",
}
CONTEXT = {
    "message_type": "error_message", "run_id": "run-3", "error_type": "context_window_overflow_in_system_prompt",
    "message": "Compaction failed because the system prompt is too large for this model's context window.",
    "detail": "CONTEXT_WINDOW_EXCEEDED: The system prompt tokens 9000 exceeds the context window 4096. "
              "({'system_prompt_token_estimate': 9000, 'context_window': 4096})",
}


def translate(*events: dict) -> LettaEventTranslator:
    translator = LettaEventTranslator()
    translator.feed({"message_type": "ping", "run_id": "run-1"})
    for event in events:
        translator.feed(event)
    translator.finish()
    return translator


@pytest.mark.parametrize(
    ("stop_reason", "event", "status", "code", "words"),
    [
        ("llm_api_error", RATE_LIMIT, 429, "rate_limit_exceeded", ["scripted failure 429", "OpenAI, HTTP 429"]),
        ("llm_api_error", PROVIDER_500, 502, "llm_api_error", ["scripted failure 500", "OpenAI, HTTP 500"]),
        ("context_window_overflow_in_system_prompt", CONTEXT, 400, "context_length_exceeded",
         ["9000 exceeds the context window 4096"]),
    ],
)
def test_stream_error_after_the_stop_reason_carries_the_providers_words(
    stop_reason: str, event: dict, status: int, code: str, words: list[str]
) -> None:
    # Letta sends the stop reason first, then its error event: the error event's detail decides
    outcome = translate({"message_type": "stop_reason", "stop_reason": stop_reason}, event).outcome
    assert outcome.error is not None
    assert (outcome.error.status, outcome.error.code) == (status, code)
    for word in words:
        assert word in outcome.error.message
    assert outcome.error_detail == event["message"]  # Letta's own words stay available to the generator


def test_the_error_event_first_is_not_replaced_by_the_stop_reason() -> None:
    outcome = translate(RATE_LIMIT, {"message_type": "stop_reason", "stop_reason": "llm_api_error"}).outcome
    assert outcome.error is not None and outcome.error.status == 429


def test_a_stop_reason_alone_still_fails_the_turn() -> None:
    assert translate({"message_type": "stop_reason", "stop_reason": "llm_api_error"}).outcome.error.status == 502
    context = translate({"message_type": "stop_reason", "stop_reason": "context_window_overflow_in_system_prompt"})
    assert context.outcome.error.code == "context_length_exceeded"


def test_retry_after_is_given_only_when_the_provider_says_how_long() -> None:
    unknown = from_letta_error(RATE_LIMIT["error_type"], RATE_LIMIT["message"], RATE_LIMIT["detail"])
    assert "Retry-After" not in unknown.headers
    told = from_letta_error("llm_rate_limit", "Rate limit exceeded", "RATE_LIMIT_EXCEEDED: Rate limited by OpenAI: "
                            "Error code: 429 - {'error': {'message': 'Limit reached. Please try again in 1.5s.'}}")
    assert told.headers["Retry-After"] == "2" and "Please try again in 1.5s" in told.message
    in_ms = from_letta_error("llm_rate_limit", None, "Error code: 429 - {'message': 'Please try again in 250ms'}")
    assert in_ms.headers["Retry-After"] == "1"


def test_nothing_internal_leaks_from_the_detail() -> None:
    detail = ("INTERNAL_SERVER_ERROR: OpenAI API error: Error code: 503 - {'error': {'message': 'upstream "
              "https://internal.example:8443/v1/chat down at 10.1.2.3:5432, key sk-proj-abcdef123456 Bearer tok123 "
              "api_key=hunter2'}}")
    error = from_letta_error("llm_error", "An error occurred with the LLM request.", detail)
    assert error.status == 502
    for secret in ("internal.example", "10.1.2.3", "sk-proj-abcdef123456", "tok123", "hunter2"):
        assert secret not in error.message
    assert "upstream [url] down at [address]" in error.message


def test_authentication_failures_never_echo_the_providers_message() -> None:
    error = from_letta_error("llm_authentication", "Authentication failed with the LLM model provider.",
                             "AUTH: OpenAI API error: Error code: 401 - {'error': {'message': 'Incorrect API key "
                             "provided: sk-abc***xyz'}}")
    assert error.status == 502 and error.code == "llm_authentication_failed" and "sk-" not in error.message


def test_letta_error_bodies_outside_a_stream_map_the_same_way() -> None:
    body = {"error": {"type": "llm_rate_limit", "message": RATE_LIMIT["message"], "detail": RATE_LIMIT["detail"]}}
    response = httpx.Response(429, request=httpx.Request("POST", "http://letta.internal/v1/x"), json=body)
    exc = letta_client.RateLimitError("rate limited", response=response, body=response.json())
    error = from_letta_exception(exc)
    assert (error.status, error.code) == (429, "rate_limit_exceeded") and "scripted failure 429" in error.message
    busy = httpx.Response(429, headers={"Retry-After": "3"}, request=httpx.Request("POST", "http://letta/v1/x"),
                          json={"detail": "too many"})
    own = from_letta_exception(letta_client.RateLimitError("busy", response=busy, body=busy.json()))
    assert own.status == 429 and own.headers["Retry-After"] == "3"


def test_sanitize_keeps_one_short_line() -> None:
    assert sanitize("a\n  b\tc") == "a b c"
    assert len(sanitize("x" * 1000)) == 300
