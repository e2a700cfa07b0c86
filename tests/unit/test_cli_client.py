"""
Unit tests of the terminal client (`cli_client.py`) without a server: URL handling, settings precedence and
persistence, model suggestions, stream rendering, error translation and the REPL's turn logic with a fake SDK.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import httpx
import openai
import pytest
from click.testing import CliRunner
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from rich.console import Console
from rich.spinner import Spinner

from letta_hayhooks import cli_client
from letta_hayhooks.cli_client import (
    AppState,
    ChatRepl,
    TurnView,
    activity_line,
    check_session_id,
    cli,
    flatten,
    format_created,
    is_known_model,
    load_config,
    normalize_base_url,
    resolve_setting,
    save_config,
    suggest_models,
    translate_error,
)
from letta_hayhooks.local.letta_server import free_port
from tests.conftest import isolate_cli_config


@pytest.fixture(autouse=True)
def isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own config dir and no client variables from the outside."""
    return isolate_cli_config(tmp_path / "cfg", monkeypatch)


@pytest.fixture
def utc() -> Iterator[None]:
    """Local time is UTC for the test (the process time zone is restored afterwards)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def _run(*args: str, **kwargs: Any) -> Any:
    return CliRunner().invoke(cli, list(args), **kwargs)


def _chunk(delta: dict[str, Any], finish: str | None = None) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    })


def _state(**kwargs: Any) -> AppState:
    return AppState(base_url="http://127.0.0.1:9", base_source="default", api_key=None, key_source="default", **kwargs)


class TestUrlsAndSettings:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("http://localhost:1416", "http://localhost:1416"),
            ("http://localhost:1416/", "http://localhost:1416"),
            ("http://localhost:1416/v1", "http://localhost:1416"),
            ("http://localhost:1416/v1/", "http://localhost:1416"),
            ("https://proxy.example/letta/v1", "https://proxy.example/letta"),
            ("  localhost:1416/v1 ", "http://localhost:1416"),
            ("http://host/v10", "http://host/v10"),  # only a whole /v1 segment is removed
        ],
    )
    def test_normalize_base_url(self, raw: str, expected: str) -> None:
        assert normalize_base_url(raw) == expected

    @pytest.mark.parametrize("raw", ["", "   ", "ftp://host/v1"])
    def test_normalize_base_url_rejects(self, raw: str) -> None:
        with pytest.raises(ValueError, match="URL"):
            normalize_base_url(raw)

    @pytest.mark.parametrize(
        ("flag", "env", "saved", "expected"),
        [
            ("f", "e", "c", ("f", "flag")),
            (None, "e", "c", ("e", "env")),
            (None, "", "c", ("c", "config")),
            (None, None, None, ("d", "default")),
        ],
    )
    def test_precedence(self, flag: str | None, env: str | None, saved: str | None, expected: tuple) -> None:
        assert resolve_setting(flag, env, saved, "d") == expected

    def test_save_and_load_round_trip_owner_only(self, isolated_config: Path) -> None:
        path = save_config({"base_url": "http://h:1", "api_key": "secret"})
        assert path == isolated_config / "cli.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert load_config() == {"base_url": "http://h:1", "api_key": "secret"}

    def test_unreadable_config_is_empty_not_a_crash(self, isolated_config: Path, capsys: pytest.CaptureFixture) -> None:
        isolated_config.mkdir(parents=True)
        (isolated_config / "cli.json").write_text("{not json")
        assert load_config() == {}
        assert "unreadable config" in capsys.readouterr().err

    @pytest.mark.parametrize("bad", ["", "x" * 257, "a\nb", "tab\there"])
    def test_session_ids_the_server_would_refuse(self, bad: str) -> None:
        with pytest.raises(click.BadParameter):
            check_session_id(bad)

    def test_session_id_is_trimmed(self) -> None:
        assert check_session_id("  chat-1 ") == "chat-1"


class TestConfigCommands:
    def test_set_base_url_is_normalised_and_reused(self, isolated_config: Path) -> None:
        result = _run("config", "set", "base-url", "http://h:2000/v1/")
        assert result.exit_code == 0, result.output
        assert json.loads((isolated_config / "cli.json").read_text()) == {"base_url": "http://h:2000"}
        shown = json.loads(_run("config", "show", "--json").stdout)
        assert shown["base-url"] == {"value": "http://h:2000", "source": "config"}

    def test_precedence_flag_over_env_over_config(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert _run("config", "set", "base-url", "http://from-config:1").exit_code == 0
        monkeypatch.setenv("LETTA_HAYHOOKS_URL", "http://from-env:2/v1")
        shown = json.loads(_run("config", "show", "--json").stdout)
        assert shown["base-url"] == {"value": "http://from-env:2", "source": "env"}
        shown = json.loads(_run("--base-url", "http://from-flag:3", "config", "show", "--json").stdout)
        assert shown["base-url"] == {"value": "http://from-flag:3", "source": "flag"}
        monkeypatch.delenv("LETTA_HAYHOOKS_URL")
        shown = json.loads(_run("config", "show", "--json").stdout)
        assert shown["base-url"] == {"value": "http://from-config:1", "source": "config"}

    def test_default_base_url(self) -> None:
        shown = json.loads(_run("config", "show", "--json").stdout)
        assert shown["base-url"] == {"value": "http://localhost:1416", "source": "default"}
        assert shown["model"] == {"value": None, "source": "default"}

    def test_api_key_is_saved_owner_only_and_never_shown(self, isolated_config: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
        result = _run("config", "set", "api-key", input="s3cret-key\n")
        assert result.exit_code == 0, result.output
        path = isolated_config / "cli.json"
        assert json.loads(path.read_text())["api_key"] == "s3cret-key"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        shown = _run("config", "show")
        assert "s3cret-key" not in shown.output
        assert json.loads(_run("config", "show", "--json").stdout)["api-key"] == {"value": "(set)", "source": "config"}
        monkeypatch.setenv("LETTA_HAYHOOKS_API_KEY", "env-key")
        assert json.loads(_run("config", "show", "--json").stdout)["api-key"]["source"] == "env"

    def test_model_and_session_set_and_unset(self, isolated_config: Path) -> None:
        assert _run("config", "set", "model", "agent-x").exit_code == 0
        assert _run("config", "set", "session", "chat-7").exit_code == 0
        assert json.loads((isolated_config / "cli.json").read_text()) == {"model": "agent-x", "session": "chat-7"}
        assert _run("config", "unset", "session").exit_code == 0
        assert json.loads((isolated_config / "cli.json").read_text()) == {"model": "agent-x"}

    def test_unknown_setting_is_a_usage_error(self) -> None:
        result = _run("config", "set", "colour", "blue")
        assert result.exit_code == 2
        assert "unknown setting" in result.output

    def test_bad_base_url_flag_is_a_usage_error(self) -> None:
        result = _run("--base-url", "ftp://nope", "models")
        assert result.exit_code == 2
        assert "--base-url" in result.output

    def test_help_and_version(self) -> None:
        assert "Usage:" in _run("-h").output
        version = _run("--version")
        assert version.exit_code == 0
        assert re.search(r"version \d+\.\d+", version.output)

    def test_chat_without_model_or_saved_one_is_a_usage_error(self) -> None:
        result = _run("chat")
        assert result.exit_code == 2
        assert "no model" in result.output


class TestHelpers:
    def test_suggestions_prefer_containing_ids(self) -> None:
        ids = ["support-bot-1a2b", "sales-bot-3c4d", "writer"]
        assert suggest_models("support-bot", ids)[0] == "support-bot-1a2b"
        assert suggest_models("writre", ids) == ["writer"]
        assert suggest_models("zzz", ids) == []

    def test_suggestions_are_limited(self) -> None:
        ids = [f"bot-{i}" for i in range(10)]
        assert len(suggest_models("bot", ids)) == 3

    def test_agent_ids_are_known_models(self) -> None:
        assert is_known_model("agent-0d3f5a8e-1111-4222-8333-944445555666", [])
        assert is_known_model("writer", ["writer"])
        assert not is_known_model("writer2", ["writer"])

    def test_format_created_as_a_date(self, utc: None) -> None:
        assert format_created(1_700_000_000) == "2023-11-14 22:13:20"
        assert format_created(None) == "-"
        assert format_created("soon") == "-"
        assert format_created(0) == "-"

    def test_flatten(self) -> None:
        body = {"status": "ok", "letta": {"reachable": True, "version": "0.16.8"}, "extra": {}}
        assert flatten(body) == [("status", "ok"), ("letta.reachable", True), ("letta.version", "0.16.8"),
                                 ("extra", {})]

    def test_activity_lines(self) -> None:
        assert activity_line({"phase": "call", "name": "memory_insert"}) == "⚙ running memory_insert…"
        assert activity_line({"phase": "return", "name": "memory_insert", "status": "success"}) == "✓ memory_insert"
        assert activity_line({"phase": "return", "name": "web", "status": "error"}) == "✗ web (error)"


class TestSdkTypes:
    """The SDK gets only its own types: openai 3.5x and later (httpx2) refuse httpx objects."""

    def test_the_client_is_built_and_carries_the_sdk_timeout(self) -> None:
        client = _state().client()
        assert isinstance(client.timeout, openai.Timeout)
        assert (client.timeout.read, client.timeout.connect) == (900.0, 5.0)

    def test_sdk_http_is_the_library_the_sdk_speaks(self) -> None:
        assert isinstance(openai.DefaultHttpxClient(), cli_client.SDK_HTTP.Client)

    def test_a_transport_error_of_the_sdk_library_mid_stream_is_one_line(self) -> None:
        exc = cli_client.SDK_HTTP.ReadTimeout("timed out")
        assert "did not answer in time" in translate_error(exc, _state()).format_message()
        exc = cli_client.SDK_HTTP.RemoteProtocolError("peer closed")
        assert "cannot reach letta-hayhooks" in translate_error(exc, _state()).format_message()

    def test_plain_httpx_errors_of_the_health_call_are_one_line_too(self) -> None:
        assert "did not answer in time" in translate_error(httpx.ReadTimeout("slow"), _state()).format_message()


class TestErrors:
    # the SDK's exceptions wrap the requests and responses of its own HTTP library
    request = cli_client.SDK_HTTP.Request("POST", "http://127.0.0.1:9/v1/chat/completions")

    def test_connection_error_hints_at_serve(self) -> None:
        message = translate_error(openai.APIConnectionError(request=self.request), _state()).format_message()
        assert "cannot reach letta-hayhooks at http://127.0.0.1:9" in message
        assert "letta-hayhooks serve" in message

    def test_401_hints_at_the_key(self) -> None:
        response = cli_client.SDK_HTTP.Response(401, request=self.request)
        exc = openai.AuthenticationError("x", response=response, body={"message": "Missing API key."})
        message = translate_error(exc, _state()).format_message()
        assert "Missing API key." in message
        assert "--api-key" in message

    def test_other_status_shows_the_server_message(self) -> None:
        response = cli_client.SDK_HTTP.Response(503, request=self.request)
        exc = openai.APIStatusError("x", response=response, body={"message": "Letta is unreachable."})
        assert translate_error(exc, _state()).format_message() == "the server answered 503: Letta is unreachable."

    def test_unknown_model_lists_suggestions(self) -> None:
        response = cli_client.SDK_HTTP.Response(404, request=self.request)
        exc = openai.NotFoundError("x", response=response, body={"message": "nope", "code": "model_not_found"})
        state = _state()
        state._client = SimpleNamespace(models=SimpleNamespace(list=lambda: [SimpleNamespace(id="helper-12ab")]))
        message = translate_error(exc, state, "helper").format_message()
        assert message == "unknown model 'helper'. Did you mean: helper-12ab?"

    def test_unreachable_server_is_one_line_without_traceback(self) -> None:
        result = _run("--base-url", f"http://127.0.0.1:{free_port()}", "models")
        assert result.exit_code == 1
        assert result.stderr.startswith("Error: cannot reach letta-hayhooks")
        assert result.stderr.strip().count("\n") == 0
        assert "Traceback" not in result.output

    def test_debug_keeps_the_exception(self) -> None:
        result = _run("--debug", "--base-url", f"http://127.0.0.1:{free_port()}", "models")
        assert result.exit_code == 1
        assert isinstance(result.exception, openai.APIConnectionError)


def _activity(phase: str, status: str | None = None) -> dict[str, Any]:
    return {"phase": phase, "name": "memory_insert", "id": "call_1", **({"status": status} if status else {})}


STREAM = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"reasoning_content": "Thinking about"}),
    _chunk({"reasoning_content": ": tea"}),
    _chunk({"letta_tool_activity": _activity("call")}),
    _chunk({"letta_tool_activity": _activity("return", "success")}),
    _chunk({"content": "You said: "}),
    _chunk({"content": "**tea**"}),
    _chunk({"tool_calls": [{"index": 0, "id": "call_9", "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":'}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]}),
    _chunk({}, finish="tool_calls"),
]


class TestTurnView:
    def test_feed_collects_every_kind_in_order(self) -> None:
        view = TurnView()
        events = [event for chunk in STREAM for event in view.feed(chunk)]
        assert [kind for kind, _ in events] == ["reasoning", "reasoning", "activity", "activity", "content",
                                                "content", "tool_call", "tool_call"]
        assert view.reasoning == "Thinking about: tea"
        assert view.content == "You said: **tea**"
        assert [block.kind for block in view.blocks] == ["reasoning", "activity", "content", "tool_call"]
        assert view.blocks[1].data["status"] == "success"  # the return updated the call's line
        assert view.tool_call_line(0) == '→ tool call get_weather({"city": "Paris"})'
        assert view.finish_reason == "tool_calls"

    def test_role_chunk_alone_keeps_the_spinner(self) -> None:
        view = TurnView()
        assert view.feed(STREAM[0]) == []
        assert isinstance(view.render(), Spinner)

    def test_render_shows_reasoning_panel_tools_and_markdown(self) -> None:
        view = TurnView()
        for chunk in STREAM:
            view.feed(chunk)
        console = Console(record=True, width=70, file=io.StringIO())
        console.print(view.render())
        text = console.export_text()
        assert "▾ reasoning" in text
        assert "Thinking about: tea" in text
        assert "✓ memory_insert" in text
        assert "You said: tea" in text  # Markdown rendered: no asterisks
        assert "get_weather" in text
        assert text.index("Thinking about") < text.index("memory_insert") < text.index("You said")

    def test_collapsed_reasoning_is_one_line(self) -> None:
        view = TurnView()
        for chunk in STREAM[:3]:
            view.feed(chunk)
        console = Console(record=True, width=70, file=io.StringIO())
        console.print(view.render(show_reasoning=False))
        text = console.export_text()
        assert "▸ reasoning (3 words" in text
        assert "Thinking about" not in text


class FakeStream:
    """What `chat.completions.create(stream=True)` returns: iterable chunks, `close()`; may raise Ctrl-C."""

    def __init__(self, chunks: list[ChatCompletionChunk], interrupt_at: int | None = None) -> None:
        self.chunks = chunks
        self.interrupt_at = interrupt_at
        self.closed = False

    def __iter__(self):
        for i, chunk in enumerate(self.chunks):
            if i == self.interrupt_at:
                raise KeyboardInterrupt
            yield chunk

    def close(self) -> None:
        self.closed = True


def _repl(streams: list[FakeStream]) -> tuple[ChatRepl, list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []

    def create(**kwargs: Any) -> FakeStream:
        calls.append(kwargs)
        return streams[len(calls) - 1]

    state = _state()
    state._client = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create)))
    return ChatRepl(state, "helper", "session-1"), calls


def _answer(text: str) -> FakeStream:
    return FakeStream([_chunk({"role": "assistant", "content": ""}), _chunk({"content": text}),
                       _chunk({}, finish="stop")])


class TestRepl:
    def test_transcript_system_and_session_header_are_sent(self, capsys: pytest.CaptureFixture) -> None:
        repl, calls = _repl([_answer("You said: one"), _answer("You said: two")])
        repl.command("/system Be brief.")
        repl.send("one")
        repl.send("two")
        assert calls[1]["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "You said: one"},
            {"role": "user", "content": "two"},
        ]
        assert calls[1]["extra_headers"] == {"X-Session-Id": "session-1"}
        assert calls[1]["extra_body"] == {"letta_tool_activity": "delta"}
        assert calls[1]["stream"] is True
        out = capsys.readouterr().out
        assert "You said: one" in out
        assert "You said: two" in out

    def test_ctrl_c_closes_the_stream_and_keeps_the_partial_answer(self, capsys: pytest.CaptureFixture) -> None:
        interrupted = FakeStream([_chunk({"role": "assistant", "content": ""}), _chunk({"content": "partial"}),
                                  _chunk({"content": " never shown"})], interrupt_at=2)
        repl, calls = _repl([interrupted, _answer("You said: next")])
        repl.send("long one")
        assert interrupted.closed
        assert "answer cancelled" in capsys.readouterr().out
        repl.send("next")
        assert calls[1]["messages"][-3:] == [
            {"role": "user", "content": "long one"},
            {"role": "assistant", "content": "partial"},
            {"role": "user", "content": "next"},
        ]

    def test_ctrl_c_before_any_token_drops_the_turn(self) -> None:
        repl, _ = _repl([FakeStream([_chunk({"role": "assistant"})], interrupt_at=0)])
        repl.send("never mind")
        assert repl.transcript == []

    def test_slash_commands(self, isolated_config: Path, capsys: pytest.CaptureFixture) -> None:
        repl, _ = _repl([_answer("You said: hi")])
        repl.send("hi")
        lines = iter(["/new", "/system", "/system Speak like a pirate.", "/system", "/session", "/bogus", "/help",
                      "/reasoning", "/quit", "not reached"])
        repl.run(lambda _prompt: next(lines))
        out, err = capsys.readouterr()
        assert repl.session_id != "session-1"
        assert re.search(rf"New session {repl.session_id}", out)
        assert repl.transcript == []  # a new session starts a new transcript
        assert json.loads((isolated_config / "cli.json").read_text())["session"] == repl.session_id
        assert "No system prompt set." in out
        assert "System prompt: Speak like a pirate." in out
        assert repl.system_prompt == "Speak like a pirate."
        assert "unknown command /bogus" in err
        assert "/quit" in out  # the help table
        assert repl.show_reasoning is False
        assert out.rstrip().endswith("Bye.")

    def test_eof_leaves_and_ctrl_c_at_the_prompt_does_not(self, capsys: pytest.CaptureFixture) -> None:
        repl, _ = _repl([])
        events = iter([KeyboardInterrupt, EOFError])

        def read(_prompt: str) -> str:
            raise next(events)

        repl.run(read)
        assert "Bye." in capsys.readouterr().out

    def test_errors_during_a_turn_do_not_end_the_chat(self, capsys: pytest.CaptureFixture) -> None:
        state = _state()

        def create(**_kwargs: Any) -> None:
            raise openai.APIConnectionError(
                request=cli_client.SDK_HTTP.Request("POST", "http://127.0.0.1:9/v1/chat/completions"))

        state._client = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create)))
        repl = ChatRepl(state, "helper", "s")
        lines = iter(["hello", "/quit"])
        repl.run(lambda _prompt: next(lines))
        captured = capsys.readouterr()
        assert "cannot reach letta-hayhooks" in captured.err
        assert "Bye." in captured.out
        assert repl.transcript == []


def _serve_answers(monkeypatch: pytest.MonkeyPatch, chunks: list[ChatCompletionChunk],
                   completion: ChatCompletion | None = None) -> list[dict[str, Any]]:
    """The SDK client of every `ask`: streams `chunks`, or returns `completion` when not streaming."""
    calls: list[dict[str, Any]] = []

    def create(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return FakeStream(chunks) if kwargs.get("stream") else completion

    client = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create)))
    monkeypatch.setattr(AppState, "client", lambda _state: client)
    return calls


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
ANSWER = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"reasoning_content": "Thinking about: hi"}),
    _chunk({"letta_tool_activity": _activity("call")}),
    _chunk({"content": "You said: "}),
    _chunk({"content": "hi"}),
    _chunk({}, finish="stop"),
    ChatCompletionChunk.model_validate({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0,
                                        "model": "m", "choices": [], "usage": USAGE}),
]


class TestAskJson:
    def test_streamed_json_is_one_completion(self, monkeypatch: pytest.MonkeyPatch) -> None:
        calls = _serve_answers(monkeypatch, ANSWER)
        result = _run("ask", "helper", "hi", "--json")
        assert result.exit_code == 0, result.output
        assert calls[0]["stream"] is True
        completion = json.loads(result.stdout)
        assert completion == {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "You said: hi", "reasoning_content": "Thinking about: hi"}}],
            "usage": USAGE,
        }

    def test_streamed_tool_calls_are_joined(self, monkeypatch: pytest.MonkeyPatch) -> None:
        _serve_answers(monkeypatch, STREAM)
        completion = json.loads(_run("ask", "helper", "weather?", "--json").stdout)
        choice = completion["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        assert choice["message"]["content"] == "You said: **tea**"
        assert choice["message"]["tool_calls"] == [{"id": "call_9", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris"}'}}]
        assert "usage" not in completion  # this stream carried none

    def test_non_streamed_json_is_the_servers_completion(self, monkeypatch: pytest.MonkeyPatch) -> None:
        body = {"id": "chatcmpl-2", "object": "chat.completion", "created": 5, "model": "helper",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "You said: hi"}}]}
        calls = _serve_answers(monkeypatch, [], ChatCompletion.model_validate(body))
        result = _run("ask", "helper", "hi", "--no-stream", "--json")
        assert result.exit_code == 0, result.output
        assert "stream" not in calls[0]
        assert json.loads(result.stdout) == body

    def test_raw_chunks_are_the_stream(self, monkeypatch: pytest.MonkeyPatch) -> None:
        _serve_answers(monkeypatch, ANSWER)
        result = _run("ask", "helper", "hi", "--raw-chunks")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == [chunk.to_dict() for chunk in ANSWER]

    @pytest.mark.parametrize("extra", ["--json", "--no-stream"])
    def test_raw_chunks_go_alone(self, monkeypatch: pytest.MonkeyPatch, extra: str) -> None:
        calls = _serve_answers(monkeypatch, ANSWER)
        result = _run("ask", "helper", "hi", "--raw-chunks", extra)
        assert result.exit_code == 2
        assert "--raw-chunks" in result.stderr
        assert calls == []

    def test_help_names_both(self) -> None:
        text = _run("ask", "--help").stdout
        assert "one chat.completion JSON object" in text and "--raw-chunks" in text


def test_module_exposes_cli_for_the_entry_point() -> None:
    assert isinstance(cli_client.cli, click.Group)
    assert cli_client.cli.name == "cli"
