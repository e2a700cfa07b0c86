"""
A turn's identity, decided once per request: which session it belongs to and how it is told apart from a repeat.

`plan_turn` turns the request's headers, its validated body and the session policy into a `TurnPlan`. Load control
(the lane), idempotency (the slot), the session resolver (scope, otids, whether Letta may already hold the turn) and
the prompt overlay (the scope of its block label) all read this one plan.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from letta_hayhooks.chat_identity import TranscriptDigests, transcript_digests
from letta_hayhooks.errors import invalid_request
from letta_hayhooks.openai_request import ChatRequest, content_digest
from letta_hayhooks.tenants import Tenant

MAX_SESSION_KEY_CHARS = 256
# The scope key of requests without a session key (the agent's own thread); no client key can equal it.
DEFAULT_SESSION = "\x00default"

# Codex CLI sends `session-id` on every Responses request (one per Codex session).
SESSION_HEADERS = ("x-session-id", "x-letta-chat-key", "session-id")
OPEN_WEBUI_CHAT_HEADER = "x-openwebui-chat-id"
IDEMPOTENCY_HEADERS = ("idempotency-key", "x-idempotency-key")
# The openai SDKs number their automatic retries (0 for the first attempt).
SDK_RETRY_HEADER = "x-stainless-retry-count"
# The session scope of keyless chats found from their transcript (one per agent and tenant; heads tell them apart).
TRANSCRIPT_SESSION = "\x00transcript"
POLICIES = ("transcript", "agent", "ephemeral")
# Open WebUI's background tasks (titles, tags, follow-ups, autocomplete) start their one user message like this.
_BACKGROUND_TASK_PREFIX = "### Task:"


def session_digest(agent_id: str, session_key: str, tenant_id: str | None = None) -> str:
    """
    The agent-scoped, fixed-length id of a session key; with API keys, scoped to the key's tenant too.

    Without a tenant the digest is what it always was, so sessions made before API keys were configured stay put.
    Session keys cannot hold control characters, so the two forms never collide.
    """
    seed = f"{agent_id}\x00{session_key}" if tenant_id is None else f"{agent_id}\x00{tenant_id}\x00{session_key}"
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


def check_session_key(key: str | None) -> str | None:
    """
    Validate a client-supplied session key; blank means none.

    :raises OpenAIError: 400 for a key over 256 characters or with control characters.
    """
    if key is None:
        return None
    key = key.strip()
    if not key:
        return None
    if len(key) > MAX_SESSION_KEY_CHARS:
        msg = f"The session key is longer than {MAX_SESSION_KEY_CHARS} characters."
        raise invalid_request(msg, param="session", code="invalid_session_key")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        msg = "The session key contains control characters."
        raise invalid_request(msg, param="session", code="invalid_session_key")
    return key


def _uuid(seed: str) -> str:
    return str(uuid.UUID(bytes=hashlib.sha256(seed.encode()).digest()[:16]))


def turn_otids(scope: str, messages: Sequence[Mapping[str, Any]], positions: Sequence[int]) -> list[str]:
    """
    Deterministic otids for the user messages at `positions` of the transcript, in one pass over it.

    An otid depends on the session scope, how many user messages came before, the message itself and the assistant
    message before it: a retried or regenerated request gets the same otid, a new turn a different one.
    """
    wanted = set(positions)
    found: dict[int, str] = {}
    users_before = 0
    last_assistant: Mapping[str, Any] | None = None
    assistant_digest = ""  # of `last_assistant`, computed only when a wanted position needs it
    digested: Mapping[str, Any] | None = None
    for i, message in enumerate(messages[: max(positions) + 1] if positions else ()):
        role = message.get("role")
        if i in wanted:
            if last_assistant is not digested:
                assistant_digest = content_digest(last_assistant.get("content") or last_assistant.get("tool_calls")
                                                  or "") if last_assistant is not None else ""
                digested = last_assistant
            found[i] = _uuid(f"{scope}\x00{users_before}\x00{content_digest(message.get('content'))}"
                             f"\x00{assistant_digest}")
        if role == "user":
            users_before += 1
        elif role == "assistant":
            last_assistant = message
    return [found[p] for p in positions]


@dataclass(frozen=True)
class TurnPlan:
    """Everything that identifies one turn; computed once, read by every step (immutable, never copied)."""

    agent_id: str
    session_key: str | None  # validated; None without one
    session_source: str  # where the key came from: header, openwebui, user, none
    scope: str  # agent- (and tenant-) scoped session digest (the default thread's without a key)
    throwaway: bool  # a conversation made for this request only, deleted after it
    lane: str  # the load-control queue this turn waits in
    idempotency_key: str | None  # the client's Idempotency-Key
    idempotency_slot: str | None  # where its outcome is kept (scoped to agent and session)
    otids: tuple[str, ...]  # of the new user messages, in order
    previous_otid: str | None  # of the user message before them, when there is one
    check_duplicates: bool  # whether Letta may already hold these otids (a retry or a regenerate)
    policy: str = "transcript"  # what a request without a session key talks to
    digests: TranscriptDigests | None = None  # the chat's history and turn (chat identity)
    first_new: int = 0  # position of the new turn's first message in the transcript
    retry: bool = False  # the client says this request repeats an earlier one (Idempotency-Key, SDK retry)
    fate: str = ""  # what the plan alone knows: new (no history), throwaway; else the resolver decides
    conversation_id: str | None = None  # the Letta conversation the client named (Responses), instead of identity
    seed_history: bool = False  # that conversation is new: the transcript before the new turn is its context

    @property
    def transcript_chat(self) -> bool:
        """A keyless request whose chat is found from its transcript."""
        return (self.session_key is None and not self.throwaway and self.policy == "transcript"
                and self.conversation_id is None)

    def __deepcopy__(self, memo: dict) -> TurnPlan:
        return self  # Haystack deep-copies component inputs; a frozen plan can be shared


def _header(headers: Mapping[str, str] | None, names: Sequence[str]) -> str | None:
    if headers is None:
        return None
    for name in names:
        value = headers.get(name)
        if value:
            return value
    return None


def plan_turn(
    agent_id: str,
    request: ChatRequest,
    headers: Mapping[str, str] | None,
    *,
    policy: str,
    request_id: str,
    tenant: Tenant | None = None,
    conversation_id: str | None = None,
    seed_history: bool = False,
) -> TurnPlan:
    """
    Decide the turn's session, lane, idempotency slot and otids.

    Session key, first match wins: `X-Session-Id` / `X-Letta-Chat-Key`, Open WebUI's chat id on streaming requests,
    the body's `user`. Open WebUI's non-streaming background tasks (titles, tags) carry its chat id but must not write
    into the chat, so they get a throwaway conversation. Without a key, `policy` decides: `agent` (the agent's own
    thread) or `ephemeral` (a throwaway conversation per request).

    With a `tenant` (the request's API key), the scope is the tenant's own: the same session key sent with another
    key is another session, and the default thread's system-prompt block, otids and idempotency slots are the
    tenant's too. The default thread itself stays one Letta conversation, so its lane is shared by all tenants.

    A `conversation_id` (the Responses API's `previous_response_id` or `conversation`, resolved by the caller) names
    the Letta conversation outright: no session key or chat identity is looked for, and the conversation's turns
    wait for each other in its own lane.

    :raises OpenAIError: 400 for a malformed session key, or one that is an API key (it would be stored in Letta).
    """
    if conversation_id is not None:
        return _named_conversation_plan(agent_id, request, headers, policy, tenant, conversation_id, seed_history)
    if policy not in POLICIES:
        msg = f"policy must be one of {POLICIES}, not {policy!r}"
        raise ValueError(msg)
    key, source = _session_key(request, headers, tenant)
    open_webui_chat = _header(headers, (OPEN_WEBUI_CHAT_HEADER,))
    tenant_id, idempotency_key, retry, positions, first_new, digests = _turn_basics(request, headers, tenant)
    background_task = key is None and not request.stream and (
        open_webui_chat is not None or (not digests.has_history and _looks_like_background_task(request)))
    throwaway = background_task or (key is None and policy == "ephemeral")
    fate = "throwaway" if throwaway else ""
    if key is None and policy == "transcript" and not throwaway:
        # a keyless chat: found by its history (the resolver matches heads); otids are the turn's own, re-keyed per
        # conversation by the resolver
        scope = session_digest(agent_id, TRANSCRIPT_SESSION, tenant_id)
        anchor = digests.history if digests.has_history else digests.turn
        lane = f"chat-{session_digest(agent_id, anchor, tenant_id)}"  # the same chat's turns wait for each other
        otids = turn_otids(f"{scope}\x00{digests.history}", request.messages, positions)
        previous_otid = None
        check = retry
        fate = "" if digests.has_history else "new"
    else:
        scope = session_digest(agent_id, key if key is not None else DEFAULT_SESSION, tenant_id)
        if throwaway:
            lane = f"throwaway-{request_id}"
        elif key is None and tenant_id is not None:
            lane = session_digest(agent_id, DEFAULT_SESSION)  # every tenant's turns meet in the one default thread
        else:
            lane = scope
        otids, previous_otid, check = _keyed_otids(request, scope, key, idempotency_key, retry, digests)
    return TurnPlan(
        agent_id=agent_id,
        session_key=key,
        session_source=source if not (key is None and policy == "transcript" and not throwaway) else "transcript",
        scope=scope,
        throwaway=throwaway,
        lane=lane,
        idempotency_key=idempotency_key,
        idempotency_slot=f"{agent_id}\x00{scope}\x00{idempotency_key}" if idempotency_key else None,
        otids=tuple(otids),
        previous_otid=previous_otid,
        check_duplicates=check,
        policy=policy,
        digests=digests,
        first_new=first_new,
        retry=retry,
        fate=fate,
    )


def _turn_basics(
    request: ChatRequest, headers: Mapping[str, str] | None, tenant: Tenant | None
) -> tuple[str | None, str | None, bool, Sequence[int], int, TranscriptDigests]:
    """What every plan starts from: tenant id, Idempotency-Key, whether it is a retry, the new user messages'
    positions, the first new message, and the transcript's digests."""
    idempotency_key = _header(headers, IDEMPOTENCY_HEADERS)
    positions = request.new_turn.user_positions
    first_new = min([*positions, *request.new_turn.tool_positions], default=len(request.messages))
    return (tenant.id if tenant is not None else None, idempotency_key,
            idempotency_key is not None or _sdk_retry(headers), positions, first_new,
            transcript_digests(request.messages, first_new))


def _named_conversation_plan(
    agent_id: str, request: ChatRequest, headers: Mapping[str, str] | None, policy: str, tenant: Tenant | None,
    conversation_id: str, seed_history: bool,
) -> TurnPlan:
    """The plan of a turn in a conversation the client named: keyed by the conversation itself."""
    tenant_id, idempotency_key, retry, positions, first_new, digests = _turn_basics(request, headers, tenant)
    scope = session_digest(agent_id, f"\x00conversation\x00{conversation_id}", tenant_id)
    # only the new items arrive: a new turn unless the client says it retries (then its text tells it apart)
    seed = idempotency_key or (_sdk_retry_seed(request) if retry else uuid.uuid4().hex)
    otids = tuple(_uuid(f"{scope}\x00{seed}\x00{p}") for p in positions)
    return TurnPlan(
        agent_id=agent_id,
        session_key=None,
        session_source="conversation",
        scope=scope,
        throwaway=False,
        lane=f"conversation-{conversation_id}",  # turns of one conversation wait for each other, in any wire
        idempotency_key=idempotency_key,
        idempotency_slot=f"{agent_id}\x00{scope}\x00{idempotency_key}" if idempotency_key else None,
        otids=otids,
        previous_otid=None,
        check_duplicates=retry and not seed_history,
        policy=policy,
        digests=digests,
        first_new=first_new,
        retry=retry,
        fate="new" if seed_history else "",
        conversation_id=conversation_id,
        seed_history=seed_history,
    )


def _sdk_retry(headers: Mapping[str, str] | None) -> bool:
    value = _header(headers, (SDK_RETRY_HEADER,))
    return value is not None and value.strip().isdigit() and int(value) > 0


def _sdk_retry_seed(request: ChatRequest) -> str:
    """What makes an SDK retry of a new-message-only request recognisable: the message itself."""
    return "retry\x00" + "\x00".join(content_digest(m.get("content")) for m in request.new_turn.user_messages)


def _looks_like_background_task(request: ChatRequest) -> bool:
    """Open WebUI's title, tags, follow-up and autocomplete requests: one user message starting `### Task:`."""
    users = [m for m in request.messages if m.get("role") == "user"]
    if len(users) != 1:
        return False
    content = users[0].get("content")
    text = content if isinstance(content, str) else ""
    return text.lstrip().startswith(_BACKGROUND_TASK_PREFIX)


def _keyed_otids(
    request: ChatRequest, scope: str, key: str | None, idempotency_key: str | None, retry: bool,
    digests: TranscriptDigests,
) -> tuple[list[str], str | None, bool]:
    """Otids of a turn in a keyed session or the default thread, the previous turn's otid, whether to check Letta."""
    positions = request.new_turn.user_positions
    if key is None and not digests.has_history:
        # a one-shot request to the agent's own thread: only an Idempotency-Key makes it a retry
        seed = idempotency_key or uuid.uuid4().hex
        otids = [_uuid(f"{scope}\x00{seed}\x00{p}") for p in positions]
        previous_otid = None
        check = idempotency_key is not None
    elif key is not None and not digests.has_history:
        # a client that sends only its new message: a new turn unless it says it retries, so no history check
        seed = idempotency_key or (_sdk_retry_seed(request) if retry else uuid.uuid4().hex)
        otids = [_uuid(f"{scope}\x00{seed}\x00{p}") for p in positions]
        previous_otid = None
        check = retry
    else:
        previous_users = [i for i in range(positions[0]) if request.messages[i].get("role") == "user"][-1:] \
            if positions else []
        computed = turn_otids(scope, request.messages, previous_users + list(positions))
        previous_otid = computed[0] if previous_users else None
        otids = computed[len(previous_users):]
        check = True
    return otids, previous_otid, check


def _session_key(
    request: ChatRequest, headers: Mapping[str, str] | None, tenant: Tenant | None
) -> tuple[str | None, str]:
    """The request's session key and where it came from (header, openwebui, user, none)."""
    open_webui_chat = _header(headers, (OPEN_WEBUI_CHAT_HEADER,))
    key, source = _header(headers, SESSION_HEADERS), "header"
    if key is None and request.stream and open_webui_chat:
        key, source = open_webui_chat, "openwebui"
    if key is None:
        key, source = request.user, "user"
    key = check_session_key(key)
    if key is None:
        source = "none"
    elif tenant is not None and tenant.is_api_key(key):
        # the session key is written into the conversation's summary in Letta: never a credential
        msg = "The session key must not be an API key."
        raise invalid_request(msg, param="session", code="invalid_session_key")
    return key, source
