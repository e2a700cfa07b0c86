"""Letta events -> StreamingChunks -> OpenAI chunks, on event sequences recorded from the real Letta server."""

from __future__ import annotations

import json

import pytest
from haystack import Pipeline
from haystack.dataclasses import ChatMessage, ReasoningContent, StreamingChunk, ToolCall, ToolCallDelta
from hypothesis import given
from hypothesis import strategies as st

from letta_hayhooks.components.stream_adapter import StreamAdapter
from letta_hayhooks.letta_access.events import JsonStringDecoder, LettaEventTranslator
from letta_hayhooks.openai_wire import OpenAIChunkEncoder, completion_from_reply
from tests.conftest import load_events

CODE = 'Here:\n```python\nprint("a\\nb")  # C:\\new\\table\n```\ncaf\u00e9 \U0001F600 "quoted"'


def translate(name: str, **kwargs) -> tuple[LettaEventTranslator, list[StreamingChunk]]:
    translator = LettaEventTranslator(**kwargs)
    chunks: list[StreamingChunk] = []
    for event in load_events(name):
        if "_raises" not in event:
            chunks.extend(translator.feed(event))
    chunks.extend(translator.finish())
    return translator, chunks


class TestJsonStringDecoder:
    @given(st.text(), st.lists(st.integers(min_value=0, max_value=200), max_size=8))
    def test_any_text_split_anywhere_decodes_exactly(self, text: str, cuts: list[int]) -> None:
        escaped = json.dumps(text)[1:-1]
        points = sorted({min(c, len(escaped)) for c in cuts})
        pieces = [escaped[a:b] for a, b in zip([0, *points], [*points, len(escaped)], strict=True)]
        decoder = JsonStringDecoder()
        assert "".join(decoder.feed(p) for p in pieces) + decoder.flush() == text

    @given(st.text(), st.lists(st.integers(min_value=0, max_value=200), max_size=8))
    def test_ascii_escaped_surrogates_split_anywhere(self, text: str, cuts: list[int]) -> None:
        escaped = json.dumps(text, ensure_ascii=True)[1:-1]  # astral characters become \\ud83d\\ude00 pairs
        points = sorted({min(c, len(escaped)) for c in cuts})
        pieces = [escaped[a:b] for a, b in zip([0, *points], [*points, len(escaped)], strict=True)]
        decoder = JsonStringDecoder()
        assert "".join(decoder.feed(p) for p in pieces) + decoder.flush() == text

    def test_code_and_windows_paths_one_char_at_a_time(self) -> None:
        escaped = json.dumps(CODE, ensure_ascii=True)[1:-1]
        decoder = JsonStringDecoder()
        assert "".join(decoder.feed(ch) for ch in escaped) + decoder.flush() == CODE

    def test_escape_split_across_chunks_is_held_back(self) -> None:
        decoder = JsonStringDecoder()
        assert decoder.feed("Hello \\") == "Hello "
        assert decoder.feed("n\nWorld") == "\n\nWorld"

    def test_split_surrogate_pair(self) -> None:
        decoder = JsonStringDecoder()
        assert decoder.feed("smile \\ud83d") == "smile "
        assert decoder.feed("\\ude00!") == "\U0001F600!"

    def test_flush_returns_an_unfinished_escape_raw(self) -> None:
        decoder = JsonStringDecoder()
        assert decoder.feed("ends with \\u00") == "ends with "
        assert decoder.flush() == "\\u00"

    def test_lone_high_surrogate_becomes_replacement_char(self) -> None:
        decoder = JsonStringDecoder()
        assert decoder.feed("\\ud83dx") + decoder.flush() == "\ufffdx"

    def test_cut_closing_quote(self) -> None:
        decoder = JsonStringDecoder()
        assert decoder.feed('say \\"hi\\') == 'say "hi'
        assert decoder.flush(cut_quote=True) == '"'


