"""
letta-hayhooks-chat: a terminal client for letta-hayhooks.

It talks to the server over the OpenAI API with the official `openai` SDK (plain httpx only for `/health`), so it
sees exactly what any OpenAI client sees. The SDK gets only its own types (`openai.Timeout`): its HTTP library is
httpx before openai 3.5x and httpx2 since, and it refuses the other's objects.
Commands: `models`, `chat` (a streaming REPL), `ask` (one-shot, pipeable), `health` and `config`. Settings (base
URL, API key, last model and session) live in a small JSON file in the user's config directory; precedence is
flag > environment > config file > default.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import json
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import httpx
import openai
from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

APP_NAME = "letta-hayhooks"
PROG = "letta-hayhooks-chat"
# The client's own variables: LETTA_HAYHOOKS_URL/_API_KEY are not read by the server (it uses LETTA_HAYHOOKS_API_KEYS).
URL_ENV = "LETTA_HAYHOOKS_URL"
KEY_ENV = "LETTA_HAYHOOKS_API_KEY"
CONFIG_DIR_ENV = "LETTA_HAYHOOKS_CLI_CONFIG_DIR"
CONFIG_FILE = "cli.json"
HISTORY_FILE = "chat_history"
# Hayhooks' default port; the server itself is started with `letta-hayhooks serve`.
DEFAULT_URL = "http://localhost:1416"
# An agent turn can run for minutes (tool calls, long answers); failing to connect should be quick.
TIMEOUT = openai.Timeout(900.0, connect=5.0)
# The HTTP library under the SDK (the module that defines `openai.Timeout`): a stream that breaks mid-answer can
# raise its transport errors unwrapped, so they are caught by its classes as well as plain httpx's (/health).
SDK_HTTP = importlib.import_module(openai.Timeout.__init__.__module__.partition(".")[0])
TIMEOUT_ERRORS = (openai.APITimeoutError, httpx.TimeoutException, SDK_HTTP.TimeoutException)
TRANSPORT_ERRORS = (openai.APIConnectionError, httpx.TransportError, SDK_HTTP.TransportError)
HTTP_ERRORS = (httpx.HTTPError, SDK_HTTP.HTTPError)
# The server rejects longer session keys or ones with control characters (see components/session_resolver.py).
MAX_SESSION_CHARS = 256
# Raw agent ids are accepted by the server even when /v1/models lists agents by name.
AGENT_ID = re.compile(r"^agent-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Config keys as users type them -> keys in the JSON file.
SETTING_NAMES = {"base-url": "base_url", "api-key": "api_key", "model": "model", "session": "session"}

_console: Console | None = None
_err_console: Console | None = None


def get_console() -> Console:
    """The stdout console (created on first use)."""
    global _console  # noqa: PLW0603 - one lazily created console per process
    if _console is None:
        _console = Console()
    return _console


def get_err_console() -> Console:
    """The stderr console for errors, spinners and status lines (created on first use)."""
    global _err_console  # noqa: PLW0603 - one lazily created console per process
    if _err_console is None:
        _err_console = Console(stderr=True)
    return _err_console


def _write_raw(console: Console, text: str) -> None:
    """Write text exactly as received (answer tokens, JSON): rich would expand tabs and wrap lines."""
    console.file.write(text)
    console.file.flush()


# ---------------------------------------------------------------------------------------------------- settings


def normalize_base_url(url: str) -> str:
    """
    The server root for a user-supplied URL: scheme added if missing, trailing `/` and `/v1` removed.

    :raises ValueError: when the URL is empty or not http(s).
    """
    url = (url or "").strip()
    if not url:
        msg = "the server URL is empty"
        raise ValueError(msg)
    if "://" not in url:
        url = f"http://{url}"
    if not url.startswith(("http://", "https://")):
        msg = f"{url!r} is not an http(s) URL"
        raise ValueError(msg)
    url = url.rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")].rstrip("/")
    return url


def resolve_setting(
    flag: str | None, env: str | None, saved: str | None, default: str | None
) -> tuple[str | None, str]:
    """The effective value and where it came from: flag > env > config file > default (empty values are skipped)."""
    for value, source in ((flag, "flag"), (env, "env"), (saved, "config")):
        if value:
            return value, source
    return default, "default"


def config_dir() -> Path:
    """The user config directory (`LETTA_HAYHOOKS_CLI_CONFIG_DIR` overrides the platform default)."""
    explicit = os.environ.get(CONFIG_DIR_ENV)
    return Path(explicit).expanduser() if explicit else Path(click.get_app_dir(APP_NAME))


def load_config() -> dict[str, str]:
    """The saved settings; an unreadable file counts as empty (with a warning), never as a crash."""
    path = config_dir() / CONFIG_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        get_err_console().print(f"[yellow]Ignoring the unreadable config file ({type(exc).__name__}).[/yellow]")
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def save_config(data: dict[str, str]) -> Path:
    """Write the settings atomically, readable by the owner only (the file may hold an API key)."""
    directory = config_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_FILE
    tmp = directory / f".{CONFIG_FILE}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def saved_session(state: AppState, missing: str) -> str:
    """The session saved by the last chat or ask; a usage error saying `missing` when there is none."""
    session_id = state.saved.get("session")
    if not session_id:
        raise click.UsageError(missing)
    return session_id


def check_session_id(session: str) -> str:
    """
    A session id the server accepts.

    :raises click.BadParameter: for an empty id, one over 256 characters or with control characters.
    """
    session = session.strip()
    if not session or len(session) > MAX_SESSION_CHARS or any(ord(c) < 0x20 or ord(c) == 0x7F for c in session):
        msg = f"a session id must be 1-{MAX_SESSION_CHARS} characters without control characters"
        raise click.BadParameter(msg, param_hint="--session")
    return session


@dataclass
class AppState:
    """Resolved settings for one invocation, plus the lazily created OpenAI client."""

    base_url: str
    base_source: str
    api_key: str | None
    key_source: str
    debug: bool = False
    saved: dict[str, str] = field(default_factory=dict)
    _client: openai.OpenAI | None = None

    @property
    def v1(self) -> str:
        """The OpenAI API root."""
        return f"{self.base_url}/v1"

    def client(self) -> openai.OpenAI:
        """The OpenAI SDK client for this server (no retries: errors should surface at once)."""
        if self._client is None:
            # the SDK insists on a key; a server without LETTA_HAYHOOKS_API_KEYS ignores it
            self._client = openai.OpenAI(base_url=self.v1, api_key=self.api_key or "none", max_retries=0,
                                         timeout=TIMEOUT)
        return self._client

    def remember(self, **values: str | None) -> None:
        """Save settings (None removes one) if they changed."""
        updated = dict(self.saved)
        for key, value in values.items():
            if value is None:
                updated.pop(key, None)
            else:
                updated[key] = value
        if updated != self.saved:
            save_config(updated)
            self.saved = updated

    def connected(self) -> None:
        """Remember a base URL given with --base-url once the server has answered."""
        if self.base_source == "flag":
            self.remember(base_url=self.base_url)


def build_state(base_url: str | None, api_key: str | None, *, debug: bool = False) -> AppState:
    """Resolve the settings of one invocation from flags, environment, config file and defaults."""
    saved = load_config()
    raw_url, url_source = resolve_setting(base_url, os.environ.get(URL_ENV), saved.get("base_url"), DEFAULT_URL)
    key, key_source = resolve_setting(api_key, os.environ.get(KEY_ENV), saved.get("api_key"), None)
    try:
        url = normalize_base_url(raw_url or "")
    except ValueError as exc:
        hint = {"flag": "--base-url", "env": URL_ENV, "config": "the saved base-url"}.get(url_source, "base URL")
        raise click.BadParameter(str(exc), param_hint=hint) from None
    return AppState(base_url=url, base_source=url_source, api_key=key, key_source=key_source, debug=debug, saved=saved)


# ---------------------------------------------------------------------------------------------------- errors


def suggest_models(name: str, candidates: list[str], limit: int = 3) -> list[str]:
    """Model ids close to `name`: ids containing it first (agent names get suffixes), then difflib matches."""
    lowered = name.lower()
    contained = [c for c in candidates if lowered and lowered in c.lower()]
    close = difflib.get_close_matches(name, candidates, n=limit, cutoff=0.6)
    return list(dict.fromkeys(contained + close))[:limit]


def _server_message(exc: openai.APIError) -> str:
    """The `message` of an OpenAI error body, or the SDK's own text."""
    body = exc.body
    message = body["message"] if isinstance(body, dict) and isinstance(body.get("message"), str) else exc.message
    return " ".join(message.split())  # one line


