"""
Validation of OpenAI chat-completion requests and the split of a transcript into what Letta has not seen yet.

Clients send the whole transcript on every request. A Letta agent already holds the history, so only the trailing
part is forwarded: the user message(s) after the last assistant message, or the `role: "tool"` results that answer
the assistant's last tool calls.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from letta_hayhooks.errors import invalid_request, too_large

TOOL_ACTIVITY_MODES = frozenset({"none", "reasoning", "status", "delta"})
_ROLES = {"system", "developer", "user", "assistant", "tool"}
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_IMAGE_DATA_URL = re.compile(r"^data:(image/[A-Za-z0-9.+-]+);base64,(.*)$", re.S)


class ReadOnlyList(Sequence):
    """
    A read-only sequence that pipeline components share instead of copying.

    Haystack deep-copies every component input. A long chat's transcript (and a coding tool's dozens of tool
    schemas) would be copied several times per turn, walking every message; nothing in the pipeline changes them.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[Any] = ()) -> None:
        self._items = tuple(items)

    def __getitem__(self, index: Any) -> Any:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ReadOnlyList | list | tuple):
            return list(self._items) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __deepcopy__(self, memo: dict) -> ReadOnlyList:
        return self

    def __repr__(self) -> str:
        return f"ReadOnlyList({list(self._items)!r})"


@dataclass
class NewTurn:
    """The part of the transcript that Letta has not seen."""

    user_messages: list[dict[str, Any]] = field(default_factory=list)  # OpenAI dicts, in order
    user_positions: list[int] = field(default_factory=list)  # their indexes in the transcript
    tool_results: list[dict[str, Any]] = field(default_factory=list)  # OpenAI role=tool dicts


@dataclass
class ChatRequest:
    """A validated chat-completion request."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    system_prompt: str | None
    new_turn: NewTurn
    tools: list[dict[str, Any]]
    tool_choice: str
    user: str | None
    tool_activity: str | None = None


def message_text(content: Any) -> str:
    """The text of an OpenAI message content (string or parts; non-text parts are skipped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")


def _check_content(message: dict[str, Any], i: int) -> None:  # noqa: PLR0912 - one branch per content kind
    role = message["role"]
    content = message.get("content")
    param = f"messages[{i}].content"
    if content is None:
        if role == "assistant" and message.get("tool_calls"):
            return
        if role in ("user", "system", "developer", "tool"):
            msg = f"Message {i} ({role}) has no content."
            raise invalid_request(msg, param=param)
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        msg = f"Message {i} content must be a string or a list of content parts."
        raise invalid_request(msg, param=param)
    for j, part in enumerate(content):
        part_param = f"{param}[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            msg = f"Content part {j} of message {i} must be an object with a 'type'."
            raise invalid_request(msg, param=part_param)
        kind = part["type"]
        if kind == "text":
            if not isinstance(part.get("text"), str):
                msg = f"Text part {j} of message {i} needs a string 'text'."
                raise invalid_request(msg, param=part_param)
        elif kind == "image_url":
            if role != "user":
                msg = f"Images are only supported in user messages (message {i})."
                raise invalid_request(msg, param=part_param)
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image if isinstance(image, str) else None
            if not isinstance(url, str) or not (url.startswith(("http://", "https://")) or _IMAGE_DATA_URL.match(url)):
                msg = f"Image part {j} of message {i} needs an http(s) URL or a base64 data:image/... URL."
                raise invalid_request(
                    msg,
                    param=part_param,
                )
        elif kind == "refusal" and role == "assistant":
            continue
        else:
            msg = f"Content part type '{kind}' is not supported (message {i})."
            raise invalid_request(msg, param=part_param)


def _check_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("tools")
    if raw is None:
        return []
    if not isinstance(raw, list):
        msg = "'tools' must be a list of function tools."
        raise invalid_request(msg, param="tools")
    tools: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, tool in enumerate(raw):
        param = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            msg = f"Tool {i} must be {{'type': 'function', 'function': {{...}}}}."
            raise invalid_request(msg, param=param)
        fn = tool.get("function")
        if not isinstance(fn, dict):
            msg = f"Tool {i} has no 'function' object."
            raise invalid_request(msg, param=param)
        name = fn.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            msg = f"Tool {i} needs a name of 1-64 letters, digits, '_' or '-'."
            raise invalid_request(
                msg, param=f"{param}.function.name"
            )
        if name in seen:
            msg = f"Duplicate tool name '{name}'."
            raise invalid_request(msg, param=f"{param}.function.name")
        seen.add(name)
        description = fn.get("description")
        if description is not None and not isinstance(description, str):
            msg = f"Tool '{name}' description must be a string."
            raise invalid_request(msg, param=f"{param}.function.description")
        parameters = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
            msg = f"Tool '{name}' parameters must be a JSON schema object with type 'object'."
            raise invalid_request(
                msg,
                param=f"{param}.function.parameters",
            )
        properties = parameters.get("properties", {})
        if not isinstance(properties, dict) or not all(isinstance(v, dict) for v in properties.values()):
            msg = f"Tool '{name}' parameters.properties must map names to schemas."
            raise invalid_request(
                msg, param=f"{param}.function.parameters"
            )
        required = parameters.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            msg = f"Tool '{name}' parameters.required must be a list of names."
            raise invalid_request(
                msg, param=f"{param}.function.parameters"
            )
        tools.append({"name": name, "description": description or "", "parameters": parameters})
    return tools


def _check_tool_choice(body: dict[str, Any]) -> str:
    choice = body.get("tool_choice")
    if choice is None or choice == "auto":
        return "auto"
    if choice == "none":
        return "none"
    if choice == "required" or isinstance(choice, dict):
        msg = (
            "tool_choice 'required' or a named function is not supported: Letta lets the agent decide when to call "
            "client tools. Use 'auto' or 'none'."
        )
        raise invalid_request(
            msg,
            param="tool_choice",
        )
    msg = "tool_choice must be 'auto', 'none', 'required' or a function."
    raise invalid_request(msg, param="tool_choice")


def split_new_turn(messages: list[dict[str, Any]]) -> NewTurn:
    """The trailing messages Letta has not seen: user messages, and tool results with any user text after them."""
    last_assistant = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    turn = NewTurn()
    for i in range(last_assistant + 1, len(messages)):
        message = messages[i]
        if message["role"] == "user":
            turn.user_messages.append(message)
            turn.user_positions.append(i)
        elif message["role"] == "tool":
            turn.tool_results.append(message)
    return turn


def _check_message(message: Any, i: int) -> None:
    if not isinstance(message, dict):
        msg = f"Message {i} must be an object."
        raise invalid_request(msg, param=f"messages[{i}]")
    role = message.get("role")
    if role not in _ROLES:
        msg = f"Message {i} has role {role!r}; expected one of {sorted(_ROLES)}."
        raise invalid_request(msg, param=f"messages[{i}].role")
    _check_content(message, i)
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        msg = f"Tool message {i} needs a 'tool_call_id'."
        raise invalid_request(msg, param=f"messages[{i}].tool_call_id")
    calls = message.get("tool_calls")
    if role == "assistant" and calls is not None and (
        not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("id"), str) for c in calls)
    ):
        msg = f"Message {i} tool_calls must be a list of calls with ids."
        raise invalid_request(msg, param=f"messages[{i}].tool_calls")