class TestTranslator:
    def test_token_stream_text(self) -> None:
        translator, chunks = translate("text_tokens")
        content = [c.content for c in chunks if c.content]
        assert len(content) == 4
        assert "".join(content) == "You said: hello there"
        assert chunks[-1].finish_reason == "stop"
        assert translator.outcome.usage == {"prompt_tokens": 697, "completion_tokens": 5, "total_tokens": 702}
        assert all(c.tool_calls is None for c in chunks)

    def test_reasoning_becomes_reasoning_chunks(self) -> None:
        translator, chunks = translate("reasoning_tokens")
        reasoning = "".join(c.reasoning.reasoning_text for c in chunks if c.reasoning)
        assert reasoning == "Thinking about: ponder this"
        assert translator.reply().reasoning.reasoning_text == reasoning
        assert translator.reply().text == "You said: ponder this"

    def test_plain_text_is_never_unescaped(self) -> None:
        translator, _ = translate("code_tokens")
        assert translator.outcome.text == CODE

    def test_legacy_agent_token_stream_is_decoded(self) -> None:
        translator, chunks = translate("legacy_escaped_tokens", escaped_text=True)
        assert translator.outcome.text == CODE
        assert "".join(c.content for c in chunks if c.content) == CODE

    def test_legacy_agent_step_stream_is_plain(self) -> None:
        translator, _ = translate("legacy_steps")
        assert translator.outcome.text == CODE

    def test_client_tool_call_deltas(self) -> None:
        translator, chunks = translate("client_tool_tokens", client_tool_names={"get_weather"})
        deltas = [c.tool_calls[0] for c in chunks if c.tool_calls]
        assert deltas[0].index == 0
        assert deltas[0].tool_name == "get_weather"
        assert deltas[0].id.startswith("call_")
        assert all(d.id is None and d.tool_name is None for d in deltas[1:])
        assert json.loads("".join(d.arguments or "" for d in deltas)) == {"city": "Paris"}
        assert chunks[-1].finish_reason == "tool_calls"
        call = translator.reply().tool_calls[0]
        assert call.arguments == {"city": "Paris"}
        assert call.extra["arguments"] == '{"city": "Paris"}'

    def test_parallel_calls_keep_order_and_ids(self) -> None:
        translator, chunks = translate("parallel_tools_steps", client_tool_names={"get_weather", "get_time"})
        deltas = [d for c in chunks if c.tool_calls for d in c.tool_calls]
        assert [(d.index, d.tool_name) for d in deltas] == [(0, "get_weather"), (1, "get_time")]
        assert len({d.id for d in deltas}) == 2
        assert [c.tool_name for c in translator.reply().tool_calls] == ["get_weather", "get_time"]

    def test_server_tools_are_activity_not_client_calls(self) -> None:
        translator, chunks = translate("server_tool_tokens")
        assert not any(c.tool_calls for c in chunks)
        activity = [c.meta["tool_activity"] for c in chunks if "tool_activity" in c.meta]
        assert [(a["phase"], a["name"]) for a in activity] == [("call", "memory_insert"), ("return", "memory_insert")]
        assert activity[1]["status"] == "success"
        assert translator.reply().meta["server_tool_calls"] == ["memory_insert"]
        assert translator.reply().tool_calls == []
        assert chunks[-1].finish_reason == "stop"

    def test_approval_for_an_unknown_tool_is_not_a_client_call(self) -> None:
        translator, chunks = translate("client_tool_tokens", client_tool_names=set())
        assert not any(c.tool_calls for c in chunks)
        assert translator.outcome.server_approval == "get_weather"

    def test_llm_error_becomes_an_error_not_text(self) -> None:
        translator, chunks = translate("llm_error_tokens")
        assert translator.outcome.error is not None
        assert translator.outcome.error.code == "llm_api_error"
        assert translator.outcome.error.status == 502
        assert not any(c.content for c in chunks)

    def test_pings_produce_no_content(self) -> None:
        translator = LettaEventTranslator()
        chunks = translator.feed({"message_type": "ping", "id": "ping-1"})
        assert chunks[0].meta == {"ping": True}
        assert chunks[0].content == ""
        assert OpenAIChunkEncoder("id", "m").encode(chunks[0]) == []

    @pytest.mark.parametrize(("stop", "finish"), [("end_turn", "stop"), ("max_tokens_exceeded", "length"),
                                                   ("max_steps", "length"), ("no_tool_call", "stop")])
    def test_stop_reason_mapping(self, stop: str, finish: str) -> None:
        translator = LettaEventTranslator()
        translator.feed({"message_type": "assistant_message", "id": "m1", "content": "x"})
        translator.feed({"message_type": "stop_reason", "stop_reason": stop})
        assert translator.finish()[-1].finish_reason == finish

    def test_two_assistant_messages_are_kept_apart(self) -> None:
        translator = LettaEventTranslator()
        translator.feed({"message_type": "assistant_message", "id": "m1", "content": "first"})
        translator.feed({"message_type": "assistant_message", "id": "m2", "content": "second"})
        translator.finish()
        assert translator.outcome.text == "first\n\nsecond"