def is_known_model(model: str, ids: list[str]) -> bool:
    """Whether the server will route `model`: a listed id or a raw agent id."""
    return model in ids or bool(AGENT_ID.match(model))


def unknown_model_error(state: AppState, model: str, ids: list[str] | None = None) -> click.ClickException:
    """An unknown-model error with close matches from /v1/models (no suggestion if the list is unavailable)."""
    if ids is None:
        try:
            ids = [m.id for m in state.client().models.list()]
        except openai.OpenAIError:
            ids = []
    matches = suggest_models(model, ids)
    hint = f"Did you mean: {', '.join(matches)}?" if matches else f"Run `{PROG} models` to list them."
    return click.ClickException(f"unknown model '{model}'. {hint}")


def translate_error(  # noqa: PLR0911 - one message per kind of failure
    exc: Exception, state: AppState, model: str | None = None
) -> click.ClickException:
    """Turn an SDK or HTTP failure into a one-line message with a hint."""
    if isinstance(exc, TIMEOUT_ERRORS):
        return click.ClickException(f"letta-hayhooks at {state.base_url} did not answer in time.")
    if isinstance(exc, TRANSPORT_ERRORS):
        return click.ClickException(
            f"cannot reach letta-hayhooks at {state.base_url}: start it with `letta-hayhooks serve`, "
            f"or point --base-url / {URL_ENV} at it."
        )
    if isinstance(exc, openai.AuthenticationError):
        what = "was rejected" if state.api_key else "is required"
        return click.ClickException(
            f"the API key {what} (401: {_server_message(exc)}): pass --api-key, set {KEY_ENV} "
            f"or run `{PROG} config set api-key`."
        )
    if isinstance(exc, openai.NotFoundError) and exc.code == "model_not_found" and model:
        return unknown_model_error(state, model)
    if isinstance(exc, openai.APIStatusError):
        return click.ClickException(f"the server answered {exc.status_code}: {_server_message(exc)}")
    if isinstance(exc, openai.APIError):
        return click.ClickException(f"the server reported an error: {_server_message(exc)}")
    if isinstance(exc, HTTP_ERRORS):
        return click.ClickException(f"HTTP error talking to {state.base_url}: {exc}")
    return click.ClickException(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")


@contextlib.contextmanager
def friendly_errors(state: AppState, model: str | None = None) -> Iterator[None]:
    """Re-raise SDK/HTTP failures as `click.ClickException` (the original under --debug)."""
    try:
        yield
    except (openai.OpenAIError, *HTTP_ERRORS) as exc:
        if state.debug:
            raise
        raise translate_error(exc, state, model) from None


class _Cli(click.Group):
    """A group that turns unexpected exceptions into one-line errors unless --debug is given."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; anything unexpected becomes `Error: ...` (exit 1) without a traceback."""
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt, EOFError):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            state = ctx.obj if isinstance(ctx.obj, AppState) else AppState(DEFAULT_URL, "default", None, "default")
            raise translate_error(exc, state) from None


