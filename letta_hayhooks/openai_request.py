"""
Validation of OpenAI chat-completion requests and the split of a transcript into what Letta has not seen yet.

Clients send the whole transcript on every request. A Letta agent already holds the history, so only the trailing
part is forwarded: the user message(s) after the last assistant message, or the `role: "tool"` results that answer
the assistant's last tool calls.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import json
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from letta_hayhooks.errors import OpenAIError, invalid_request, too_large
from letta_hayhooks.json_body import check_values

if TYPE_CHECKING:
    from letta_hayhooks.settings import Settings

TOOL_ACTIVITY_MODES = frozenset({"none", "reasoning", "status", "delta"})
_ROLES = {"system", "developer", "user", "assistant", "tool"}
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_IMAGE_DATA_URL = re.compile(r"^data:(image/[A-Za-z0-9.+-]+);base64,(.*)$", re.S)
_MAX_INT32 = 2**31 - 1
_MAX_IMAGE_URL_CHARS = 8192
# Distinct image host names one request may make the proxy resolve; lookups run on their own small pool.
_MAX_IMAGE_HOSTS = 16
_RESOLVE_TIMEOUT = 5.0
_DNS_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="image-url-dns")
# Cloud metadata services by name; their addresses (169.254.169.254, fd00:ec2::254) are link-local or unique-local.
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                             "instance-data.ec2.internal", "metadata.azure.com"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class RequestLimits:
    """
    What one request may carry and make Letta fetch. The defaults equal the settings' defaults.

    Build it once from the server's settings with `RequestLimits.from_settings(settings)`.
    """

    max_messages: int = 5000
    max_new_user_messages: int = 64
    max_content_parts: int = 256
    max_system_bytes: int = 1_048_576
    image_urls: str = "public"  # "public" or "off"
    image_url_allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLimits:
        """The limits configured in `settings`."""
        return cls(
            max_messages=settings.max_messages,
            max_new_user_messages=settings.max_new_user_messages,
            max_content_parts=settings.max_content_parts,
            max_system_bytes=settings.max_system_prompt_bytes,
            image_urls=str(settings.image_urls),
            image_url_allowed_hosts=frozenset(settings.image_url_allowed_hosts),
        )


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
    tool_positions: list[int] = field(default_factory=list)  # their indexes in the transcript


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
    # image host names still to resolve before Letta may fetch them: host -> (port, param of its first use)
    image_hosts: dict[str, tuple[int, str]] = field(default_factory=dict)


def message_text(content: Any) -> str:
    """The text of an OpenAI message content (string or parts; non-text parts are skipped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")


def _not_allowed(message: str, param: str) -> OpenAIError:
    return invalid_request(message, param=param, code="image_url_not_allowed")


def _blocked_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for anything but a public unicast address, also when hidden inside an IPv6 form."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
        if address in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if any(inner is not None and _blocked_address(inner) for inner in embedded):
            return True
    return (not address.is_global or address.is_multicast or address.is_reserved or address.is_private
            or address.is_loopback or address.is_link_local or address.is_unspecified)


def _check_data_url(url: str, param: str) -> None:
    match = _IMAGE_DATA_URL.match(url)
    try:
        decoded = base64.b64decode(match.group(2), validate=True) if match else b""
    except (binascii.Error, ValueError):
        decoded = b""
    if not decoded:
        msg = f"The data: URL at {param} must be data:image/<type>;base64,<valid base64 image data>."
        raise invalid_request(msg, param=param, code="invalid_image_url")


def _check_image_host(host: str, port: int, param: str, hosts: dict[str, tuple[int, str]]) -> None:
    refused = (f"The image URL at {param} points to a loopback, private, link-local or metadata address; Letta "
               "does not fetch those (allow a trusted host with LETTA_HAYHOOKS_IMAGE_URL_ALLOWED_HOSTS).")
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        address = None
    if address is not None:
        if _blocked_address(address):
            raise _not_allowed(refused, param)
        return
    last_label = host.rsplit(".", 1)[-1]
    if host in _METADATA_HOSTS or last_label.isdigit() or last_label.startswith("0x"):
        # also decimal, octal or hex IPv4 forms ("2130706433", "0177.0.0.1") that resolvers expand differently
        raise _not_allowed(refused, param)
    try:
        host.encode("idna")
    except UnicodeError:
        msg = f"The image URL at {param} has an invalid host name."
        raise _not_allowed(msg, param) from None
    if host not in hosts:
        if len(hosts) >= _MAX_IMAGE_HOSTS:
            msg = f"The request names images on more than {_MAX_IMAGE_HOSTS} different hosts."
            raise _not_allowed(msg, param)
        hosts[host] = (port, param)


def _check_image_url(url: str, limits: RequestLimits, param: str, hosts: dict[str, tuple[int, str]]) -> None:
    """
    Check one image URL; host names that still need DNS resolution go into `hosts`.

    Letta fetches URL images itself, from inside the operator's network: without these checks a client could make it
    request loopback services, private hosts or the cloud metadata service.
    """
    if url.startswith("data:"):
        _check_data_url(url, param)
        return
    if limits.image_urls == "off":
        msg = (f"Image URLs are turned off on this server (LETTA_HAYHOOKS_IMAGE_URLS=off): send the image at {param} "
               "inline as a base64 data:image/... URL.")
        raise _not_allowed(msg, param)
    # characters URL parsers disagree about are refused: Letta's HTTP client must see the host this check saw
    plain = len(url) <= _MAX_IMAGE_URL_CHARS and "\\" not in url and " " not in url and url.isprintable()
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        parts, host, port = None, "", 0
    if parts is None or parts.scheme not in ("http", "https") or not host:
        msg = f"The image at {param} needs an https URL or a base64 data:image/... URL."
        raise _not_allowed(msg, param)
    if not plain or "@" in parts.netloc:
        msg = f"The image URL at {param} is not a plain http(s) URL (no credentials, backslashes or spaces)."
        raise _not_allowed(msg, param)
    if host in limits.image_url_allowed_hosts:
        return  # the operator vouches for this host (LETTA_HAYHOOKS_IMAGE_URL_ALLOWED_HOSTS)
    if parts.scheme != "https":
        msg = (f"The image URL at {param} uses http: only https image URLs are fetched (or hosts listed in "
               "LETTA_HAYHOOKS_IMAGE_URL_ALLOWED_HOSTS).")
        raise _not_allowed(msg, param)
    _check_image_host(host, port, param, hosts)


def _lookup(host: str, port: int) -> list[str]:
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, looked up on a small thread pool so the event loop never blocks."""
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.run_in_executor(_DNS_POOL, _lookup, host, port), _RESOLVE_TIMEOUT)


async def check_image_urls(
    request: ChatRequest, *, resolver: Callable[[str, int], Awaitable[list[str]]] | None = None
) -> None:
    """
    Resolve the image hosts of a validated request; refuse any that reaches a non-public address.

    Run it after `validate_chat_request` and before anything is sent to Letta.

    :raises OpenAIError: 400 `image_url_not_allowed`.
    """
    if not request.image_hosts:
        return
    resolve = resolver or resolve_host
    hosts = list(request.image_hosts.items())
    results = await asyncio.gather(*(resolve(host, port) for host, (port, _) in hosts), return_exceptions=True)
    for (host, (_, param)), result in zip(hosts, results, strict=True):
        if isinstance(result, BaseException):
            if isinstance(result, asyncio.CancelledError):
                raise result
            msg = f"The image host '{host}' at {param} could not be resolved."
            raise _not_allowed(msg, param)
        addresses = []
        for text in result:
            try:
                addresses.append(ipaddress.ip_address(str(text).split("%", 1)[0]))
            except ValueError:
                addresses.append(None)
        if not addresses or any(a is None or _blocked_address(a) for a in addresses):
            msg = (f"The image URL at {param} resolves to a loopback, private, link-local or metadata address; "
                   "Letta does not fetch those (allow a trusted host with LETTA_HAYHOOKS_IMAGE_URL_ALLOWED_HOSTS).")
            raise _not_allowed(msg, param)


def _check_content(  # noqa: PLR0912 - one branch per content kind
    message: dict[str, Any], i: int, limits: RequestLimits, hosts: dict[str, tuple[int, str]]
) -> None:
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
    if not content and role != "assistant":
        msg = f"Message {i} ({role}) has an empty list of content parts."
        raise invalid_request(msg, param=param)
    if len(content) > limits.max_content_parts:
        msg = (f"Message {i} has {len(content)} content parts; the limit is {limits.max_content_parts} "
               "(LETTA_HAYHOOKS_MAX_CONTENT_PARTS).")
        raise invalid_request(msg, param=param, code="too_many_content_parts")
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
            if not isinstance(url, str):
                msg = f"Image part {j} of message {i} needs an https URL or a base64 data:image/... URL."
                raise invalid_request(msg, param=part_param)
            detail = image.get("detail") if isinstance(image, dict) else None
            if detail is not None and detail not in ("auto", "low", "high"):
                msg = f"Image part {j} of message {i}: 'detail' must be 'auto', 'low' or 'high'."
                raise invalid_request(msg, param=f"{part_param}.image_url.detail")
            _check_image_url(url, limits, part_param, hosts)
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
            turn.tool_positions.append(i)
    return turn


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _in_range(low: float, high: float, *, integer: bool = False) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return (_is_int(value) if integer else _is_number(value)) and low <= value <= high

    return check


def _is_stop(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and len(value) <= _MAX_STOP and all(isinstance(s, str) for s in value)
    )


def _is_logit_bias(value: Any) -> bool:
    return isinstance(value, dict) and all(
        k.isascii() and k.isdigit() and _is_number(v) and -100 <= v <= 100 for k, v in value.items()
    )


def _is_metadata(value: Any) -> bool:
    return isinstance(value, dict) and len(value) <= 16 and all(
        len(k) <= 64 and isinstance(v, str) and len(v) <= 512 for k, v in value.items()
    )


def _is_stream_options(value: Any) -> bool:
    return isinstance(value, dict) and value.get("include_usage") in (None, True, False)


def _is_text_format(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") in ("text", "json_object", "json_schema")


_MAX_STOP = 4
# OpenAI's types and ranges. Values that pass are accepted and left to the agent's own model settings.
_PARAMETER_RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("temperature", _in_range(0, 2), "a number from 0 to 2"),
    ("top_p", _in_range(0, 1), "a number from 0 to 1"),
    ("presence_penalty", _in_range(-2, 2), "a number from -2 to 2"),
    ("frequency_penalty", _in_range(-2, 2), "a number from -2 to 2"),
    ("max_tokens", _in_range(1, _MAX_INT32, integer=True), f"an integer from 1 to {_MAX_INT32}"),
    ("max_completion_tokens", _in_range(1, _MAX_INT32, integer=True), f"an integer from 1 to {_MAX_INT32}"),
    ("n", _in_range(1, 1, integer=True), "1: a Letta agent gives one answer per turn (only n=1 is supported)"),
    ("seed", _in_range(-(2**63), 2**63 - 1, integer=True), "a 64-bit integer"),
    ("stop", _is_stop, f"a string or a list of at most {_MAX_STOP} strings"),
    ("logit_bias", _is_logit_bias, "an object mapping token ids to numbers from -100 to 100"),
    ("parallel_tool_calls", _is_bool, "a boolean"),
    ("logprobs", _is_bool, "a boolean"),
    ("store", _is_bool, "a boolean"),
    ("top_logprobs", _in_range(0, 20, integer=True), "an integer from 0 to 20"),
    ("metadata", _is_metadata, "an object of at most 16 strings (keys up to 64, values up to 512 characters)"),
    ("stream_options", _is_stream_options, "an object whose 'include_usage' is a boolean"),
    ("response_format", _is_text_format, "an object with 'type': 'text'"),
)
_NO_LOGPROBS = "Letta does not return token log probabilities."
_LEGACY_FUNCTIONS = "the legacy function-calling API is not served; send 'tools' instead."
# Parameters Letta cannot honour: refused rather than silently ignored, because the client relies on the result.
_UNSUPPORTED_RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("response_format", lambda v: v.get("type") != "text",
     "a Letta agent cannot be held to JSON output; omit it or send {'type': 'text'}."),
    ("logprobs", lambda v: v is True, _NO_LOGPROBS),
    ("top_logprobs", lambda v: v > 0, _NO_LOGPROBS),
    ("functions", lambda _v: True, _LEGACY_FUNCTIONS),
    ("function_call", lambda _v: True, _LEGACY_FUNCTIONS),
    ("audio", lambda _v: True, "a Letta agent answers with text only."),
    ("modalities", lambda v: v != ["text"], "a Letta agent answers with text only."),
)


def _check_parameters(body: dict[str, Any]) -> None:
    """Types and ranges of the OpenAI parameters, and a clear refusal for those Letta cannot honour."""
    for name, valid, expected in _PARAMETER_RULES:
        value = body.get(name)
        if value is not None and not valid(value):
            param = "stream_options.include_usage" if name == "stream_options" and isinstance(value, dict) else name
            msg = f"'{name}' must be {expected}."
            raise invalid_request(msg, param=param)
    for name, refused, why in _UNSUPPORTED_RULES:
        value = body.get(name)
        if value is not None and refused(value):
            msg = f"'{name}' is not supported: {why}"
            raise invalid_request(msg, param=name, code="unsupported_parameter")


def _check_message(message: Any, i: int, limits: RequestLimits, hosts: dict[str, tuple[int, str]]) -> None:
    if not isinstance(message, dict):
        msg = f"Message {i} must be an object."
        raise invalid_request(msg, param=f"messages[{i}]")
    role = message.get("role")
    if role not in _ROLES:
        msg = f"Message {i} has role {role!r}; expected one of {sorted(_ROLES)}."
        raise invalid_request(msg, param=f"messages[{i}].role")
    _check_content(message, i, limits, hosts)
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        msg = f"Tool message {i} needs a 'tool_call_id'."
        raise invalid_request(msg, param=f"messages[{i}].tool_call_id")
    calls = message.get("tool_calls")
    if role == "assistant" and calls is not None and (
        not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("id"), str) for c in calls)
    ):
        msg = f"Message {i} tool_calls must be a list of calls with ids."
        raise invalid_request(msg, param=f"messages[{i}].tool_calls")


def _check_tool_results(messages: list[dict[str, Any]]) -> None:
    """Every `role: "tool"` message answers a call of the assistant message before it (OpenAI's rule too)."""
    calls: set[str] = set()
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            calls = {call["id"] for call in message.get("tool_calls") or []}
        elif message["role"] == "tool" and message["tool_call_id"] not in calls:
            msg = (f"Message {i} answers tool_call_id '{message['tool_call_id']}', which the assistant message before "
                   "it did not call (unknown or already answered).")
            raise invalid_request(msg, param=f"messages[{i}].tool_call_id", code="unknown_tool_call_id")
        elif message["role"] == "tool":
            calls.discard(message["tool_call_id"])  # answered once


def validate_chat_request(
    model: str,
    messages: Any,
    body: dict[str, Any],
    *,
    max_system_bytes: int | None = None,
    limits: RequestLimits | None = None,
    require_user: bool = True,
) -> ChatRequest:
    """
    Check a request and extract what the pipeline needs.

    Image host names are resolved afterwards by `check_image_urls`, which is async.

    :param limits: The server's limits (`RequestLimits.from_settings(settings)`); the defaults otherwise.
    :param max_system_bytes: Overrides `limits.max_system_bytes`.
    :param require_user: Refuse a transcript without a user message; a turn continuing a conversation the client
        named (the Responses API's `previous_response_id`) may carry only tool results.
    :raises OpenAIError: 400 for malformed input, 413 for a system prompt above the limit.
    """
    limits = limits or RequestLimits()
    if max_system_bytes is not None:
        limits = replace(limits, max_system_bytes=max_system_bytes)
    if not isinstance(model, str) or not model.strip():
        msg = "'model' must be a non-empty string."
        raise invalid_request(msg, param="model")
    if not isinstance(messages, list) or not messages:
        msg = "'messages' must be a non-empty list."
        raise invalid_request(msg, param="messages")
    # before any per-message work, so an oversized transcript costs no more than its parsing
    if len(messages) > limits.max_messages:
        msg = (f"The request has {len(messages)} messages; the limit is {limits.max_messages} "
               "(LETTA_HAYHOOKS_MAX_MESSAGES).")
        raise invalid_request(msg, param="messages", code="too_many_messages")
    check_values({**body, "model": model, "messages": messages})
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        msg = "'stream' must be a boolean."
        raise invalid_request(msg, param="stream")
    _check_parameters(body)
    stream_options = body.get("stream_options") or {}
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        msg = "'user' must be a string."
        raise invalid_request(msg, param="user")

    image_hosts: dict[str, tuple[int, str]] = {}
    for i, message in enumerate(messages):
        _check_message(message, i, limits, image_hosts)
    _check_tool_results(messages)
    if require_user and not any(m["role"] == "user" for m in messages):
        msg = "The conversation has no user message."
        raise invalid_request(msg, param="messages")

    system_parts = [message_text(m.get("content")) for m in messages if m["role"] in ("system", "developer")]
    system_prompt = "\n\n".join(part for part in system_parts if part) or None
    if system_prompt is not None and len(system_prompt.encode("utf-8")) > limits.max_system_bytes:
        msg = (f"The system prompt is {len(system_prompt.encode('utf-8'))} bytes; the limit is "
               f"{limits.max_system_bytes} (LETTA_HAYHOOKS_MAX_SYSTEM_PROMPT_BYTES).")
        raise too_large(msg, param="messages")

    new_turn = split_new_turn(messages)
    if not new_turn.user_messages and not new_turn.tool_results:
        msg = "Nothing to send: the conversation must end with a user message or tool results."
        raise invalid_request(msg, param="messages")
    if len(new_turn.user_messages) > limits.max_new_user_messages:
        msg = (f"The request ends with {len(new_turn.user_messages)} new user messages; at most "
               f"{limits.max_new_user_messages} are forwarded in one turn (LETTA_HAYHOOKS_MAX_NEW_USER_MESSAGES).")
        raise invalid_request(msg, param="messages", code="too_many_new_messages")
    tools = _check_tools(body)
    tool_choice = _check_tool_choice(body)
    tool_activity = body.get("letta_tool_activity")
    if tool_activity is not None and tool_activity not in TOOL_ACTIVITY_MODES:
        msg = f"letta_tool_activity must be one of {sorted(TOOL_ACTIVITY_MODES)}."
        raise invalid_request(msg, param="letta_tool_activity")
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
        image_hosts=image_hosts,
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