class TestEncoder:
    def test_role_only_on_the_first_delta(self) -> None:
        encoder = OpenAIChunkEncoder("chatcmpl-1", "agent")
        out = encoder.role() + encoder.encode(StreamingChunk(content="hi", index=0))
        assert out[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert out[1]["choices"][0]["delta"] == {"content": "hi"}
        assert encoder.role() == []

    def test_tool_call_deltas(self) -> None:
        encoder = OpenAIChunkEncoder("chatcmpl-1", "agent")
        first = encoder.encode(StreamingChunk(content="", index=0, tool_calls=[
            ToolCallDelta(index=0, id="call_1", tool_name="get_weather", arguments="")]))
        more = encoder.encode(StreamingChunk(content="", index=0, tool_calls=[ToolCallDelta(index=0, arguments="{}")]))
        assert first[0]["choices"][0]["delta"]["tool_calls"] == [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]
        assert more[0]["choices"][0]["delta"] == {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}

    def test_think_tags(self) -> None:
        encoder = OpenAIChunkEncoder("chatcmpl-1", "agent", think_tags=True)
        chunks = [
            StreamingChunk(content="", index=0, reasoning=ReasoningContent(reasoning_text="hmm")),
            StreamingChunk(content="answer", index=0),
            StreamingChunk(content="", finish_reason="stop"),
        ]
        deltas = [c["choices"][0]["delta"].get("content") for chunk in chunks for c in encoder.encode(chunk)]
        assert "".join(d for d in deltas if d) == "<think>hmm</think>answer"

    def test_usage_chunk_has_no_choices(self) -> None:
        usage = OpenAIChunkEncoder("chatcmpl-1", "agent").usage({"prompt_tokens": 1, "completion_tokens": 2,
                                                                 "total_tokens": 3})
        assert usage["choices"] == []
        assert usage["usage"]["total_tokens"] == 3


class TestStreamAdapter:
    def test_completion_with_tool_calls(self) -> None:
        reply = ChatMessage.from_assistant(
            tool_calls=[ToolCall(tool_name="get_weather", arguments={"city": "Rome"}, id="call_9",
                                 extra={"arguments": '{"city": "Rome"}'})],
            meta={"finish_reason": "tool_calls", "usage": {"prompt_tokens": 3, "completion_tokens": 4,
                                                           "total_tokens": 7}},
        )
        out = StreamAdapter().run(replies=[reply], model="agent", completion_id="chatcmpl-9")["completion"]
        choice = out["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        assert choice["message"]["content"] is None
        assert choice["message"]["tool_calls"][0]["function"] == {"name": "get_weather",
                                                                  "arguments": '{"city": "Rome"}'}
        assert out["usage"]["total_tokens"] == 7

    def test_reasoning_content_in_message(self) -> None:
        reply = ChatMessage.from_assistant("yes", reasoning=ReasoningContent(reasoning_text="because"),
                                           meta={"finish_reason": "stop"})
        message = completion_from_reply(reply, completion_id="c", model="m")["choices"][0]["message"]
        assert message == {"role": "assistant", "content": "yes", "reasoning_content": "because"}

    def test_pipeline_round_trip(self) -> None:
        pipeline = Pipeline()
        pipeline.add_component("adapter", StreamAdapter(think_tags=True))
        restored = Pipeline.loads(pipeline.dumps())
        assert restored.get_component("adapter").think_tags is True

    def test_empty_replies_are_an_error(self) -> None:
        with pytest.raises(Exception, match="no reply"):
            StreamAdapter().run(replies=[], model="m", completion_id="c")