# ---------------------------------------------------------------------------------------------------- rendering


def format_created(timestamp: Any) -> str:
    """A unix timestamp as a local date and time (`-` when missing, zero or invalid)."""
    try:
        if not int(timestamp):
            return "-"  # the server did not know when the agent was created
        return datetime.fromtimestamp(int(timestamp), tz=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return "-"


def flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as dotted keys: {"letta": {"reachable": True}} -> [("letta.reachable", True)]."""
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.extend(flatten(value, f"{name}."))
        else:
            rows.append((name, value))
    return rows


def activity_line(activity: dict[str, Any]) -> str:
    """One status line for the agent's own tool activity (`letta_tool_activity`)."""
    name = activity.get("name") or "tool"
    if activity.get("phase") == "call":
        return f"⚙ running {name}…"
    status = activity.get("status") or "done"
    if status == "success":
        return f"✓ {name}"
    mark = "✗" if status == "error" else "•"
    return f"{mark} {name} ({status})"


@dataclass
class Block:
    """One piece of an answer, in arrival order: reasoning, content, agent tool activity or a client tool call."""

    kind: str
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class TurnView:
    """
    Accumulates the chunks of one streamed answer.

    `feed` returns the new events (kind, payload) so a plain printer can stream them; `render` builds the rich
    view (reasoning panel, tool lines, Markdown answer) for `rich.live`.
    """

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.tool_calls: dict[int, dict[str, str]] = {}
        self.finish_reason: str | None = None
        self.usage: Any = None

    @property
    def content(self) -> str:
        """The answer text so far."""
        return "".join(b.text for b in self.blocks if b.kind == "content")

    @property
    def reasoning(self) -> str:
        """The reasoning text so far."""
        return "".join(b.text for b in self.blocks if b.kind == "reasoning")

    @property
    def started(self) -> bool:
        """Whether anything worth showing has arrived (the spinner runs until then)."""
        return bool(self.blocks)

    def _append(self, kind: str, text: str) -> None:
        if self.blocks and self.blocks[-1].kind == kind:
            self.blocks[-1].text += text
        else:
            self.blocks.append(Block(kind, text))

    def _activity(self, activity: dict[str, Any]) -> None:
        if activity.get("phase") == "return":
            for block in self.blocks:
                pending = block.kind == "activity" and "status" not in block.data
                if pending and block.data.get("id") == activity.get("id"):
                    block.data.update(phase="return", status=activity.get("status") or "done")
                    return
        self.blocks.append(Block("activity", data=dict(activity)))

    def _tool_call(self, call: Any) -> None:
        index = call.index or 0
        entry = self.tool_calls.get(index)
        if entry is None:
            entry = self.tool_calls[index] = {"id": "", "name": "", "arguments": ""}
            self.blocks.append(Block("tool_call", data={"index": index}))
        if call.id:
            entry["id"] = call.id
        if call.function is not None:
            entry["name"] += call.function.name or ""
            entry["arguments"] += call.function.arguments or ""

    def feed(self, chunk: Any) -> list[tuple[str, Any]]:
        """Take one `ChatCompletionChunk`; returns the events it carried."""
        events: list[tuple[str, Any]] = []
        if getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage
        for choice in chunk.choices or []:
            delta = choice.delta
            extra = getattr(delta, "model_extra", None) or {}
            reasoning = getattr(delta, "reasoning_content", None) or extra.get("reasoning_content")
            if reasoning:
                self._append("reasoning", reasoning)
                events.append(("reasoning", reasoning))
            activity = extra.get("letta_tool_activity")
            if isinstance(activity, dict):
                self._activity(activity)
                events.append(("activity", activity))
            for call in delta.tool_calls or []:
                self._tool_call(call)
                events.append(("tool_call", call.index or 0))
            if delta.content:
                self._append("content", delta.content)
                events.append(("content", delta.content))
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        return events

    def tool_call_line(self, index: int) -> str:
        """A client tool call as one line: `→ name(arguments)`."""
        call = self.tool_calls[index]
        return f"→ tool call {call['name'] or '?'}({call['arguments']})"

    def render(self, *, show_reasoning: bool = True, waiting: str = "waiting for the agent…") -> RenderableType:
        """The rich view of the answer so far (a spinner until something arrived)."""
        if not self.started:
            return Spinner("dots", text=Text(waiting, style="dim"))
        parts: list[RenderableType] = []
        for block in self.blocks:
            if block.kind == "reasoning":
                if show_reasoning:
                    parts.append(Panel(Text(block.text.strip(), style="dim"), title="▾ reasoning", title_align="left",
                                       border_style="dim", box=box.ROUNDED))
                else:
                    words = len(block.text.split())
                    parts.append(Text(f"▸ reasoning ({words} words; /reasoning shows it)", style="dim"))
            elif block.kind == "activity":
                parts.append(Text(activity_line(block.data), style="dim"))
            elif block.kind == "tool_call":
                parts.append(Text(self.tool_call_line(block.data["index"]), style="dim cyan"))
            else:
                parts.append(Markdown(block.text))
        return Group(*parts)


# ---------------------------------------------------------------------------------------------------- the CLI


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=APP_NAME, prog_name=PROG)
@click.option("--base-url", metavar="URL",
              help=f"letta-hayhooks server, with or without /v1 (env {URL_ENV}; default {DEFAULT_URL}).")
