"""
Diagnostic: where one request's time goes inside the proxy, step by step.

Starts `letta-hayhooks serve` with timing marks wrapped around the request path (the chat gate, the Hayhooks
wrapper, the Haystack pipeline and each of its components, the letta-client call, the TCP connect to Letta, each
Letta event the generator reads, each ASGI send), sends turns through it (non-stream and stream, one at a time),
and prints the median time of every mark after the client sent the request, next to the timing relay's view of
Letta. The marks cost a few microseconds each; this is for finding the slow steps, not for headline numbers.

    python -m benchmarks.timeline [--turns 30] [--session | --transcript]

Without `--session` or `--transcript`, run it with `LETTA_HAYHOOKS_SESSION_POLICY=agent` to see the one-message
turn of the overhead benchmark (under the default policy each keyless one-message request is a new chat).

The wrapped names are the proxy's internals: a mark whose target is renamed is skipped with a warning.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

_MARKS: list[tuple[str, float]] = []


def _mark(name: str) -> None:
    _MARKS.append((name, time.monotonic()))


def _wrap(owner: object, attr: str, label: str) -> None:
    """Mark when `owner.attr` (a function or coroutine function, a static method too) is entered and left."""
    original = getattr(owner, attr, None)
    if original is None:
        print(f"timeline: cannot wrap {owner!r}.{attr}", file=sys.stderr)
        return
    wrapped: Callable[..., object]
    if inspect.iscoroutinefunction(original):
        async def wrapped(*args: object, **kwargs: object) -> object:
            _mark(f"{label} >")
            try:
                return await original(*args, **kwargs)
            finally:
                _mark(f"{label} <")
    else:
        def wrapped(*args: object, **kwargs: object) -> object:
            _mark(f"{label} >")
            try:
                return original(*args, **kwargs)
            finally:
                _mark(f"{label} <")
    wrapped = functools.wraps(original)(wrapped)
    static = isinstance(inspect.getattr_static(owner, attr), staticmethod)
    setattr(owner, attr, staticmethod(wrapped) if static else wrapped)


def _instrumented_serve(out: str, argv: list[str]) -> None:  # noqa: PLR0915 - one mark after another
    """Run `letta-hayhooks serve` in this process with the marks installed; SIGUSR1 writes them to `out`."""
    from letta_hayhooks.server import hayhooks_defaults  # noqa: PLC0415

    hayhooks_defaults.apply()  # before Hayhooks is imported, as `letta-hayhooks serve` does

    def dump(*_args: object) -> None:
        Path(out).write_text("\n".join(f"{name}\t{t}" for name, t in _MARKS))
        os._exit(0)

    signal.signal(signal.SIGUSR1, dump)
    from haystack import Pipeline  # noqa: PLC0415

    from letta_hayhooks.chat import service as chat_service  # noqa: PLC0415
    from letta_hayhooks.components import (  # noqa: PLC0415
        AgentRouter,
        ChatRecorder,
        LettaChatGenerator,
        PromptOverlay,
        SessionResolver,
        StreamAdapter,
        ToolSync,
    )
    from letta_hayhooks.letta_access import events  # noqa: PLC0415
    from letta_hayhooks.server import agent_models, responses  # noqa: PLC0415

    _wrap(agent_models.AgentModels, "resolve", "1 model resolution")
    _wrap(responses.ResponsesEndpoint, "respond", "1 Responses endpoint")
    _wrap(responses.ResponsesEndpoint, "_answer", "1 Responses endpoint._answer")
    _wrap(chat_service.AgentChat, "start_turn", "2 AgentChat.start_turn")
    for name in ("validate_chat_request", "plan_turn", "request_fingerprint"):
        _wrap(chat_service, name, f"2 {name}")
    _wrap(chat_service, "check_image_urls", "2 check_image_urls")
    _wrap(chat_service.AgentChat, "_pipeline_inputs", "2 AgentChat._pipeline_inputs")
    from letta_hayhooks.chat import load_control  # noqa: PLC0415
    from letta_hayhooks.chat.acyclic_pipeline import AcyclicPipeline  # noqa: PLC0415

    _wrap(load_control.LoadController, "acquire", "3 load slot")
    _wrap(Pipeline, "stream", "4 Pipeline.stream (sync part)")
    _wrap(AcyclicPipeline, "run_async", "4 AcyclicPipeline.run_async")
    _wrap(chat_service.AgentChat, "_run", "3 AgentChat._run")
    _wrap(chat_service.AgentChat, "_start_stream", "3 AgentChat._start_stream")
    _wrap(Pipeline, "run_async", "4 Pipeline.run_async")
    for cls, label in ((AgentRouter, "router"), (SessionResolver, "session"), (PromptOverlay, "overlay"),
                       (ToolSync, "tool_sync"), (LettaChatGenerator, "generator"), (StreamAdapter, "adapter"),
                       (ChatRecorder, "recorder")):
        _wrap(cls, "run_async", f"5 component {label}")
    import letta_client  # noqa: PLC0415

    _wrap(letta_client.AsyncLetta, "post", "6 letta-client post")
    _wrap(httpx.AsyncClient, "send", "6 httpx send")
    with contextlib.suppress(ImportError):
        from httpcore._async import connection  # noqa: PLC0415

        _wrap(connection.AsyncHTTPConnection, "_connect", "7 TCP connect to Letta")
    feed = events.LettaEventTranslator.feed

    def counted_feed(self: object, event: object) -> object:
        kind = event.get("message_type") if isinstance(event, dict) else getattr(event, "message_type", "?")
        _mark(f"8 Letta event {kind}")
        return feed(self, event)

    events.LettaEventTranslator.feed = counted_feed
    from uvicorn.protocols.http import httptools_impl  # noqa: PLC0415

    send = httptools_impl.RequestResponseCycle.send

    async def counted_send(self: object, message: dict) -> None:
        _mark(f"9 ASGI send {message['type'].removeprefix('http.response.')}")
        await send(self, message)

    httptools_impl.RequestResponseCycle.send = counted_send
    _wrap(httptools_impl.HttpToolsProtocol, "on_message_begin", "0 uvicorn: request's first byte parsed")
    _wrap(httptools_impl.HttpToolsProtocol, "on_message_complete", "0 uvicorn: request's last byte parsed")
    from starlette.middleware.errors import ServerErrorMiddleware  # noqa: PLC0415

    _wrap(ServerErrorMiddleware, "__call__", "0 app entry (outermost middleware)")
    sys.argv = ["letta-hayhooks", *argv]
    from letta_hayhooks.cli import main as cli_main  # noqa: PLC0415

    cli_main()


def run(turns: int, session: bool, transcript: bool = False, wire: str = "chat") -> str:  # noqa: PLR0912, PLR0915
    from letta_client import Letta  # noqa: PLC0415

    from benchmarks.common import (  # noqa: PLC0415
        ROOT,
        Proxy,
        TimingRelay,
        clock,
        create_agent,
        free_port,
        letta_turn,
        match_record,
        median,
        proxy_chat,
        run_id,
        wait_for_models,
        workdir,
    )
    from benchmarks.overhead import proxy_response  # noqa: PLC0415

    with workdir("timeline") as wd:
        from benchmarks.common import letta_server  # noqa: PLC0415

        with letta_server(wd) as letta:
            relay = TimingRelay(letta.letta_port, wd).start()
            direct = Letta(base_url=relay.url, timeout=300, max_retries=0)
            agent = create_agent(direct, f"bench-tl-{run_id()}")
            floor_agent = create_agent(direct, f"bench-tl-floor-{run_id()}")
            port = free_port()
            marks_file = wd / "marks.tsv"
            env = {**os.environ, "LETTA_BASE_URL": relay.url, "HAYSTACK_TELEMETRY_ENABLED": "false",
                   "HAYHOOKS_ADDITIONAL_PYTHON_PATH": str(ROOT)}
            log = wd / "serve.log"
            process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.timeline", "--serve", str(marks_file), "serve", "--host",
                 "127.0.0.1", "--port", str(port)],
                cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
            proxy = Proxy("serve", f"http://127.0.0.1:{port}", process, log)
            try:
                deadline = clock() + 90
                while clock() < deadline:
                    with contextlib.suppress(httpx.HTTPError):
                        if httpx.get(f"{proxy.url}/v1/models", timeout=2).status_code == 200:
                            break
                    time.sleep(0.2)
                wait_for_models(proxy, [agent.name])
                http = httpx.Client(timeout=300)
                headers = {"X-Session-Id": f"timeline-{run_id()}"} if session else None
                history: list[dict] | None = [] if session or transcript else None
                sent = []
                floor_sent = []
                for i in range(turns + 3):
                    for stream in (False, True):
                        if wire == "responses":
                            t = proxy_response(http, proxy.url, agent.name, f"timeline {i} {stream}", stream=stream)
                        else:
                            t = proxy_chat(http, proxy.url, agent.name, f"timeline {i} {stream}", stream=stream,
                                           headers=headers, history=history)
                        floor = letta_turn(direct, floor_agent.id, f"timeline floor {i} {stream}", stream_tokens=stream)
                        if i >= 3:
                            sent.append((stream, t))
                            floor_sent.append((stream, floor))
                failed = [t.error for _, t in sent if not t.ok]
                if failed:
                    print(f"timeline: {len(failed)} proxy turns failed, the first: {failed[0]}", file=sys.stderr)
                process.send_signal(signal.SIGUSR1)
                process.wait(15)
            finally:
                proxy.stop()
                records = relay.stop()
        lines = marks_file.read_text().splitlines() if marks_file.exists() else []
    marks = [(line.split("\t")[0], float(line.split("\t")[1])) for line in lines]
    out = []
    for stream in (False, True):
        floor_series: dict[str, list[float]] = {}
        for kind, t in floor_sent:
            record = match_record(records, t.t0, t.t0 + t.total, "/messages")
            if kind != stream or not t.ok or record is None:
                continue
            done = record.get("t_done") or record["t_resp_last"]
            for name, value in (("before (client send to Letta)", record["t_req"] - t.t0),
                                ("after (Letta's [DONE] to client done)", t.t0 + t.total - done)):
                floor_series.setdefault(name, []).append(value * 1000)
        out.append(f"\n{'stream' if stream else 'non-stream'} floor (letta-client straight to Letta), median ms: " +
                   ", ".join(f"{name} {median(values):.2f}" for name, values in floor_series.items()))
    for stream in (False, True):
        series: dict[str, list[float]] = {}
        for kind, t in sent:
            if kind != stream or not t.ok:
                continue
            t1 = t.t0 + t.total
            seen: dict[str, int] = {}
            points = [(name, at) for name, at in marks if t.t0 <= at <= t1]
            record = match_record(records, t.t0, t1, "/messages")
            if record is not None:
                points += [("relay: request reaches Letta", record["t_req"]),
                           ("relay: Letta's last byte", record["t_resp_last"])]
                if record.get("t_done"):
                    points.append(("relay: Letta's [DONE]", record["t_done"]))
                if record["assistant"]:
                    points.append(("relay: Letta's first assistant_message", record["assistant"][0]))
            if stream and t.chunk_times:
                points.append(("client: first content chunk", t.chunk_times[0]))
            points.append(("client: done", t1))
            for name, at in points:
                seen[name] = seen.get(name, 0) + 1
                key = name if seen[name] == 1 else f"{name} #{seen[name]}"
                series.setdefault(key, []).append((at - t.t0) * 1000)
        out.append(f"\n{'stream' if stream else 'non-stream'} requests (median ms after the client sent the request)")
        for key, values in sorted(series.items(), key=lambda kv: median(kv[1])):
            if len(values) >= 0.8 * turns:
                out.append(f"  {median(values):9.2f}  {key}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--serve"]:
        _instrumented_serve(args[1], args[2:])
        return 0
    parser = argparse.ArgumentParser(description="median timeline of one request inside the proxy")
    parser.add_argument("--turns", type=int, default=30, help="measured turns per kind (default 30)")
    parser.add_argument("--session", action="store_true", help="send an X-Session-Id and the whole transcript")
    parser.add_argument("--transcript", action="store_true",
                        help="send the whole transcript without a key (the default `transcript` policy finds the chat)")
    parser.add_argument("--responses", action="store_true",
                        help="send one-message turns as POST /v1/responses instead of chat completions")
    parsed = parser.parse_args(args)
    print(run(parsed.turns, parsed.session, parsed.transcript, "responses" if parsed.responses else "chat"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
