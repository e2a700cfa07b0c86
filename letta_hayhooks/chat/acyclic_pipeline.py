"""
A Haystack `Pipeline` that runs an acyclic graph's components in dependency order, without the general scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import networkx
from haystack import Pipeline, tracing
from haystack.core.errors import PipelineRuntimeError
from haystack.dataclasses import StreamingChunk


@dataclass(frozen=True)
class _Step:
    name: str
    instance: Any
    senders: tuple[tuple[str, str, str], ...]  # (sender, its output socket, this component's input socket)
    mandatory: frozenset[str]  # input sockets without a default
    connected: frozenset[str]  # input sockets fed by a sender
    leaf_outputs: frozenset[str]  # output sockets no component receives: they are the pipeline's outputs
    is_async: bool


class AcyclicPipeline(Pipeline):
    """
    A `Pipeline` whose `run_async` runs each component once, after its senders, in the graph's dependency order.

    An agent's pipeline is a small acyclic graph run once per turn. Haystack's general scheduler rebuilds its
    priority queue after every step, runs every component in a task of its own and deep-copies every input; on
    Python 3.11 that costs 1.3 to 2 ms a turn for seven components, as much as the rest of the proxy. Here the
    components get their senders' outputs as they are (this project's components never change their inputs).

    `stream()` has Haystack's contract too (a handle to iterate, then its `result`; abandoning it cancels the run)
    without its deep copy of the inputs. Everything else is Haystack's: the spans (`haystack.pipeline.run`,
    `haystack.component.run`), the failures (`PipelineRuntimeError` naming the component) and the result (the
    outputs nobody receives, plus those of `include_outputs_from`) have the same shape. A component whose connected
    inputs were not all produced does not run (nor does anything after it), as in Haystack. A graph with a cycle, or
    inputs given in Haystack's flat form, run through Haystack's own scheduler.
    """

    _steps_cache: tuple[tuple[Any, ...], tuple[tuple[_Step, ...], ...] | None] | None = None

    async def run_async(
        self, data: dict[str, Any], include_outputs_from: set[str] | None = None, concurrency_limit: int = 4
    ) -> dict[str, Any]:
        """
        Run the pipeline: the same contract as `Pipeline.run_async`.

        :param data: Inputs per component: `{"component": {"socket": value}}`.
        :param include_outputs_from: Components whose every output goes into the result.
        :param concurrency_limit: Used only when the graph needs Haystack's scheduler.
        :returns: `{"component": {"socket": value}}`: unreceived outputs, and all of `include_outputs_from`'s.
        :raises ValueError: when an input nobody sends is missing.
        :raises PipelineRuntimeError: when a component fails.
        """
        steps = self._steps()
        if steps is None or any(name not in self.graph.nodes for name in data):
            return await super().run_async(data, include_outputs_from, concurrency_limit)
        await self.warm_up_async()
        for step in (step for level in steps for step in level):
            missing = step.mandatory - step.connected - (data.get(step.name) or {}).keys()
            if missing:
                msg = f"Missing mandatory input(s) {sorted(missing)} of component '{step.name}'."
                raise ValueError(msg)
        include = include_outputs_from or set()
        produced: dict[str, Mapping[str, Any]] = {}
        result: dict[str, Any] = {}
        with tracing.tracer.trace(
            "haystack.pipeline.run",
            tags={"haystack.pipeline.metadata": self.metadata, "haystack.pipeline.execution_mode": "async",
                  "haystack.pipeline.max_runs_per_component": self._max_runs_per_component},
        ) as parent_span:
            parent_span.set_content_tag("haystack.pipeline.input_data", data)
            for level in steps:
                runnable = [(step, inputs) for step in level
                            if (inputs := self._inputs(step, data, produced)) is not None]
                for step, outputs in zip((step for step, _ in runnable),
                                         await self._run_level(runnable, parent_span), strict=True):
                    produced[step.name] = outputs
                    if step.name in include:
                        result[step.name] = dict(outputs)
                    else:
                        leaves = {key: value for key, value in outputs.items() if key in step.leaf_outputs}
                        if leaves:
                            result[step.name] = leaves
            parent_span.set_content_tag("haystack.pipeline.output_data", result)
        return result

    def stream(  # type: ignore[override] - the same contract; the handle is this module's
        self,
        data: dict[str, Any],
        *,
        streaming_components: list[str] | None = None,
        include_outputs_from: set[str] | None = None,
        concurrency_limit: int = 4,
        cancel_on_abandon: bool = True,
    ) -> Any:
        """
        Run the pipeline and stream the `StreamingChunk`s of its streaming components, as `Pipeline.stream` does.

        Haystack's version deep-copies every input first (Protocol `isinstance` checks on each value: 0.2 ms a turn
        on Python 3.11); here the inputs go to `run_async` as given. A component with a streaming callback of its
        own (at init or in `data`), a graph with a cycle or inputs in the flat form go through Haystack's version.

        :returns: A handle to iterate with `async for`; afterwards its `result` is what `run_async` returned.
        :raises ValueError: for unknown components or components that cannot stream in `streaming_components`.
        """
        streaming = [name for name, node in self.graph.nodes(data=True)
                     if getattr(node["instance"], "__haystack_supports_async__", False)
                     and "streaming_callback" in node["instance"].__haystack_input__]
        if streaming_components is not None:
            unknown = set(streaming_components) - set(self.graph.nodes)
            if unknown:
                msg = f"Unknown components in streaming_components: {sorted(unknown)}"
                raise ValueError(msg)
            if set(streaming_components) - set(streaming):
                msg = f"These components do not support streaming: {sorted(set(streaming_components) - set(streaming))}"
                raise ValueError(msg)
            streaming = [name for name in streaming if name in streaming_components]
        own_callback = any(getattr(self.graph.nodes[name]["instance"], "streaming_callback", None) is not None
                           or (data.get(name) or {}).get("streaming_callback") is not None for name in streaming)
        if own_callback or self._steps() is None or any(name not in self.graph.nodes for name in data):
            return super().stream(data, streaming_components=streaming_components,
                                  include_outputs_from=include_outputs_from, concurrency_limit=concurrency_limit,
                                  cancel_on_abandon=cancel_on_abandon)
        queue: asyncio.Queue[StreamingChunk | None] = asyncio.Queue()
        inputs = dict(data)
        for name in streaming:
            inputs[name] = {**(data.get(name) or {}), "streaming_callback": queue.put}

        async def runner() -> dict[str, Any]:
            try:
                return await self.run_async(inputs, include_outputs_from, concurrency_limit)
            finally:
                queue.put_nowait(None)

        return StreamHandle(queue, asyncio.create_task(runner()), cancel_on_abandon)

    @staticmethod
    def _inputs(step: _Step, data: dict[str, Any], produced: dict[str, Mapping[str, Any]]) -> dict[str, Any] | None:
        """The step's inputs, or None when a sender did not produce one it needs."""
        inputs = dict(data.get(step.name) or {})
        for sender, output, socket in step.senders:
            sent = produced.get(sender)
            if sent is not None and output in sent:
                inputs[socket] = sent[output]
            elif socket in step.mandatory:
                return None
        return inputs

    @classmethod
    async def _run_level(
        cls, runnable: list[tuple[_Step, dict[str, Any]]], parent_span: tracing.Span
    ) -> list[Mapping[str, Any]]:
        """Run components that do not depend on each other: concurrently, as Haystack would, when there are several."""
        if len(runnable) <= 1:
            return [await cls._run_step(step, inputs, parent_span) for step, inputs in runnable]
        # the last one runs in this task: one task fewer to schedule
        tasks = [asyncio.ensure_future(cls._run_step(step, inputs, parent_span)) for step, inputs in runnable[:-1]]
        try:
            last = await cls._run_step(*runnable[-1], parent_span)
            return [*await asyncio.gather(*tasks), last]  # the first failure comes out at once
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    @staticmethod
    async def _run_step(step: _Step, inputs: dict[str, Any], parent_span: tracing.Span) -> Mapping[str, Any]:
        instance = step.instance
        with tracing.tracer.trace(
            "haystack.component.run",
            tags={"haystack.component.name": step.name, "haystack.component.type": type(instance).__name__},
            parent_span=parent_span,
        ) as span:
            span.set_content_tag("haystack.component.input", inputs)
            try:
                if step.is_async:
                    outputs = await instance.run_async(**inputs)
                else:
                    outputs = await asyncio.to_thread(instance.run, **inputs)
            except PipelineRuntimeError:
                raise
            except Exception as error:
                raise PipelineRuntimeError.from_exception(step.name, type(instance), error) from error
            if not isinstance(outputs, Mapping):
                raise PipelineRuntimeError.from_invalid_output(step.name, type(instance), outputs)
            span.set_tag("haystack.component.visits", 1)
            span.set_content_tag("haystack.component.output", outputs)
            return outputs

    def _steps(self) -> tuple[tuple[_Step, ...], ...] | None:
        """
        The components in dependency order, grouped in levels whose members do not depend on each other (None for a
        graph with a cycle); rebuilt when the graph changes.
        """
        graph = self.graph
        key = (tuple(graph.nodes), tuple(graph.edges))
        if self._steps_cache is not None and self._steps_cache[0] == key:
            return self._steps_cache[1]
        steps: tuple[tuple[_Step, ...], ...] | None
        try:
            order = list(networkx.lexicographical_topological_sort(graph))
        except networkx.NetworkXUnfeasible:
            steps = None
        else:
            inputs = self.inputs(include_components_with_connected_inputs=True)
            leaves = self.outputs(include_components_with_connected_outputs=False)
            levels: dict[str, int] = {}
            built: list[list[_Step]] = []
            for name in order:
                senders = tuple((sender, data["from_socket"].name, data["to_socket"].name)
                                for sender, _receiver, data in graph.in_edges(name, data=True))
                instance = graph.nodes[name]["instance"]
                levels[name] = 1 + max((levels[sender] for sender, _o, _s in senders), default=-1)
                while len(built) <= levels[name]:
                    built.append([])
                built[levels[name]].append(_Step(
                    name=name,
                    instance=instance,
                    senders=senders,
                    mandatory=frozenset(s for s, spec in inputs.get(name, {}).items() if "default_value" not in spec),
                    connected=frozenset(socket for _s, _o, socket in senders),
                    leaf_outputs=frozenset(leaves.get(name, {})),
                    is_async=bool(getattr(instance, "__haystack_supports_async__", False)),
                ))
            steps = tuple(tuple(level) for level in built)
        self._steps_cache = (key, steps)
        return steps