@click.option("--api-key", metavar="KEY", help=f"API key, if the server requires one (env {KEY_ENV}).")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, base_url: str | None, api_key: str | None, debug: bool) -> None:
    """Chat with the Letta agents served by letta-hayhooks (over its OpenAI-compatible API)."""
    ctx.obj = build_state(base_url, api_key, debug=debug)


def _list_models(state: AppState) -> list[Any]:
    """The server's models, sorted by id."""
    with friendly_errors(state):
        models = list(state.client().models.list())
    state.connected()
    return sorted(models, key=lambda m: m.id)


def _models_table(models: list[Any]) -> Table:
    """Models as a table: id, name, created (as a local date and time)."""
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("id", style="bold", overflow="fold")
    table.add_column("name", overflow="fold")
    table.add_column("created", no_wrap=True)
    for model in models:
        name = getattr(model, "name", None) or (model.model_extra or {}).get("name") or ""
        table.add_row(model.id, str(name), format_created(model.created))
    return table


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw model list as JSON.")
@click.pass_obj
def models(state: AppState, as_json: bool) -> None:
    """List the models (one per Letta agent)."""
    if as_json:
        _write_raw(get_console(), json.dumps([m.to_dict() for m in _list_models(state)], indent=2) + "\n")
        return
    with get_err_console().status("Fetching models…"):
        items = _list_models(state)
    if not items:
        get_console().print("[yellow]The server lists no models: is any Letta agent visible to it?[/yellow]")
        return
    get_console().print(_models_table(items))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw health JSON.")
