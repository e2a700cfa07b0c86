"""Session keys, deterministic otids and message ordering (no Letta needed)."""

from __future__ import annotations

import pytest
from haystack import Pipeline
from letta_hayhooks.components import SessionResolver
from letta_hayhooks.components.session_resolver import check_session_key, chronological, session_digest, turn_otid

from letta_hayhooks.errors import OpenAIError


def test_session_digest_is_scoped_to_the_agent() -> None:
    assert session_digest("agent-1", "chat") != session_digest("agent-2", "chat")
    assert session_digest("agent-1", "chat") == session_digest("agent-1", "chat")
    assert len(session_digest("agent-1", "x" * 256)) == 32


@pytest.mark.parametrize("key", ["k" * 257, "bad\x00key", "tab\tkey", "del\x7fkey"])
def test_bad_session_keys(key: str) -> None:
    with pytest.raises(OpenAIError) as error:
        check_session_key(key)
    assert error.value.status == 400 and error.value.code == "invalid_session_key"


def test_blank_key_is_no_key() -> None:
    assert check_session_key("  ") is None and check_session_key(None) is None
    assert check_session_key(" chat-1 ") == "chat-1"


def test_otid_is_stable_for_a_retry_and_new_for_a_new_turn() -> None:
    first = [{"role": "user", "content": "hello"}]
    second = [*first, {"role": "assistant", "content": "You said: hello"}, {"role": "user", "content": "hello"}]
    assert turn_otid("s", first, 0) == turn_otid("s", list(first), 0)
    assert turn_otid("s", first, 0) != turn_otid("s", second, 2)  # same words, a later turn
    assert turn_otid("s", first, 0) != turn_otid("other", first, 0)
    regenerated = [*second[:2], {"role": "user", "content": "hello"}]
    assert turn_otid("s", second, 2) == turn_otid("s", regenerated, 2)


def test_chronological_order_whatever_the_server_returns() -> None:
    asc = [{"date": "2026-01-01T00:00:01"}, {"date": "2026-01-01T00:00:02"}]
    assert chronological(asc, assume_ascending=False) == asc
    assert chronological(list(reversed(asc)), assume_ascending=True) == asc
    same = [{"date": "x", "n": 1}, {"date": "x", "n": 2}]
    assert chronological(same, assume_ascending=False) == list(reversed(same))


def test_policy_is_checked_and_serialised() -> None:
    with pytest.raises(ValueError, match="policy"):
        SessionResolver(policy="shared")
    pipeline = Pipeline()
    pipeline.add_component("session", SessionResolver(policy="ephemeral"))
    assert Pipeline.loads(pipeline.dumps()).get_component("session").policy == "ephemeral"
