"""AcyclicPipeline runs a graph the way Haystack's Pipeline does, without the general scheduler."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from haystack import Pipeline, component, tracing
from haystack.core.errors import PipelineRuntimeError
from haystack.dataclasses import StreamingChunk
from haystack.tracing import Span, Tracer

from letta_hayhooks.chat.acyclic_pipeline import AcyclicPipeline


@component
class Source:
    @component.output_types(value=int, label=str)
    async def run_async(self, start: int) -> dict[str, Any]:
        return {"value": start + 1, "label": f"s{start}"}

    @component.output_types(value=int, label=str)
    def run(self, start: int) -> dict[str, Any]:
        raise AssertionError("the async path is used")


@component
class Slow:
    """Waits, then doubles: two of them side by side show whether independent components overlap."""

    def __init__(self, delay: float = 0.0, fail: bool = False, skip: bool = False) -> None:
        self.delay, self.fail, self.skip = delay, fail, skip

    @component.output_types(doubled=int)
    async def run_async(self, value: int, extra: int = 0) -> dict[str, Any]:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("boom")
        return {} if self.skip else {"doubled": 2 * value + extra}

    @component.output_types(doubled=int)
    def run(self, value: int, extra: int = 0) -> dict[str, Any]:
        raise AssertionError("the async path is used")


@component
class Join:
    @component.output_types(total=int)
    async def run_async(self, left: int, right: int, label: str) -> dict[str, Any]:
        return {"total": left + right}

    @component.output_types(total=int)
    def run(self, left: int, right: int, label: str) -> dict[str, Any]:
        raise AssertionError("the async path is used")


@component
class SyncOnly:
    @component.output_types(shout=str)
    def run(self, label: str) -> dict[str, Any]:
        return {"shout": label.upper()}


@component
class Streamer:
    @component.output_types(text=str)
    async def run_async(self, total: int, streaming_callback: Any = None) -> dict[str, Any]:
        for part in ("a", "b"):
            await streaming_callback(StreamingChunk(content=part))
        return {"text": f"ab{total}"}

    @component.output_types(text=str)
    def run(self, total: int, streaming_callback: Any = None) -> dict[str, Any]:
        raise AssertionError("the async path is used")


def diamond(cls: type[Pipeline], left: Slow | None = None, right: Slow | None = None) -> Pipeline:
    pipeline = cls()
    pipeline.add_component("source", Source())
    pipeline.add_component("left", left or Slow())
    pipeline.add_component("right", right or Slow())
    pipeline.add_component("join", Join())
    pipeline.add_component("shout", SyncOnly())
    pipeline.connect("source.value", "left.value")
    pipeline.connect("source.value", "right.value")
    pipeline.connect("left.doubled", "join.left")
    pipeline.connect("right.doubled", "join.right")
    pipeline.connect("source.label", "join.label")
    pipeline.connect("source.label", "shout.label")
    return pipeline


def inputs() -> dict[str, Any]:
    return {"source": {"start": 1}, "right": {"extra": 5}}


@pytest.mark.parametrize("include", [None, {"source"}, {"left", "join"}])
def test_same_result_as_haystack(include: set[str] | None) -> None:
    ours = asyncio.run(diamond(AcyclicPipeline).run_async(inputs(), include_outputs_from=include))
    theirs = asyncio.run(diamond(Pipeline).run_async(inputs(), include_outputs_from=include))
    assert ours == theirs
    assert ours["join"] == {"total": 4 + 9}


def test_independent_components_overlap() -> None:
    pipeline = diamond(AcyclicPipeline, Slow(0.2), Slow(0.2))
    loop = asyncio.new_event_loop()
    started = loop.time()
    loop.run_until_complete(pipeline.run_async(inputs()))
    elapsed = loop.time() - started
    loop.close()
    assert elapsed < 0.35  # 0.2 s each, side by side (in a row they would take 0.4 s)


def test_a_component_whose_sender_produced_nothing_does_not_run() -> None:
    result = asyncio.run(diamond(AcyclicPipeline, left=Slow(skip=True)).run_async(inputs()))
    assert "join" not in result
    assert result["shout"] == {"shout": "S1"}


def test_a_missing_input_is_refused() -> None:
    with pytest.raises(ValueError, match="start"):
        asyncio.run(diamond(AcyclicPipeline).run_async({"right": {"extra": 1}}))


def test_a_failure_names_its_component_and_cancels_its_neighbour() -> None:
    slow = Slow(5.0)
    pipeline = diamond(AcyclicPipeline, left=slow, right=Slow(fail=True))

    async def run() -> None:
        with pytest.raises(PipelineRuntimeError) as raised:
            await asyncio.wait_for(pipeline.run_async(inputs()), 2)
        assert raised.value.component_name == "right"
        assert isinstance(raised.value.__cause__, RuntimeError)
        assert not [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]

    asyncio.run(run())


def test_stream_goes_through_it() -> None:
    pipeline = diamond(AcyclicPipeline)
    pipeline.add_component("streamer", Streamer())
    pipeline.connect("join.total", "streamer.total")

    async def run() -> tuple[list[str], dict[str, Any]]:
        handle = pipeline.stream(inputs(), streaming_components=["streamer"])
        chunks = [chunk.content async for chunk in handle]
        return chunks, handle.result

    chunks, result = asyncio.run(run())
    assert chunks == ["a", "b"]
    assert result["streamer"] == {"text": "ab13"}


@component
class Holder:
    """Streams one chunk, then keeps what it was given (to see whether the stream copied it) or waits."""

    def __init__(self, wait: float = 0.0, fail: bool = False) -> None:
        self.wait, self.fail, self.seen, self.cancelled = wait, fail, None, False

    @component.output_types(kept=Any)
    async def run_async(self, thing: Any, streaming_callback: Any = None) -> dict[str, Any]:
        self.seen = thing
        await streaming_callback(StreamingChunk(content="first"))
        try:
            await asyncio.sleep(self.wait)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.fail:
            raise RuntimeError("boom")
        return {"kept": thing}

    @component.output_types(kept=Any)
    def run(self, thing: Any, streaming_callback: Any = None) -> dict[str, Any]:
        raise AssertionError("the async path is used")


def holder_pipeline(holder: Holder) -> AcyclicPipeline:
    pipeline = AcyclicPipeline()
    pipeline.add_component("holder", holder)
    return pipeline


def test_stream_hands_inputs_over_without_copying_them() -> None:
    holder, thing = Holder(), {"mutable": [1, 2]}

    async def run() -> dict[str, Any]:
        handle = holder_pipeline(holder).stream({"holder": {"thing": thing}}, streaming_components=["holder"])
        assert [chunk.content async for chunk in handle] == ["first"]
        return handle.result

    assert asyncio.run(run())["holder"]["kept"] is thing
    assert holder.seen is thing


def test_an_abandoned_stream_cancels_the_run() -> None:
    holder = Holder(wait=30)

    async def run() -> None:
        handle = holder_pipeline(holder).stream({"holder": {"thing": 1}})
        iterator = handle.__aiter__()
        assert (await anext(iterator)).content == "first"
        await iterator.aclose()
        with pytest.raises(RuntimeError, match="cancelled"):
            _ = handle.result

    asyncio.run(asyncio.wait_for(run(), 5))
    assert holder.cancelled


def test_a_stream_raises_the_run_failure_after_its_chunks() -> None:
    async def run() -> list[str]:
        seen = []
        handle = holder_pipeline(Holder(fail=True)).stream({"holder": {"thing": 1}})
        with pytest.raises(PipelineRuntimeError) as raised:
            async for chunk in handle:
                seen.append(chunk.content)  # noqa: PERF401 - the chunks before the failure are the point
        assert raised.value.component_name == "holder"
        return seen

    assert asyncio.run(run()) == ["first"]


def test_a_stream_with_a_callback_of_its_own_goes_through_haystack() -> None:
    mine: list[str] = []

    async def callback(chunk: StreamingChunk) -> None:
        mine.append(chunk.content)

    async def run() -> list[str]:
        handle = holder_pipeline(Holder()).stream({"holder": {"thing": 1, "streaming_callback": callback}})
        return [chunk.content async for chunk in handle]

    assert asyncio.run(run()) == ["first"]
    assert mine == ["first"]


def test_stream_refuses_unknown_or_non_streaming_components() -> None:
    pipeline = diamond(AcyclicPipeline)
    with pytest.raises(ValueError, match="Unknown"):
        pipeline.stream(inputs(), streaming_components=["nope"])
    with pytest.raises(ValueError, match="do not support streaming"):
        pipeline.stream(inputs(), streaming_components=["left"])


def test_a_cycle_is_left_to_haystack(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = AcyclicPipeline()
    pipeline.add_component("a", Slow())
    pipeline.add_component("b", Slow())
    pipeline.connect("a.doubled", "b.value")
    pipeline.connect("b.doubled", "a.extra")
    called = []

    async def haystack_run(self: Pipeline, data: dict, include: Any = None, limit: int = 4) -> dict:
        called.append(data)
        return {}

    monkeypatch.setattr(Pipeline, "run_async", haystack_run)
    asyncio.run(pipeline.run_async({"a": {"value": 1}}))
    assert called == [{"a": {"value": 1}}]


def test_the_graph_is_read_again_after_a_change() -> None:
    pipeline = diamond(AcyclicPipeline)
    asyncio.run(pipeline.run_async(inputs()))
    pipeline.add_component("more", Slow())
    pipeline.connect("join.total", "more.value")
    assert asyncio.run(pipeline.run_async(inputs()))["more"] == {"doubled": 26}


class _Recorder(Tracer):
    def __init__(self) -> None:
        self.spans: list[tuple[str, dict]] = []

    @contextlib.contextmanager
    def trace(self, operation_name: str, tags: dict[str, Any] | None = None,
              parent_span: Span | None = None) -> Iterator[Span]:
        self.spans.append((operation_name, dict(tags or {})))

        class _Span(Span):
            def set_tag(self, key: str, value: Any) -> None:
                pass

        yield _Span()

    def current_span(self) -> Span | None:
        return None


def test_spans_are_haystacks() -> None:
    recorder = _Recorder()
    tracing.enable_tracing(recorder)
    try:
        asyncio.run(diamond(AcyclicPipeline).run_async(inputs()))
    finally:
        tracing.disable_tracing()
    names = [(name, tags.get("haystack.component.name")) for name, tags in recorder.spans]
    assert names[0] == ("haystack.pipeline.run", None)
    assert sorted(component for name, component in names[1:] if name == "haystack.component.run") == [
        "join", "left", "right", "shout", "source"]
    assert not any("haystack.pipeline.input_data" in tags for _name, tags in recorder.spans)