class StreamHandle:
    """
    What `AcyclicPipeline.stream` returns, with the interface of Haystack's `PipelineStreamHandle`: iterate it for
    the chunks; `result` is the run's output once the iteration ended; `aclose()` cancels the run.
    """

    _CLEANUP_SECONDS = 1.0  # as Haystack's: a component cannot hold up the cleanup longer

    def __init__(self, queue: asyncio.Queue[StreamingChunk | None], task: asyncio.Task[dict[str, Any]],
                 cancel_on_abandon: bool = True) -> None:
        self._queue = queue
        self._task = task
        self._cancel_on_abandon = cancel_on_abandon

    async def __aiter__(self) -> AsyncIterator[StreamingChunk]:
        """The chunks as they come; the run's failure is raised at the end; abandoning it cancels the run."""
        try:
            while (chunk := await self._queue.get()) is not None:
                yield chunk
            await self._task  # its failure surfaces here
        finally:
            if self._cancel_on_abandon:
                await self.aclose()

    @property
    def result(self) -> dict[str, Any]:
        """
        The pipeline's output.

        :raises RuntimeError: before the run finished, or after it was cancelled.
        :raises Exception: the run's own failure.
        """
        if not self._task.done():
            msg = "Pipeline has not finished; iterate the handle first."
            raise RuntimeError(msg)
        if self._task.cancelled():
            msg = "Pipeline was cancelled; no result available."
            raise RuntimeError(msg)
        return self._task.result()

    async def aclose(self) -> None:
        """Cancel the run if it still goes, waiting a bounded time for it to stop."""
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._task, timeout=self._CLEANUP_SECONDS)
