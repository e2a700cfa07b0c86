"""
The OpenAI Responses wire: requests as the chat turns the pipeline takes, and the pipeline's chunks as Responses
objects and server-sent events.

- `parse_request` checks a `POST /v1/responses` body and keeps what the turn needs: the input items, the
  conversation it continues (`previous_response_id`, `conversation`), the fields echoed in the response;
- `to_chat` turns input items (item references already resolved) into Chat Completions messages, tools and
  parameters: `instructions` and `system`/`developer` items become the system prompt, `function_call` /
  `function_call_output` items assistant tool calls and tool results, reasoning items are left out (Letta keeps
  the agent's own reasoning);
- `ResponseEncoder` turns one turn's `StreamingChunk`s into the event sequence the openai SDK's `responses.stream()`
  accumulates (every event with its `sequence_number`) and the final `response` object;
- ids: a response is named after its Letta run (`resp_<run uuid>`), so the run (and through it the conversation,
  the items and the usage) is found again in Letta by any process; item ids derive from the response id.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from haystack.dataclasses import StreamingChunk

from letta_hayhooks.errors import OpenAIError, invalid_request

RESPONSE_PREFIX = "resp_"
CONVERSATION_PREFIX = "conv_"
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
# Item ids this server issues: <kind>_<response hex>_<output index>.
_ITEM_ID = re.compile(r"^(rs|msg|fc)_([0-9a-f]{32})_(\d{1,4})$")
# Tool types a Letta agent cannot run for the client (OpenAI's hosted tools, Codex's namespaces): ignored.
HOSTED_TOOL_TYPES = frozenset({
    "web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11", "file_search",
    "computer_use_preview", "computer_use", "code_interpreter", "image_generation", "mcp", "local_shell", "shell",
    "apply_patch", "custom", "namespace", "tool_search",
})
# Input items that record a hosted tool's call or result: nothing for the agent to continue from.
_IGNORED_ITEM_SUFFIXES = ("_call", "_call_output")
_UNSUPPORTED_FIELDS = {
    "background": "background responses are not served: a Letta turn answers while the request is open.",
    "prompt": "reusable prompt templates are not served: send 'instructions' and 'input'.",
}


def response_id_for(run_id: str | None) -> str:
    """The response id of a Letta run (`run-<uuid>` -> `resp_<hex>`); a fresh one when the run is unknown."""
    if run_id and run_id.startswith("run-"):
        try:
            return RESPONSE_PREFIX + uuid.UUID(run_id[4:]).hex
        except ValueError:
            pass
    return RESPONSE_PREFIX + uuid.uuid4().hex


def run_id_of(response_id: str) -> str | None:
    """The Letta run a response id names; None for an id this server did not issue."""
    hex_part = response_id.removeprefix(RESPONSE_PREFIX)
    if not response_id.startswith(RESPONSE_PREFIX) or not _HEX32.match(hex_part):
        return None
    return f"run-{uuid.UUID(hex_part)}"


def conversation_id_for(block_id: str) -> str:
    """The OpenAI conversation id of the Letta block that records the conversation (`block-<uuid>` -> `conv_<hex>`)."""
    return CONVERSATION_PREFIX + uuid.UUID(block_id.removeprefix("block-")).hex


def block_id_of(conversation_id: str) -> str | None:
    """The Letta block of an OpenAI conversation id; None for an id this server did not issue."""
    hex_part = conversation_id.removeprefix(CONVERSATION_PREFIX)
    if not conversation_id.startswith(CONVERSATION_PREFIX) or not _HEX32.match(hex_part):
        return None
    return f"block-{uuid.UUID(hex_part)}"


def item_reference(item_id: str) -> tuple[str, str, int] | None:
    """`(kind, response id, output index)` of an item id this server issued; None otherwise."""
    match = _ITEM_ID.match(item_id)
    if match is None:
        return None
    return match.group(1), RESPONSE_PREFIX + match.group(2), int(match.group(3))


@dataclass
class ResponsesRequest:
    """A checked `POST /v1/responses` body: what the turn needs and what the response echoes."""

    model: str
    stream: bool
    items: list[dict[str, Any]]  # the input as items (a string input is one user message)
    instructions: str | None
    previous_response_id: str | None
    conversation: str | None
    store: bool
    echo: dict[str, Any] = field(default_factory=dict)  # request fields the response object repeats
    ignored_tools: list[str] = field(default_factory=list)  # tool types the agent cannot run (logged)

    @property
    def references(self) -> list[str]:
        """Ids of the `item_reference` items to resolve before `to_chat`."""
        return [item["id"] for item in self.items if item.get("type") == "item_reference"]


def _check_type(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], expected: str) -> None:
    value = body.get(name)
    if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and bool not in (
            kind if isinstance(kind, tuple) else (kind,)))):
        msg = f"'{name}' must be {expected}."
        raise invalid_request(msg, param=name)


def parse_request(body: Mapping[str, Any]) -> ResponsesRequest:  # noqa: PLR0912, PLR0915 - one check per field
    """
    Check the Responses-specific fields of a request body (the chat checks follow in `to_chat`'s result).

    :raises OpenAIError: 400 naming the field.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        msg = "'model' is required."
        raise invalid_request(msg, param="model")
    for name, why in _UNSUPPORTED_FIELDS.items():
        if body.get(name):
            msg = f"'{name}' is not supported: {why}"
            raise invalid_request(msg, param=name, code="unsupported_parameter")
    _check_type(body, "instructions", str, "a string")
    _check_type(body, "previous_response_id", str, "a string")
    _check_type(body, "store", bool, "a boolean")
    _check_type(body, "include", list, "a list of strings")
    _check_type(body, "reasoning", dict, "an object")
    _check_type(body, "text", dict, "an object")
    _check_type(body, "prompt_cache_key", str, "a string")
    _check_type(body, "client_metadata", dict, "an object")
    _check_type(body, "max_tool_calls", int, "an integer")
    if body.get("truncation") not in (None, "auto", "disabled"):
        msg_0 = "'truncation' must be 'auto' or 'disabled'."
        raise invalid_request(msg_0, param="truncation")
    max_output = body.get("max_output_tokens")
    if max_output is not None and (not isinstance(max_output, int) or isinstance(max_output, bool) or max_output < 16):
        msg_0 = "'max_output_tokens' must be an integer of at least 16."
        raise invalid_request(msg_0, param="max_output_tokens")
    text_format = (body.get("text") or {}).get("format")
    if isinstance(text_format, dict) and text_format.get("type") not in (None, "text"):
        msg = "'text.format' is not supported: a Letta agent cannot be held to JSON output; omit it or use 'text'."
        raise invalid_request(msg, param="text.format", code="unsupported_parameter")
    conversation = body.get("conversation")
    if isinstance(conversation, dict):
        conversation = conversation.get("id")
    if conversation is not None and (not isinstance(conversation, str) or not conversation):
        msg_0 = "'conversation' must be a conversation id or {'id': ...}."
        raise invalid_request(msg_0, param="conversation")
    previous = body.get("previous_response_id")
    if previous and conversation:
        msg = "'previous_response_id' and 'conversation' cannot be used together."
        raise invalid_request(msg, param="conversation")
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        items = [{"type": "message", "role": "user", "content": raw_input}]
    elif isinstance(raw_input, list) and all(isinstance(item, dict) for item in raw_input):
        items = [dict(item) for item in raw_input]
    elif raw_input is None and (previous or conversation):
        items = []
    else:
        msg_0 = "'input' must be a string or a list of input items."
        raise invalid_request(msg_0, param="input")
    tools, ignored = _function_tools(body.get("tools"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        msg_0 = "'stream' must be a boolean."
        raise invalid_request(msg_0, param="stream")
    echo = {
        "instructions": body.get("instructions"),
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": tools,
        "previous_response_id": previous,
        "conversation": {"id": conversation} if conversation else None,
        "store": body.get("store", True),
        "max_output_tokens": max_output,
        "reasoning": {"effort": None, "summary": None, **(body.get("reasoning") or {})},
        "text": {"format": {"type": "text"}, **{k: v for k, v in (body.get("text") or {}).items() if k != "format"}},
        "truncation": body.get("truncation") or "disabled",
        "prompt_cache_key": body.get("prompt_cache_key"),
        "user": body.get("user"),
    }
    return ResponsesRequest(
        model=model, stream=stream, items=items, instructions=body.get("instructions"), previous_response_id=previous,
        conversation=conversation, store=body.get("store", True) is not False, echo=echo, ignored_tools=ignored,
    )


def _function_tools(raw: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """The request's function tools (Responses shape) and the types of the tools left out."""
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        msg = "'tools' must be a list of tools."
        raise invalid_request(msg, param="tools")
    tools: list[dict[str, Any]] = []
    ignored: list[str] = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            msg = f"Tool {i} must be an object with a 'type'."
            raise invalid_request(msg, param=f"tools[{i}]")
        if tool["type"] == "function":
            tools.append(tool)
        else:
            ignored.append(tool["type"])  # hosted and client-specific tool types: the agent cannot run them
    return tools, ignored


def _text_of_part(part: Mapping[str, Any], role: str, param: str) -> dict[str, Any]:
    """One Responses content part as a Chat Completions part."""
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text", "summary_text") and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image":
        if part.get("file_id") is not None or not isinstance(part.get("image_url"), str):
            msg = f"The image at {param} needs an 'image_url' (https or a base64 data:image/... URL); file ids are " \
                  "not served."
            raise invalid_request(msg, param=param)
        image: dict[str, Any] = {"url": part["image_url"]}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        if role != "user":
            msg = f"Images are only supported in user messages ({param})."
            raise invalid_request(msg, param=param)
        return {"type": "image_url", "image_url": image}
    msg = f"Content part type '{kind}' is not supported ({param})."
    raise invalid_request(msg, param=param)


def _message(item: Mapping[str, Any], i: int) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        msg = f"Input item {i} has role {role!r}; expected user, assistant, system or developer."
        raise invalid_request(msg, param=f"input[{i}].role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        msg = f"Input item {i} content must be a string or a list of content parts."
        raise invalid_request(msg, param=f"input[{i}].content")
    parts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            msg = f"Content part {j} of input item {i} must be an object."
            raise invalid_request(msg, param=f"input[{i}].content[{j}]")
        parts.append(_text_of_part(part, role, f"input[{i}].content[{j}]"))
    if role != "user" or all(p["type"] == "text" for p in parts):
        # text only: one string, as chat clients send it (the chat identity digests text)
        return {"role": role, "content": "\n".join(p["text"] for p in parts if p["type"] == "text")}
    return {"role": role, "content": parts}


def _output_text(output: Any, i: int) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        texts = [p.get("text", "") for p in output if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "\n".join(texts)
    msg = f"Input item {i}: 'output' must be a string or a list of content parts."
    raise invalid_request(msg, param=f"input[{i}].output")


@dataclass
class ChatTurn:
    """A Responses request as the Chat Completions request the pipeline takes."""

    messages: list[dict[str, Any]]
    body: dict[str, Any]
    ignored_items: list[str]


def to_chat(request: ResponsesRequest, body: Mapping[str, Any]) -> ChatTurn:  # noqa: PLR0912, PLR0915 - per item
    """
    The input items (item references resolved) as Chat Completions messages, and the chat body around them.

    Consecutive assistant messages and function calls become one assistant message (text plus `tool_calls`), as a
    chat client keeps an answer; a `function_call_output` whose call is not in the input (a continuation that sends
    only the new items) gets an assistant message naming the call, so the results pass the chat checks.

    :raises OpenAIError: 400 for a malformed item.
    """
    messages: list[dict[str, Any]] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    ignored: list[str] = []
    assistant: dict[str, Any] | None = None  # the assistant message being assembled

    def close_assistant() -> None:
        nonlocal assistant
        if assistant is not None:
            if not assistant.get("tool_calls"):
                assistant.pop("tool_calls", None)
            messages.append(assistant)
            assistant = None

    for i, item in enumerate(request.items):
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            converted = _message(item, i)
            if converted["role"] == "assistant":
                if assistant is not None and assistant.get("tool_calls"):
                    close_assistant()
                if assistant is None:
                    assistant = {"role": "assistant", "content": "", "tool_calls": []}
                text = converted["content"]
                assistant["content"] = f"{assistant['content']}\n\n{text}" if assistant["content"] else text
                continue
            close_assistant()
            messages.append(converted)
        elif kind == "function_call":
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                msg = f"Input item {i} (function_call) needs 'call_id' and 'name'."
                raise invalid_request(msg, param=f"input[{i}]")
            if assistant is None:
                assistant = {"role": "assistant", "content": "", "tool_calls": []}
            arguments = item.get("arguments")
            assistant["tool_calls"].append({"id": call_id, "type": "function", "function": {
                "name": name, "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments or {})}})
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                msg = f"Input item {i} (function_call_output) needs a 'call_id'."
                raise invalid_request(msg, param=f"input[{i}].call_id")
            close_assistant()
            if not _answers_a_call(messages, call_id):
                # a continuation sends only the result: the call it answers is in Letta, named here for the checks
                _pending_calls(messages).append({"id": call_id, "type": "function",
                                                 "function": {"name": "unknown", "arguments": "{}"}})
            result: dict[str, Any] = {"role": "tool", "tool_call_id": call_id,
                                      "content": _output_text(item.get("output"), i)}
            if item.get("status") == "incomplete":
                result["status"] = "error"
            messages.append(result)
        elif kind == "reasoning":
            continue  # the agent's reasoning stays in Letta; clients replay it only for OpenAI's models
        elif isinstance(kind, str) and kind.endswith(_IGNORED_ITEM_SUFFIXES):
            ignored.append(kind)
        else:
            msg = f"Input item {i} has type {kind!r}, which is not supported."
            raise invalid_request(msg, param=f"input[{i}].type")
    close_assistant()
    return ChatTurn(messages=messages, body=_chat_body(request, body, messages), ignored_items=ignored)


def _answers_a_call(messages: list[dict[str, Any]], call_id: str) -> bool:
    for message in reversed(messages):
        if message["role"] == "assistant":
            return any(call.get("id") == call_id for call in message.get("tool_calls") or [])
    return False


def _pending_calls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tool calls of the assistant message the trailing tool results answer (made when there is none)."""
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "tool":
        for message in reversed(messages):
            if message["role"] == "assistant":
                return message.setdefault("tool_calls", [])
    made: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": []}
    messages.append(made)
    return made["tool_calls"]


def _chat_body(request: ResponsesRequest, body: Mapping[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat body whose checks (types and ranges, tools, tool_choice) the Responses fields go through."""
    chat: dict[str, Any] = {"model": request.model, "messages": messages, "stream": request.stream}
    tools = [{"type": "function", "function": {k: v for k, v in tool.items() if k in ("name", "description",
                                                                                     "parameters")}}
             for tool in request.echo["tools"]]
    if tools:
        chat["tools"] = tools
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        chat["tool_choice"] = choice
    for name in ("temperature", "top_p", "parallel_tool_calls", "metadata", "store", "user"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = body["max_output_tokens"]
    if isinstance(body.get("letta_tool_activity"), str):
        chat["letta_tool_activity"] = body["letta_tool_activity"]
    return chat


# ---- output

def usage_object(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """Chat Completions usage as Responses usage."""
    usage = usage or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int((usage.get("prompt_tokens_details") or {}).get(
            "cached_tokens") or 0), "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int((usage.get("completion_tokens_details") or {}).get(
            "reasoning_tokens") or 0)},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def error_object(error: OpenAIError) -> dict[str, Any]:
    """A turn's failure as a response's `error` (the Responses error codes: rate limits, else server errors)."""
    code = "rate_limit_exceeded" if error.status == 429 else "server_error"
    return {"code": code, "message": error.message}


class ResponseEncoder:
    """
    Encodes one turn's `StreamingChunk`s as Responses stream events and the final `response` object.

    Output items follow the answer: each stretch of reasoning is a `reasoning` item with summary text, each stretch
    of text a `message` item with one `output_text` part, each client tool call a `function_call` item. Every event
    carries a `sequence_number`; the lifecycle is `response.created`, `response.in_progress`, the items (added,
    deltas, done), then exactly one of `response.completed`, `response.incomplete` or `response.failed`.
    """

    def __init__(self, response_id: str, model: str, echo: Mapping[str, Any], *,
                 created_at: float | None = None) -> None:
        self.response_id = response_id
        self.hex = response_id.removeprefix(RESPONSE_PREFIX)
        self.model = model
        self.echo = dict(echo)
        self.created_at = int(created_at if created_at is not None else time.time())
        self.output: list[dict[str, Any]] = []
        self.final: dict[str, Any] | None = None
        self._sequence = 0
        self._open: dict[str, Any] | None = None  # the item receiving deltas
        self._text: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}  # tool-call index -> its function_call item

    # ---- events
    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def response(self, status: str, *, usage: Mapping[str, Any] | None = None,
                 error: dict[str, Any] | None = None, incomplete: str | None = None) -> dict[str, Any]:
        """The `response` object in its current state."""
        done = status in ("completed", "incomplete")
        return {
            "id": self.response_id, "object": "response", "created_at": self.created_at, "status": status,
            "background": False, "error": error, "incomplete_details": {"reason": incomplete} if incomplete else None,
            "model": self.model, "output": [dict(item) for item in self.output if item.get("status") != "in_progress"]
            if status == "failed" else list(self.output),
            "usage": usage_object(usage) if done else None,
            "completed_at": int(time.time()) if done else None,
            **self.echo,
        }

    def start(self) -> list[dict[str, Any]]:
        """`response.created` and `response.in_progress`."""
        snapshot = self.response("in_progress")
        return [self._event("response.created", response=snapshot),
                self._event("response.in_progress", response=snapshot)]

    def feed(self, chunk: StreamingChunk) -> list[dict[str, Any]]:
        """The events of one chunk (meta-only chunks give none)."""
        events: list[dict[str, Any]] = []
        if chunk.reasoning is not None and chunk.reasoning.reasoning_text:
            events += self._open_item("reasoning")
            events.append(self._delta(chunk.reasoning.reasoning_text))
        if chunk.content:
            events += self._open_item("message")
            events.append(self._delta(chunk.content))
        for delta in chunk.tool_calls or []:
            if delta.id is not None:
                events += self._close()
                item = {"id": f"fc_{self.hex}_{len(self.output)}", "type": "function_call", "status": "in_progress",
                        "call_id": delta.id, "name": delta.tool_name or "", "arguments": ""}
                self._calls[delta.index] = item
                events += self._add(item)
            item = self._calls.get(delta.index)
            if item is not None and delta.arguments and item is self._open:
                item["arguments"] += delta.arguments
                events.append(self._event("response.function_call_arguments.delta", item_id=item["id"],
                                          output_index=self._index(item), delta=delta.arguments))
        return events

    def complete(self, finish_reason: str | None, usage: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        """Close the open item and end the response (`completed`, or `incomplete` when cut off at a limit)."""
        events = self._close()
        if finish_reason == "length":
            self.final = self.response("incomplete", usage=usage, incomplete="max_output_tokens")
            return [*events, self._event("response.incomplete", response=self.final)]
        self.final = self.response("completed", usage=usage)
        return [*events, self._event("response.completed", response=self.final)]

    def fail(self, error: OpenAIError) -> list[dict[str, Any]]:
        """End the response as failed (nothing may follow)."""
        self.final = self.response("failed", error=error_object(error))
        return [self._event("response.failed", response=self.final)]

    # ---- items
    def _index(self, item: dict[str, Any]) -> int:
        return int(item["id"].rsplit("_", 1)[1])

    def _add(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        self.output.append(item)
        self._open = item
        self._text = []
        return [self._event("response.output_item.added", output_index=self._index(item), item=dict(item))]

    def _open_item(self, kind: str) -> list[dict[str, Any]]:
        if self._open is not None and self._open["type"] == kind:
            return []
        events = self._close()
        index = len(self.output)
        if kind == "reasoning":
            item = {"id": f"rs_{self.hex}_{index}", "type": "reasoning", "summary": []}
            events += self._add(item)
            events.append(self._event("response.reasoning_summary_part.added", item_id=item["id"],
                                      output_index=index, summary_index=0,
                                      part={"type": "summary_text", "text": ""}))
        else:
            item = {"id": f"msg_{self.hex}_{index}", "type": "message", "status": "in_progress", "role": "assistant",
                    "content": []}
            events += self._add(item)
            events.append(self._event("response.content_part.added", item_id=item["id"], output_index=index,
                                      content_index=0, part=_text_part("")))
        return events

    def _delta(self, text: str) -> dict[str, Any]:
        item = self._open
        assert item is not None
        self._text.append(text)
        if item["type"] == "reasoning":
            return self._event("response.reasoning_summary_text.delta", item_id=item["id"],
                               output_index=self._index(item), summary_index=0, delta=text)
        return self._event("response.output_text.delta", item_id=item["id"], output_index=self._index(item),
                           content_index=0, delta=text, logprobs=[])

    def _close(self) -> list[dict[str, Any]]:
        item = self._open
        if item is None:
            return []
        self._open = None
        index = self._index(item)
        text = "".join(self._text)
        events: list[dict[str, Any]] = []
        if item["type"] == "reasoning":
            part = {"type": "summary_text", "text": text}
            item["summary"] = [part]
            events.append(self._event("response.reasoning_summary_text.done", item_id=item["id"],
                                      output_index=index, summary_index=0, text=text))
            events.append(self._event("response.reasoning_summary_part.done", item_id=item["id"],
                                      output_index=index, summary_index=0, part=part))
        elif item["type"] == "message":
            item["content"] = [_text_part(text)]
            item["status"] = "completed"
            events.append(self._event("response.output_text.done", item_id=item["id"], output_index=index,
                                      content_index=0, text=text, logprobs=[]))
            events.append(self._event("response.content_part.done", item_id=item["id"], output_index=index,
                                      content_index=0, part=_text_part(text)))
        else:
            item["status"] = "completed"
            # no `name`: OpenAI never sent it on this event, and the openai SDK's type has none (the item has it)
            events.append(self._event("response.function_call_arguments.done", item_id=item["id"],
                                      output_index=index, arguments=item["arguments"]))
        events.append(self._event("response.output_item.done", output_index=index, item=dict(item)))
        return events


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def encode_all(encoder: ResponseEncoder, chunks: Iterable[StreamingChunk]) -> dict[str, Any]:
    """The final response object of a finished sequence of chunks (a stored response, a non-stream answer)."""
    finish: str | None = None
    usage: Mapping[str, Any] | None = None
    for chunk in chunks:
        encoder.feed(chunk)
        if chunk.finish_reason is not None:
            finish, usage = chunk.finish_reason, (chunk.meta or {}).get("usage")
    encoder.complete(finish, usage)
    assert encoder.final is not None
    return encoder.final


def sse_frame(event: Mapping[str, Any]) -> str:
    """One event as OpenAI frames Responses events: its type on the `event:` line, the event on `data:`."""
    return f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False, separators=(',', ':'))}\n\n"


def input_item(message: Mapping[str, Any], item_id: str) -> dict[str, Any] | None:
    """A Chat Completions message of a turn's input as a Responses input item (for `input_items`)."""
    role = message.get("role")
    if role == "tool":
        return {"id": item_id, "type": "function_call_output", "call_id": message.get("tool_call_id"),
                "output": message.get("content") or "", "status": "completed"}
    if role not in ("user", "system", "developer"):
        return None
    content = message.get("content")
    parts: list[dict[str, Any]] = []
    for part in [content] if isinstance(content, str) else content or []:
        if isinstance(part, str):
            parts.append({"type": "input_text", "text": part})
        elif isinstance(part, dict) and part.get("type") == "text":
            parts.append({"type": "input_text", "text": part.get("text", "")})
        elif isinstance(part, dict) and part.get("type") == "image_url":
            image = part.get("image_url") or {}
            parts.append({"type": "input_image", "image_url": image.get("url") if isinstance(image, dict) else image,
                          "detail": (image.get("detail") if isinstance(image, dict) else None) or "auto"})
    return {"id": item_id, "type": "message", "role": role, "content": parts, "status": "completed"}


def not_found(what: str, ident: str, param: str) -> OpenAIError:
    """404 for a response, conversation or item this server does not have (or the key may not see)."""
    return OpenAIError(404, f"No {what} found with id '{ident}'.", type="invalid_request_error", param=param,
                       code="not_found")


def list_page(items: list[dict[str, Any]], *, order: str, limit: int, after: str | None) -> dict[str, Any]:
    """One page of an OpenAI list (`first_id`, `last_id`, `has_more`) over items kept oldest first."""
    ordered = list(reversed(items)) if order == "desc" else list(items)
    if after:  # "" is no cursor: the last_id of an empty page
        ids = [item.get("id") for item in ordered]
        ordered = ordered[ids.index(after) + 1:] if after in ids else []
    limit = max(1, min(limit, 100))
    page = ordered[:limit]
    # an empty page has "" for its ids: the openai SDK's list types require strings
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else "",
            "last_id": page[-1]["id"] if page else "", "has_more": len(ordered) > limit}