@click.pass_obj
def health(state: AppState, as_json: bool) -> None:
    """Check the server and its Letta backend (exit 1 unless the status is "ok")."""
    headers = {"Authorization": f"Bearer {state.api_key}"} if state.api_key else {}
    spinner = contextlib.nullcontext() if as_json else get_err_console().status("Checking…")
    with spinner, friendly_errors(state):
        response = httpx.get(f"{state.base_url}/health", headers=headers, timeout=httpx.Timeout(30.0, connect=5.0))
    try:
        body = response.json()
    except ValueError:
        msg = f"{state.base_url}/health answered {response.status_code} without JSON: is this letta-hayhooks?"
        raise click.ClickException(msg) from None
    if not isinstance(body, dict):
        msg = f"{state.base_url}/health answered {response.status_code} with unexpected JSON."
        raise click.ClickException(msg)
    state.connected()
    status = body.get("status")
    if as_json:
        _write_raw(get_console(), json.dumps(body, indent=2) + "\n")
    else:
        table = Table(box=box.SIMPLE_HEAD, title=f"letta-hayhooks at {state.base_url}")
        table.add_column("key", style="bold")
        table.add_column("value", overflow="fold")
        for key, value in flatten(body):
            style = ("green" if value == "ok" else "red") if key == "status" else ""
            table.add_row(key, Text(_cell(value), style=style))
        get_console().print(table)
    if status != "ok":
        reason = "Letta is not reachable" if (body.get("letta") or {}).get("reachable") is False else "see the report"
        msg = f"server status is {status!r} (HTTP {response.status_code}): {reason}."
        raise click.ClickException(msg)


def _cell(value: Any) -> str:
    """A health value as table text: JSON spelling for booleans and lists, `-` for null."""
    if value is None:
        return "-"
    return json.dumps(value) if isinstance(value, bool | list | dict) else str(value)


def _chat_kwargs(model: str, messages: list[dict[str, Any]], session: str | None) -> dict[str, Any]:
    """The request arguments shared by `ask` and `chat`."""
    return {
        "model": model,
        "messages": messages,
        "extra_headers": {"X-Session-Id": session} if session else None,
        "extra_body": {"letta_tool_activity": "delta"},
    }