def validate_chat_request(model: str, messages: Any, body: dict[str, Any], *, max_system_bytes: int) -> ChatRequest:
    """
    Check a request and extract what the pipeline needs.

    :raises OpenAIError: 400 for malformed input, 413 for a system prompt above `max_system_bytes`.
    """
    if not isinstance(model, str) or not model.strip():
        msg = "'model' must be a non-empty string."
        raise invalid_request(msg, param="model")
    if not isinstance(messages, list) or not messages:
        msg = "'messages' must be a non-empty list."
        raise invalid_request(msg, param="messages")
    n = body.get("n")
    if n is not None and n != 1:
        msg = "Only n=1 is supported: a Letta agent gives one answer per turn."
        raise invalid_request(msg, param="n")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        msg = "'stream' must be a boolean."
        raise invalid_request(msg, param="stream")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        msg = "'stream_options' must be an object."
        raise invalid_request(msg, param="stream_options")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        msg = "'user' must be a string."
        raise invalid_request(msg, param="user")

    for i, message in enumerate(messages):
        _check_message(message, i)
    if not any(m["role"] == "user" for m in messages):
        msg = "The conversation has no user message."
        raise invalid_request(msg, param="messages")

    system_parts = [message_text(m.get("content")) for m in messages if m["role"] in ("system", "developer")]
    system_prompt = "\n\n".join(part for part in system_parts if part) or None
    if system_prompt is not None and len(system_prompt.encode("utf-8")) > max_system_bytes:
        msg = f"The system prompt is {len(system_prompt.encode('utf-8'))} bytes; the limit is {max_system_bytes}."
        raise too_large(
            msg,
            param="messages",
        )

    new_turn = split_new_turn(messages)
    if not new_turn.user_messages and not new_turn.tool_results:
        msg = "Nothing to send: the conversation must end with a user message or tool results."
        raise invalid_request(
            msg, param="messages"
        )
    tools = _check_tools(body)
    tool_choice = _check_tool_choice(body)
    tool_activity = body.get("letta_tool_activity")
    if tool_activity is not None and tool_activity not in TOOL_ACTIVITY_MODES:
        msg = f"letta_tool_activity must be one of {sorted(TOOL_ACTIVITY_MODES)}."
        raise invalid_request(msg,
                              param="letta_tool_activity")
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=bool(stream_options.get("include_usage")),
        system_prompt=system_prompt,
        new_turn=new_turn,
        tools=tools,
        tool_choice=tool_choice,
        user=user,
        tool_activity=tool_activity,
    )


def to_letta_content(message: dict[str, Any]) -> str | list[dict[str, Any]]:
    """OpenAI user content -> Letta content: text parts joined, images as Letta image parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    texts: list[str] = []
    for part in content or []:
        if part.get("type") == "text":
            texts.append(part["text"])
        elif part.get("type") == "image_url":
            image = part["image_url"]
            url = image.get("url") if isinstance(image, dict) else image
            detail = image.get("detail") if isinstance(image, dict) else None
            if texts:
                parts.append({"type": "text", "text": "\n".join(texts)})
                texts = []
            match = _IMAGE_DATA_URL.match(url)
            if match:
                source: dict[str, Any] = {"type": "base64", "media_type": match.group(1), "data": match.group(2)}
            else:
                source = {"type": "url", "url": url}
            if detail:
                source["detail"] = detail
            parts.append({"type": "image", "source": source})
    if texts:
        parts.append({"type": "text", "text": "\n".join(texts)})
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


def content_digest(content: Any) -> str:
    """A stable digest of a message content (string or parts)."""
    raw = content if isinstance(content, str) else json.dumps(content, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()
