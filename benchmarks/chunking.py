"""
Does the proxy pass tokens on as they come, or buffer them?

The scripted model streams its answer one character per delta, a fixed gap apart (`DRIP:<ms>:<text>`). The same
turns go, interleaved, to Letta directly with letta-client (token streaming) and through `letta-hayhooks serve`
(`stream: true`), both through the timing relay, which records when every `assistant_message` event left Letta.
For each path it reports the gaps between content chunks at the client and at Letta, the number of chunks, and
each chunk's lag (client arrival minus the moment Letta sent it): a buffering proxy would show fewer, larger chunks
and a lag that grows along the answer.

    python -m benchmarks.chunking [--turns 20] [--gap-ms 20] [--chars 60] [--write]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass, field

import httpx
from letta_client import Letta

from benchmarks.common import (
    Timing,
    TimingRelay,
    clock,
    create_agent,
    environment_note,
    letta_server,
    letta_turn,
    machine_info,
    machine_markdown,
    match_record,
    md_table,
    median,
    ms,
    percentile,
    proxy_chat,
    run_id,
    start_proxy,
    timestamp,
    wait_for_models,
    workdir,
    write_section,
)


@dataclass
class Result:
    timings: list[Timing] = field(default_factory=list)
    client_gaps: list[float] = field(default_factory=list)
    letta_gaps: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    lag_growth: list[float] = field(default_factory=list)  # last chunk's lag minus first chunk's, per turn
    client_chunks: list[int] = field(default_factory=list)
    letta_chunks: list[int] = field(default_factory=list)
    count_mismatches: int = 0  # turns whose client chunk count differs from Letta's event count


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def run(turns: int, gap_ms: int, chars: int) -> tuple[str, dict]:
    rid = run_id()
    filler = "abcdefghijklmnopqrstuvwxyz0123456789" * 4
    with workdir("chunking") as wd, letta_server(wd) as letta:
        relay = TimingRelay(letta.letta_port, wd).start()
        serve = None
        try:
            direct = Letta(base_url=relay.url, timeout=300, max_retries=0)
            agents = {name: create_agent(direct, f"bench-ch-{rid}-{name}") for name in ("floor", "proxy")}
            serve = start_proxy("serve", relay.url, wd)
            wait_for_models(serve, [agents["proxy"].name])
            http = httpx.Client(timeout=300)
            calls = {
                "letta-client (floor)": lambda text: letta_turn(direct, agents["floor"].id, text, stream_tokens=True),
                "letta-hayhooks serve": lambda text: proxy_chat(http, serve.url, agents["proxy"].name, text,
                                                                stream=True),
            }
            results = {name: Result() for name in calls}
            for call in calls.values():  # warm-up
                call("warm up")
            env_note = environment_note(exclude=set())
            started = clock()
            for i in range(turns):
                for name in (list(calls) if i % 2 == 0 else list(reversed(calls))):
                    head = f"turn {i:02d} {name[:5]} "
                    text = f"DRIP:{gap_ms}:{(head + filler)[: max(chars - len('You said: '), len(head))]}"
                    results[name].timings.append(calls[name](text))
            elapsed = clock() - started
            http.close()
        finally:
            if serve is not None:
                serve.stop()
            records = relay.stop()
        info = machine_info(letta.base_url)
    for result in results.values():
        for t in result.timings:
            if not t.ok:
                continue
            record = match_record(records, t.t0, t.t0 + t.total, "/messages")
            result.client_gaps += _gaps(t.chunk_times)
            result.client_chunks.append(len(t.chunk_times))
            if record is None:
                continue
            at_letta = record["assistant"]
            result.letta_gaps += _gaps(at_letta)
            result.letta_chunks.append(len(at_letta))
            if len(at_letta) != len(t.chunk_times):
                result.count_mismatches += 1
            if len(at_letta) == len(t.chunk_times) and at_letta:
                lags = [c - a for c, a in zip(t.chunk_times, at_letta, strict=True)]
                result.lags += lags
                result.lag_growth.append(lags[-1] - lags[0])
    return report(results, turns, gap_ms, chars, elapsed, env_note), {"info": info, "results": results}


def report(results: dict[str, Result], turns: int, gap_ms: int, chars: int, elapsed: float, env_note: str) -> str:
    rows = []
    for name, r in results.items():
        errors = sum(1 for t in r.timings if not t.ok)
        rows.append([
            name, len(r.timings) - errors, errors,
            f"{median(r.letta_chunks):.0f}" if r.letta_chunks else "n/a",
            f"{median(r.client_chunks):.0f}" if r.client_chunks else "n/a",
            ms(median(r.letta_gaps)), ms(percentile(r.letta_gaps, 90)),
            ms(median(r.client_gaps)), ms(percentile(r.client_gaps, 90)),
            f"{median(r.client_gaps) / median(r.letta_gaps):.3f}x" if r.letta_gaps and r.client_gaps else "n/a",
            ms(median(r.lags), 2), ms(percentile(r.lags, 99), 2), ms(median(r.lag_growth), 2),
        ])
    table = md_table(["path", "turns ok", "errors", "chunks/turn at Letta", "chunks/turn at client",
                      "gap at Letta median", "gap at Letta p90", "gap at client median", "gap at client p90",
                      "gap ratio client/Letta", "chunk lag median", "chunk lag p99", "lag growth first->last"], rows)
    proxy, floor = results["letta-hayhooks serve"], results["letta-client (floor)"]
    buffered = proxy.count_mismatches > 0 or not proxy.lags or (proxy.lag_growth and median(proxy.lag_growth) > 0.005)
    verdict = (
        "The proxy does **not** buffer: every Letta token event reaches the client as its own chunk, the gaps at "
        "the client equal the gaps at Letta, and the per-chunk lag stays flat from the first chunk to the last."
        if not buffered else
        "The proxy **buffers or coalesces** chunks (chunk counts differ or the lag grows along the answer)."
    )
    extra = (f" Per-chunk lag added by the proxy over letta-client: "
             f"{ms(median(proxy.lags) - median(floor.lags), 2)} ms median."
             if proxy.lags and floor.lags else "")
    return (
        f"Run {timestamp()}: {turns} turns per path, interleaved, the scripted model dripping one character every "
        f"{gap_ms} ms (`DRIP:{gap_ms}:...`, answers of about {chars} characters), {elapsed:.0f} s. While measuring: "
        f"{env_note}.\n\n"
        "Gaps are between consecutive content chunks of one turn (ms); *at Letta* is when the timing relay saw each "
        "`assistant_message` event leave Letta; *chunk lag* is the client's arrival time of chunk k minus the "
        "moment Letta sent event k (when both counts match).\n\n"
        f"{table}\n\n{verdict}{extra}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="inter-chunk gaps at the client vs at Letta (no buffering)")
    parser.add_argument("--turns", type=int, default=20, help="turns per path (default 20)")
    parser.add_argument("--gap-ms", type=int, default=20, help="gap between the scripted model's deltas (default 20)")
    parser.add_argument("--chars", type=int, default=60, help="answer length in characters (default 60)")
    parser.add_argument("--write", action="store_true", help="write the section into benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    markdown, data = run(args.turns, args.gap_ms, args.chars)
    print("\n## Machine\n\n" + machine_markdown(data["info"]) + "\n\n## Chunking\n\n" + markdown)
    if args.write:
        write_section("chunking", "## Chunking (`python -m benchmarks.chunking`)\n\n" + markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