class _StderrStatus:
    """Streams reasoning, tool activity and tool calls of `ask` to stderr, dimmed, keeping stdout clean."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.open_line = False

    def reasoning(self, text: str) -> None:
        """Reasoning tokens, as they arrive."""
        self.console.out(text, end="", style="dim", highlight=False)
        self.open_line = not text.endswith("\n")

    def line(self, text: str) -> None:
        """A whole status line (tool activity, tool calls)."""
        self.end_line()
        self.console.out(text, style="dim", highlight=False)

    def end_line(self) -> None:
        """Finish a reasoning line left open."""
        if self.open_line:
            self.console.out("")
            self.open_line = False


def completion_from_stream(chunks: list[Any]) -> dict[str, Any]:
    """
    One `chat.completion` object (as a non-streamed request returns it) assembled from a streamed answer's chunks:
    content, reasoning_content and tool calls joined, the finish reason, and the usage when the stream carried it.
    """
    view = TurnView()
    for chunk in chunks:
        view.feed(chunk)
    first = chunks[0] if chunks else None
    message: dict[str, Any] = {"role": "assistant", "content": view.content or (None if view.tool_calls else "")}
    if view.reasoning:
        message["reasoning_content"] = view.reasoning
    if view.tool_calls:
        message["tool_calls"] = [
            {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}
            for _, call in sorted(view.tool_calls.items())]
    completion: dict[str, Any] = {
        "id": getattr(first, "id", ""),
        "object": "chat.completion",
        "created": getattr(first, "created", 0),
        "model": getattr(first, "model", ""),
        "choices": [{"index": 0, "message": message, "finish_reason": view.finish_reason}],
    }
    if view.usage is not None:
        completion["usage"] = view.usage.to_dict()
    return completion


def _ask_stream(state: AppState, kwargs: dict[str, Any], *, as_json: bool, raw_chunks: bool = False) -> None:
    """One streamed answer: tokens to stdout, status to stderr (or the assembled completion / every chunk as JSON)."""
    out, err = get_console(), get_err_console()
    client = state.client()
    if as_json or raw_chunks:
        with friendly_errors(state, kwargs["model"]):
            chunks = list(client.chat.completions.create(stream=True, **kwargs))
        data = [chunk.to_dict() for chunk in chunks] if raw_chunks else completion_from_stream(chunks)
        _write_raw(out, json.dumps(data, indent=2) + "\n")
        return
    view, status, wrote = TurnView(), _StderrStatus(err), ""
    spinner = err.status("Waiting for the agent…")
    spinner.start()
    try:
        with friendly_errors(state, kwargs["model"]):
            stream = client.chat.completions.create(stream=True, **kwargs)
            with contextlib.closing(stream):
                for chunk in stream:
                    for kind, payload in view.feed(chunk):
                        spinner.stop()
                        if kind == "reasoning":
                            status.reasoning(payload)
                        elif kind == "activity":
                            status.line(activity_line(payload))
                        elif kind == "content":
                            status.end_line()
                            _write_raw(out, payload)
                            wrote = payload
    finally:
        spinner.stop()
    status.end_line()
    if wrote and not wrote.endswith("\n"):
        _write_raw(out, "\n")
    for index in sorted(view.tool_calls):
        status.line(view.tool_call_line(index))


def _ask_once(state: AppState, kwargs: dict[str, Any], *, as_json: bool) -> None:
    """One non-streamed answer: the text to stdout, reasoning and tool calls to stderr (or the raw JSON)."""
    spinner = contextlib.nullcontext() if as_json else get_err_console().status("Waiting for the agent…")
    with spinner, friendly_errors(state, kwargs["model"]):
        completion = state.client().chat.completions.create(**kwargs)
    if as_json:
        _write_raw(get_console(), json.dumps(completion.to_dict(), indent=2) + "\n")
        return
    message = completion.choices[0].message if completion.choices else None
    if message is None:
        return
    status = _StderrStatus(get_err_console())
    reasoning = getattr(message, "reasoning_content", None) or (message.model_extra or {}).get("reasoning_content")
    if reasoning:
        status.line(reasoning.rstrip("\n"))
    if message.content:
        _write_raw(get_console(), message.content + ("" if message.content.endswith("\n") else "\n"))
    for call in message.tool_calls or []:
        status.line(f"→ tool call {call.function.name}({call.function.arguments})")


@cli.command()
@click.argument("model")
@click.argument("message")
@click.option("--stream/--no-stream", default=True, show_default=True, help="Stream tokens as they arrive.")
@click.option("--system", "system_prompt", metavar="TEXT", help="System prompt (kept by the server for the session).")
@click.option("--session", "session_id", metavar="ID", help="Session id: turns with the same id share a conversation.")
@click.option("-c", "--continue", "resume", is_flag=True, help="Continue the last saved session.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the answer as one chat.completion JSON object (assembled from the stream when streaming).")
@click.option("--raw-chunks", is_flag=True, help="Print the raw stream: a JSON list of chat.completion.chunk objects.")
@click.pass_obj
def ask(state: AppState, model: str, message: str, stream: bool, system_prompt: str | None,
        session_id: str | None, resume: bool, as_json: bool, raw_chunks: bool) -> None:
    """Ask MODEL one question; MESSAGE `-` reads it from stdin."""
    if raw_chunks and (as_json or not stream):
        msg = "--raw-chunks prints the stream itself: it goes without --json and --no-stream"
        raise click.UsageError(msg)
    if message == "-":
        message = sys.stdin.read().rstrip("\n")
    if not message.strip():
        msg = "the message is empty"
        raise click.UsageError(msg)
    if session_id is None and resume:
        session_id = saved_session(state, "no saved session to continue: pass --session ID")
    if session_id is not None:
        session_id = check_session_id(session_id)
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": message}]
    kwargs = _chat_kwargs(model, messages, session_id)
    if stream:
        _ask_stream(state, kwargs, as_json=as_json, raw_chunks=raw_chunks)
    else:
        _ask_once(state, kwargs, as_json=as_json)
    state.connected()
    state.remember(model=model, **({"session": session_id} if session_id else {}))


# ---------------------------------------------------------------------------------------------------- the REPL

_HELP = [
    ("/models", "list the models"),
    ("/model NAME", "switch to another model (same session id, fresh transcript)"),
    ("/system TEXT", "set the system prompt (`/system` shows it, `/system -` removes it)"),
    ("/session", "show the session id, model and settings"),
    ("/new", "start a new session (a new Letta conversation)"),
    ("/reasoning", "collapse or expand reasoning panels"),
    ("/clear", "clear the screen"),
    ("/help", "this list"),
    ("/quit", "leave (also Ctrl-D); Ctrl-C cancels an answer"),
]


def _input_reader(history: Path) -> Callable[[str], str]:
    """prompt_toolkit with persistent history on a terminal; plain `input()` when stdin is piped."""
    if sys.stdin.isatty() and sys.stdout.isatty():
        history.parent.mkdir(parents=True, exist_ok=True)
        if not history.exists():
            os.close(os.open(history, os.O_WRONLY | os.O_CREAT, 0o600))  # typed text may be private
        session: PromptSession[str] = PromptSession(history=FileHistory(str(history)))
        return session.prompt
    return lambda _prompt: input()


class ChatRepl:
    """The interactive chat: a transcript, a session id and slash commands."""

    def __init__(self, state: AppState, model: str, session_id: str, system_prompt: str | None = None) -> None:
        self.state = state
        self.model = model
        self.session_id = session_id
        self.system_prompt = system_prompt
        self.transcript: list[dict[str, Any]] = []
        self.show_reasoning = True
        self.console = get_console()

    # -- helpers
    def _error(self, message: str) -> None:
        get_err_console().print(Text(f"Error: {message}", style="red"), soft_wrap=True)

    def _note(self, message: str) -> None:
        self.console.print(Text(message, style="dim"), highlight=False, soft_wrap=True)

    def _model_ids(self) -> list[str]:
        with self.console.status("Fetching models…"):
            return [m.id for m in _list_models(self.state)]

    def banner(self) -> None:
        """The greeting: model, session and how to get help."""
        self.console.print(Text.assemble(("Chatting with ", "dim"), (self.model, "bold"),
                                         (f" · session {self.session_id}", "dim")), highlight=False, soft_wrap=True)
        self._note("Type /help for commands; Ctrl-C cancels an answer, Ctrl-D or /quit leaves.")

    # -- slash commands
    def command(self, line: str) -> bool:
        """Run a slash command; False means leave the chat."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        name = name.lower()
        if name in ("/quit", "/exit", "/q"):
            return False
        handlers: dict[str, Callable[[str], None]] = {
            "/models": self._cmd_models, "/model": self._cmd_model, "/system": self._cmd_system,
            "/session": self._cmd_session, "/new": self._cmd_new, "/clear": self._cmd_clear,
            "/help": self._cmd_help, "/reasoning": self._cmd_reasoning,
        }
        handler = handlers.get(name)
        if handler is None:
            self._error(f"unknown command {name}; /help lists the commands.")
        else:
            try:
                handler(arg)
            except click.ClickException as exc:
                self._error(exc.format_message())
        return True

    def _cmd_models(self, _arg: str) -> None:
        with self.console.status("Fetching models…"):
            items = _list_models(self.state)
        self.console.print(_models_table(items))

    def _cmd_model(self, arg: str) -> None:
        if not arg:
            self._note(f"Model: {self.model} (use /model NAME to switch)")
            return
        ids = self._model_ids()
        if not is_known_model(arg, ids):
            raise unknown_model_error(self.state, arg, ids)
        self.model = arg
        self.transcript = []
        self.state.remember(model=arg)
        self.console.print(Text.assemble(("Now chatting with ", "dim"), (arg, "bold"),
                                         (f" · session {self.session_id}", "dim")), highlight=False, soft_wrap=True)

    def _cmd_system(self, arg: str) -> None:
        if not arg:
            self._note(f"System prompt: {self.system_prompt}" if self.system_prompt else "No system prompt set.")
        elif arg == "-":
            self.system_prompt = None
            self._note("System prompt removed.")
        else:
            self.system_prompt = arg
            self._note("System prompt set; it is sent with every turn of this session.")

    def _cmd_session(self, _arg: str) -> None:
        table = Table(box=box.SIMPLE_HEAD, show_header=False)
        table.add_column("key", style="bold")
        table.add_column("value", overflow="fold")
        for key, value in (("session", self.session_id), ("model", self.model), ("server", self.state.base_url),
                           ("system prompt", self.system_prompt or "-"), ("turns", str(len(self.transcript) // 2))):
            table.add_row(key, value)
        self.console.print(table)

    def _cmd_new(self, _arg: str) -> None:
        self.session_id = str(uuid.uuid4())
        self.transcript = []
        self.state.remember(session=self.session_id)
        self.console.print(Text(f"New session {self.session_id}", style="bold"), highlight=False, soft_wrap=True)

    def _cmd_clear(self, _arg: str) -> None:
        self.console.clear()

    def _cmd_help(self, _arg: str) -> None:
        table = Table(box=box.SIMPLE_HEAD, show_header=False)
        table.add_column("command", style="bold")
        table.add_column("what it does")
        for name, text in _HELP:
            table.add_row(name, text)
        self.console.print(table)

    def _cmd_reasoning(self, _arg: str) -> None:
        self.show_reasoning = not self.show_reasoning
        self._note("Reasoning panels expanded." if self.show_reasoning else "Reasoning panels collapsed.")

    # -- a turn
    def _messages(self, text: str) -> list[dict[str, Any]]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, *self.transcript, {"role": "user", "content": text}]

    def send(self, text: str) -> TurnView:
        """Stream one answer live; Ctrl-C closes the stream and keeps the chat going."""
        view = TurnView()
        cancelled = False
        kwargs = _chat_kwargs(self.model, self._messages(text), self.session_id)
        with Live(view.render(), console=self.console, refresh_per_second=12, vertical_overflow="visible") as live:
            try:
                with friendly_errors(self.state, self.model):
                    stream = self.state.client().chat.completions.create(stream=True, **kwargs)
                    with contextlib.closing(stream):
                        for chunk in stream:
                            if view.feed(chunk):
                                live.update(view.render(show_reasoning=self.show_reasoning))
            except KeyboardInterrupt:
                cancelled = True
            finally:
                live.update(view.render(show_reasoning=self.show_reasoning) if view.started else Text(""))
        if cancelled:
            self._note("(answer cancelled)")
        elif not view.started:
            self._note("(empty answer)")
        if view.content or not cancelled:
            assistant: dict[str, Any] = {"role": "assistant", "content": view.content}
            self.transcript += [{"role": "user", "content": text}, assistant]
        return view

    def run(self, read: Callable[[str], str]) -> None:
        """The read-eval-print loop until /quit or Ctrl-D."""
        self.banner()
        while True:
            try:
                line = read("> ").strip()
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            if not line:
                continue
            if line.startswith("/"):
                if not self.command(line):
                    break
                continue
            try:
                self.send(line)
            except click.ClickException as exc:
                self._error(exc.format_message())
            except KeyboardInterrupt:  # Ctrl-C outside the stream loop (while the live view starts or stops)
                self._note("(answer cancelled)")
        self._note("Bye.")


@cli.command()
@click.argument("model", required=False)
@click.option("--session", "session_id", metavar="ID", help="Use this session id instead of a new one.")
@click.option("-r", "--resume", is_flag=True, help="Continue the last saved session (and model).")
@click.option("--system", "system_prompt", metavar="TEXT", help="Start with this system prompt.")
@click.pass_obj
def chat(state: AppState, model: str | None, session_id: str | None, resume: bool, system_prompt: str | None) -> None:
    """Chat with MODEL interactively (default: the last model used)."""
    model = model or state.saved.get("model")
    if not model:
        msg = f"no model given and none saved: pass one (`{PROG} models` lists them)"
        raise click.UsageError(msg)
    if session_id is None and resume:
        session_id = saved_session(state, "no saved session to resume")
    session_id = check_session_id(session_id) if session_id else str(uuid.uuid4())
    with get_err_console().status("Connecting…"):
        ids = [m.id for m in _list_models(state)]
    if not is_known_model(model, ids):
        raise unknown_model_error(state, model, ids)
    state.remember(model=model, session=session_id)
    ChatRepl(state, model, session_id, system_prompt).run(_input_reader(config_dir() / HISTORY_FILE))


# ---------------------------------------------------------------------------------------------------- config


@cli.group()
def config() -> None:
    """Show or change the saved settings."""


def _setting_key(name: str) -> str:
    """The config-file key for a setting name as typed (`base-url` or `base_url`)."""
    key = SETTING_NAMES.get(name.lower().replace("_", "-"))
    if key is None:
        msg = f"unknown setting {name!r}; choose from {', '.join(SETTING_NAMES)}"
        raise click.BadParameter(msg, param_hint="NAME")
    return key


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print the effective settings as JSON.")
@click.pass_obj
def config_show(state: AppState, as_json: bool) -> None:
    """Show the effective settings and where each comes from."""
    rows = {
        "base-url": (state.base_url, state.base_source),
        "api-key": ("(set)" if state.api_key else None, state.key_source),
        "model": (state.saved.get("model"), "config" if "model" in state.saved else "default"),
        "session": (state.saved.get("session"), "config" if "session" in state.saved else "default"),
    }
    if as_json:
        data = {name: {"value": value, "source": source} for name, (value, source) in rows.items()}
        _write_raw(get_console(), json.dumps(data, indent=2) + "\n")
        return
    table = Table(box=box.SIMPLE_HEAD, caption=f"saved in {config_dir() / CONFIG_FILE}")
    for column in ("setting", "value", "source"):
        table.add_column(column, overflow="fold")
    for name, (value, source) in rows.items():
        table.add_row(name, value or "-", source)
    get_console().print(table)


@config.command("set")
@click.argument("name")
@click.argument("value", required=False)
@click.pass_obj
def config_set(state: AppState, name: str, value: str | None) -> None:
    """Save a setting: base-url, api-key (prompted when VALUE is left out), model or session."""
    key = _setting_key(name)
    if value is None:
        if key != "api_key":
            msg = "VALUE is required"
            raise click.UsageError(msg)
        value = click.prompt("API key", hide_input=True)
    if key == "base_url":
        try:
            value = normalize_base_url(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="VALUE") from None
    elif key == "session":
        value = check_session_id(value)
    state.remember(**{key: value})
    shown = "(hidden)" if key == "api_key" else value
    get_console().print(Text(f"Saved {name.lower()} = {shown}"), highlight=False)


@config.command("unset")
@click.argument("name")
@click.pass_obj
def config_unset(state: AppState, name: str) -> None:
    """Forget a saved setting."""
    state.remember(**{_setting_key(name): None})
    get_console().print(Text(f"Removed {name.lower()}"), highlight=False)


if __name__ == "__main__":
    cli(prog_name=PROG)
