"""
Per-turn overhead of letta-hayhooks over talking to Letta directly, with the scripted model answering instantly.

The same N turns go, interleaved (in a new random order every round), through these paths, each
with its own agent so every history grows alike:

- `floor-steps`  / `floor-tokens`: letta-client straight to Letta (`conversations.messages.create`, streaming,
  `stream_tokens` off / on): the same Letta request the proxy makes for a non-stream / stream request, sent the way
  a letta-client user sends it;
- `serve-nonstream` / `serve-stream`: through `letta-hayhooks serve`;
- `run-nonstream` / `run-stream`: through plain `hayhooks run`;
- extra: `serve-stream-session` goes through `letta-hayhooks serve` the way a chat client uses it (an
  `X-Session-Id`, so its own Letta conversation, and the whole transcript in every request); its floor
  `floor-tokens-conv` sends the same turns with letta-client into a conversation of its own (Letta answers in a
  conversation more slowly than in an agent's default thread, so the default-thread floors would not be fair).

Every path reaches Letta through the same timing relay (`benchmarks/relay.py`), which records when each request
reached Letta and when Letta's last byte and first `assistant_message` left it. That splits each turn into time
at Letta and time elsewhere, so the proxy's own share is measured without Letta's turn-to-turn jitter.

    python -m benchmarks.overhead [--turns 100] [--warmup 5] [--write]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from letta_client import Letta

from benchmarks.common import (
    Proxy,
    PySpy,
    Timing,
    TimingRelay,
    clock,
    cpu_seconds,
    create_agent,
    environment_note,
    http_failed,
    letta_server,
    letta_turn,
    machine_info,
    machine_markdown,
    match_record,
    md_table,
    median,
    ms,
    percentile,
    profile_summary,
    proxy_chat,
    ratio,
    run_id,
    sse_data,
    start_proxy,
    timestamp,
    wait_for_models,
    workdir,
    write_section,
)

LEGEND = (
    "Paths (each with its own agent; every one reaches Letta through the same timing relay; the scripted model "
    "answers `You said: ...` at once): `floor-steps` / `floor-tokens` = letta-client straight to Letta, "
    "`stream_tokens` off / on (the call the proxy makes for a non-stream / stream request); `serve-*` = "
    "`letta-hayhooks serve`; `run-*` = plain `hayhooks run`; `*-nonstream` / `*-stream` = `stream: false` / "
    "`true`, one user message, no session key, under the `agent` session policy (the agent's default thread, as the "
    "floors; under the default policy each would be a new chat); the chat-client patterns, each against "
    "`floor-tokens-conv` = letta-client into a conversation of its "
    "own, all streaming: `serve-stream-session` = an `X-Session-Id` and the whole transcript (two messages longer "
    "every turn), `serve-stream-transcript` = the whole transcript without a key (the default `transcript` policy "
    "finds the chat from it), `serve-stream-newonly` = an `X-Session-Id` and only the new message, "
    "`serve-stream-regenerate` = the same two-message history and a new last message every turn, so every turn after "
    "the first is a regenerate answered in a branch (a new conversation seeded with the history); "
    "`serve-responses-nonstream` / `serve-responses-stream` = the same one-message turn as `POST /v1/responses` "
    "(`input` a string, `store: false`), against the same floors as `serve-nonstream` / `serve-stream`.\n"
)
CHAT_PATTERNS = ["serve-stream-transcript", "serve-stream-newonly", "serve-stream-regenerate"]
RESPONSES_PATHS = ["serve-responses-nonstream", "serve-responses-stream"]
TARGET_MEDIAN = 0.003
TARGET_P99 = 0.010
TARGET_TTFT = 0.003


@dataclass
class BenchPath:
    name: str
    floor: str | None  # the floor path this one is compared with
    stream: bool
    call: Callable[[str], Timing]
    proxy_pid: int | None = None
    timings: list[Timing] = field(default_factory=list)
    records: list[dict | None] = field(default_factory=list)
    proxy_cpu: list[float] = field(default_factory=list)
    letta_requests: list[int] = field(default_factory=list)  # Letta requests seen by the relay during each turn
    letta_cpu: list[float] = field(default_factory=list)


def chat_patterns(http: httpx.Client, chat: Proxy, agents: dict, rid: str) -> dict[str, BenchPath]:
    """The chat-identity client patterns, through a server with the default session policy."""
    transcript: list[dict] = []
    fixed: list[dict] = []
    newonly = {"X-Session-Id": f"bench-new-{rid}"}

    def regenerate(text: str) -> Timing:
        if not fixed:  # the history every later turn regenerates from
            proxy_chat(http, chat.url, agents["serve-stream-regenerate"].name, f"start {rid}", stream=True,
                       history=fixed)
        return proxy_chat(http, chat.url, agents["serve-stream-regenerate"].name, text, stream=True,
                          history=list(fixed))

    calls = {
        "serve-stream-transcript": lambda text: proxy_chat(http, chat.url, agents["serve-stream-transcript"].name,
                                                           text, stream=True, history=transcript),
        "serve-stream-newonly": lambda text: proxy_chat(http, chat.url, agents["serve-stream-newonly"].name, text,
                                                        stream=True, headers=newonly),
        "serve-stream-regenerate": regenerate,
    }
    return {name: BenchPath(name, "floor-tokens-conv", True, call, chat.pid) for name, call in calls.items()
            if name in agents}


def proxy_response(client: httpx.Client, url: str, model: str, text: str, *, stream: bool) -> Timing:
    """One `POST /v1/responses` turn through a letta-hayhooks server (raw httpx, like `proxy_chat`)."""
    body = {"model": model, "input": text, "stream": stream, "store": False}
    timing = Timing(t0=clock())
    try:
        if not stream:
            response = client.post(f"{url}/v1/responses", json=body)
            timing.total = clock() - timing.t0
            if not http_failed(timing, response):
                timing.text = "".join(part["text"] for item in response.json()["output"] if item["type"] == "message"
                                      for part in item["content"])
            return timing
        with client.stream("POST", f"{url}/v1/responses", json=body) as response:
            if http_failed(timing, response):
                return timing
            parts = []
            for data in sse_data(response.iter_lines()):
                event = json.loads(data)
                if event["type"] == "response.output_text.delta":
                    now = clock()
                    if not timing.chunk_times:
                        timing.ttft = now - timing.t0
                    timing.chunk_times.append(now)
                    parts.append(event["delta"])
                elif event["type"] == "response.failed":
                    timing.ok, timing.error = False, str(event["response"]["error"])[:200]
                if event["type"] in ("response.completed", "response.failed", "response.incomplete"):
                    break
            timing.text = "".join(parts)
        timing.total = clock() - timing.t0
    except httpx.HTTPError as exc:
        timing.ok, timing.error, timing.total = False, type(exc).__name__, clock() - timing.t0
    return timing


def _bootstrap_ci(values: list[float], iterations: int = 2000, seed: int = 7) -> tuple[float, float]:
    """95% bootstrap confidence interval of the median."""
    if len(values) < 5:
        return math.nan, math.nan
    rng = random.Random(seed)
    medians = sorted(median([rng.choice(values) for _ in values]) for _ in range(iterations))
    return medians[int(0.025 * iterations)], medians[int(0.975 * iterations) - 1]


@dataclass
class Options:
    turns: int = 100
    warmup: int = 5
    hayhooks_run: bool = True
    session: bool = True
    profile: Path | None = None
    only: list[str] | None = None
    alt_env: dict[str, str] = field(default_factory=dict)
    responses: bool = True
    pause: float = 0.2


def run(opts: Options) -> tuple[str, dict]:  # noqa: PLR0912, PLR0915
    turns, warmup = opts.turns, opts.warmup
    rid = run_id()
    with workdir("overhead") as wd, letta_server(wd) as letta:
        relay = TimingRelay(letta.letta_port, wd).start()
        proxies: dict[str, Proxy] = {}
        try:
            direct = Letta(base_url=relay.url, timeout=300, max_retries=0)
            names = ["floor-steps", "floor-tokens", "serve-nonstream", "serve-stream"]
            if opts.hayhooks_run:
                names += ["run-nonstream", "run-stream"]
            if opts.alt_env:
                names += ["alt-nonstream", "alt-stream"]
            if opts.session:
                names += ["floor-tokens-conv", "serve-stream-session", *CHAT_PATTERNS]
            if opts.responses:
                names += RESPONSES_PATHS
            if opts.only:
                names = [name for name in names if name in opts.only]
            agents = {name: create_agent(direct, f"bench-oh-{rid}-{name}") for name in names}
            # the one-message paths compare with the floors' default thread; the chat patterns use the defaults
            proxies["serve"] = start_proxy("serve", relay.url, wd, {"LETTA_HAYHOOKS_SESSION_POLICY": "agent"})
            if any(name in CHAT_PATTERNS for name in names):
                proxies["chat"] = start_proxy("serve", relay.url, wd)
            if any(name.startswith("run-") for name in names):
                proxies["run"] = start_proxy("hayhooks-run", relay.url, wd,
                                             {"LETTA_HAYHOOKS_SESSION_POLICY": "agent"})
            if any(name.startswith("alt-") for name in names):
                # the alt proxy is the serve proxy with the A/B setting (same session policy)
                proxies["alt"] = start_proxy("serve", relay.url, wd, {"LETTA_HAYHOOKS_SESSION_POLICY": "agent",
                                                                      **opts.alt_env})
            for proxy in proxies.values():
                wait_for_models(proxy, [agents[n].name for n in names])
            serve = proxies["serve"]
            http = httpx.Client(timeout=300)

            def floor(name: str, tokens: bool) -> Callable[[str], Timing]:
                return lambda text: letta_turn(direct, agents[name].id, text, stream_tokens=tokens)

            def via(name: str, proxy: Proxy, stream: bool) -> BenchPath:
                return BenchPath(name, "floor-tokens" if stream else "floor-steps", stream,
                                 lambda text: proxy_chat(http, proxy.url, agents[name].name, text, stream=stream),
                                 proxy.pid)

            paths = {
                "floor-steps": BenchPath("floor-steps", None, False, floor("floor-steps", False)),
                "floor-tokens": BenchPath("floor-tokens", None, True, floor("floor-tokens", True)),
            }
            for prefix, key in (("serve", "serve"), ("run", "run"), ("alt", "alt")):
                if key in proxies:
                    paths[f"{prefix}-nonstream"] = via(f"{prefix}-nonstream", proxies[key], False)
                    paths[f"{prefix}-stream"] = via(f"{prefix}-stream", proxies[key], True)
            for name in RESPONSES_PATHS:
                stream = name.endswith("-stream")
                paths[name] = BenchPath(name, "floor-tokens" if stream else "floor-steps", stream,
                                        lambda text, n=name, s=stream: proxy_response(http, serve.url,
                                                                                      agents[n].name, text, stream=s),
                                        serve.pid)
            if "serve-stream-session" in names or "floor-tokens-conv" in names:
                conv_agent = agents.get("floor-tokens-conv")
                if conv_agent is not None:
                    conversation = direct.conversations.create(agent_id=conv_agent.id, summary=f"bench {rid}")
                    paths["floor-tokens-conv"] = BenchPath(
                        "floor-tokens-conv", None, True,
                        lambda text: letta_turn(direct, conv_agent.id, text, stream_tokens=True,
                                                conversation_id=conversation.id))
                history: list[dict] = []
                session = {"X-Session-Id": f"bench-{rid}"}
                paths["serve-stream-session"] = BenchPath(
                    "serve-stream-session", "floor-tokens-conv", True,
                    lambda text: proxy_chat(http, serve.url, agents["serve-stream-session"].name, text, stream=True,
                                            headers=session, history=history),
                    serve.pid)
            if "chat" in proxies:
                paths.update(chat_patterns(http, proxies["chat"], agents, rid))
            paths = {name: path for name, path in paths.items() if name in names}
            for path in paths.values():
                if path.floor not in paths:
                    path.floor = None
            order = list(paths)
            letta_pid = letta.letta_process.pid
            for i in range(warmup):
                for name in order:
                    paths[name].call(f"warm {name} {i}")
            env_note = environment_note(exclude=set())
            spy = PySpy(serve.pid, opts.profile).start() if opts.profile else None
            print(f"measuring {turns} turns per path ({len(order)} paths, interleaved)", file=sys.stderr)
            started = clock()
            shuffler = random.Random(20261129)
            for i in range(turns):
                # a new order every round: no path always follows the same neighbour (whose leftover work it would
                # always meet), and a pair compared per round runs in both orders
                shuffled = list(order)
                shuffler.shuffle(shuffled)
                for name in shuffled:
                    path = paths[name]
                    proxy_before = cpu_seconds(path.proxy_pid) if path.proxy_pid else 0.0
                    letta_before = cpu_seconds(letta_pid)
                    timing = path.call(f"bench {i} {name}")
                    letta_after = cpu_seconds(letta_pid)
                    proxy_after = cpu_seconds(path.proxy_pid) if path.proxy_pid else 0.0
                    path.timings.append(timing)
                    path.proxy_cpu.append(proxy_after - proxy_before)
                    path.letta_cpu.append(letta_after - letta_before)
                    # what a turn leaves to the background (a chat's head, a spare conversation) finishes before the
                    # next path's turn, as it would between one user's turns: each turn is measured on its own
                    time.sleep(opts.pause)
                if (i + 1) % 10 == 0:
                    print(f"  {i + 1}/{turns} rounds, {clock() - started:.0f} s", file=sys.stderr)
            elapsed = clock() - started
            if spy is not None:
                spy.stop()
            http.close()
        finally:
            for proxy in proxies.values():
                proxy.stop()
            records = relay.stop()
        info = machine_info(letta.base_url)
    for path in paths.values():
        path.records = [match_record(records, t.t0, t.t0 + t.total, "/messages") for t in path.timings]
        path.letta_requests = [sum(1 for r in records if t.t0 <= r["t_req"] <= t.t0 + t.total)
                               for t in path.timings]
    markdown, data = report(paths, turns, warmup, elapsed, info, env_note, opts.pause)
    if opts.alt_env:
        settings = ", ".join(f"`{k}={v}`" for k, v in opts.alt_env.items())
        markdown = f"*alt-* paths: a second `letta-hayhooks serve` with {settings}.\n\n" + markdown
    return markdown, data


def _stats(values: list[float]) -> tuple[float, float]:
    return median(values), percentile(values, 99)


def report(paths: dict[str, BenchPath], turns: int, warmup: int, elapsed: float, info: dict,  # noqa: PLR0912, PLR0915
           env_note: str, pause: float = 0.0) -> tuple[str, dict]:
    out: list[str] = []
    verdict: dict = {}
    out.append(f"Run {timestamp()}: {turns} turns per path after {warmup} warm-up turns, {len(paths)} paths "
               f"interleaved (a new random order every round), {pause * 1000:.0f} ms between turns (for the background "
               f"work a turn leaves: head writes, spare conversations), {elapsed:.0f} s. While measuring: "
               f"{env_note}.\n")
    out.append(LEGEND)

    # ---- per path
    rows = []
    for name, path in paths.items():
        ok = [t for t in path.timings if t.ok]
        errors = len(path.timings) - len(ok)
        totals = [t.total for t in ok]
        ttfts = [t.ttft for t in ok if not math.isnan(t.ttft)]
        rows.append([name, len(ok), errors, ms(median(totals)), ms(percentile(totals, 90)), ms(percentile(totals, 99)),
                     ms(median(ttfts)) if path.stream else "-", ms(percentile(ttfts, 99)) if path.stream else "-",
                     ms(median(path.proxy_cpu), 2) if path.proxy_pid else "-", ms(median(path.letta_cpu), 0),
                     f"{sum(path.letta_requests) / max(len(path.letta_requests), 1):.2f}"])
    out.append("**Per path** (client-side wall time, ms; TTFT = first content token; CPU = CPU time the proxy / "
               "Letta process used during the request, median; Letta requests = HTTP requests reaching Letta per turn, "
               "mean)\n")
    out.append(md_table(["path", "ok", "errors", "median", "p90", "p99", "TTFT median", "TTFT p99",
                         "proxy CPU", "Letta CPU", "Letta requests"], rows))
    failures = [f"`{name}` turn {i + 1}: {t.error}" for name, path in paths.items()
                for i, t in enumerate(path.timings) if not t.ok]
    if failures:
        out.append("\nFailed turns (what the client got): " + "; ".join(failures))

    # ---- headline: proxy vs floor
    rows = []
    for name, path in paths.items():
        if path.floor is None:
            continue
        floor = paths[path.floor]
        idx = [i for i in range(len(path.timings)) if path.timings[i].ok and floor.timings[i].ok]
        p_tot = [path.timings[i].total for i in idx]
        f_tot = [floor.timings[i].total for i in idx]
        paired = [path.timings[i].total - floor.timings[i].total for i in idx]
        lo, hi = _bootstrap_ci(paired)
        (pm, p99), (fm, f99) = _stats(p_tot), _stats(f_tot)
        row = [name, path.floor, ms(pm - fm), ratio(pm, fm), f"{ms(median(paired))} [{ms(lo)}, {ms(hi)}]",
               ms(p99 - f99), ratio(p99, f99)]
        if path.stream:
            p_tt = [path.timings[i].ttft for i in idx]
            f_tt = [floor.timings[i].ttft for i in idx]
            row += [ms(median(p_tt) - median(f_tt)), ratio(median(p_tt), median(f_tt)),
                    ms(median([a - b for a, b in zip(p_tt, f_tt, strict=True)]))]
        else:
            row += ["-", "-", "-"]
        rows.append(row)
        verdict.setdefault(name, {})["direct"] = {"median": pm - fm, "p99": p99 - f99, "paired": median(paired)}
    out.append("\n**Added latency, three-path comparison** (proxy minus its floor; ms and ratio of the two; "
               "the paired column is the median of per-round differences with its 95% bootstrap interval: "
               "Letta's own turn-to-turn jitter is in every number of this table)\n")
    out.append(md_table(["path", "floor", "added median", "ratio median", "paired median [95% CI]", "added p99",
                         "ratio p99", "added TTFT", "ratio TTFT", "paired TTFT"], rows))

    # ---- relay decomposition
    rows = []
    outside: dict[str, list[float]] = {}
    outside_ttft: dict[str, list[float]] = {}
    outside_by_round: dict[str, dict[int, float]] = {}
    for name, path in paths.items():
        pre, post, out_t, out_tt, at_letta = [], [], [], [], []
        by_round = outside_by_round.setdefault(name, {})
        for i, (t, r) in enumerate(zip(path.timings, path.records, strict=True)):
            if not t.ok or r is None:
                continue
            letta_end = r.get("t_done") or r["t_resp_last"]  # Letta's answer ends at [DONE]
            letta_total = letta_end - r["t_req"]
            at_letta.append(letta_total)
            pre.append(r["t_req"] - t.t0)
            post.append(t.t0 + t.total - letta_end)
            out_t.append(t.total - letta_total)
            by_round[i] = t.total - letta_total
            if path.stream and r["assistant"] and not math.isnan(t.ttft):
                out_tt.append(t.ttft - (r["assistant"][0] - r["t_req"]))
        outside[name], outside_ttft[name] = out_t, out_tt
        tenth = max(len(pre) // 10, 1)
        rows.append([name, len(out_t), ms(median(at_letta)), ms(median(pre), 2),
                     f"{ms(median(pre[:tenth]), 2)} / {ms(median(pre[-tenth:]), 2)}", ms(median(post), 2),
                     ms(median(out_t), 2), ms(percentile(out_t, 99), 2),
                     ms(median(out_tt), 2) if out_tt else "-", ms(percentile(out_tt, 99), 2) if out_tt else "-"])
    out.append("\n**Where the time goes, per request** (from the timing relay in front of Letta, ms: *at Letta* = "
               "request's first byte in to Letta's `data: [DONE]` out (Letta keeps the response open after it); "
               "*before* = client send to the request reaching Letta; *after* = Letta's [DONE] to the client's "
               "last byte; *outside* = total minus at "
               "Letta; *outside TTFT* = client TTFT minus the time to Letta's first `assistant_message`)\n")
    out.append(md_table(["path", "n", "at Letta median", "before median", "before, first / last tenth",
                         "after median", "outside median",
                         "outside p99", "outside TTFT median", "outside TTFT p99"], rows))
    out.append("\n(*before, first / last tenth* = the median of *before* over the first and the last tenth of the "
               "turns: it shows whether the proxy's work grows as the conversation does.)")

    rows = []
    for name, path in paths.items():
        if path.floor is None or not outside[name] or not outside[path.floor]:
            continue
        (pm, p99), fm = _stats(outside[name]), median(outside[path.floor])
        row = [name, ms(pm - fm, 2), ms(p99 - fm, 2)]
        tt = None
        if path.stream and outside_ttft[name] and outside_ttft[path.floor]:
            ftt = median(outside_ttft[path.floor])
            tt = median(outside_ttft[name]) - ftt
            row += [ms(tt, 2), ms(percentile(outside_ttft[name], 99) - ftt, 2)]
        else:
            row += ["-", "-"]
        verdict.setdefault(name, {})["relay"] = {"median": pm - fm, "p99": p99 - fm, "ttft": tt}
        targets = [("median", pm - fm <= TARGET_MEDIAN), ("p99", p99 - fm <= TARGET_P99)]
        if tt is not None:
            targets.append(("TTFT", tt <= TARGET_TTFT))
        row.append(", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in targets))
        rows.append(row)
    out.append("\n**Added latency without Letta's jitter** (proxy's *outside* minus its floor's median *outside*, "
               "ms: the median, and the proxy's 99th percentile against the floor's median, so every tail of the "
               "proxy path counts as added; "
               f"targets: median <= {TARGET_MEDIAN * 1000:.0f} ms, p99 <= {TARGET_P99 * 1000:.0f} ms, "
               f"TTFT <= {TARGET_TTFT * 1000:.0f} ms)\n")
    out.append(md_table(["path", "added median", "added p99", "added TTFT median", "added TTFT p99", "targets"], rows))

    rows = []
    pairs = (("serve-responses-nonstream", "serve-nonstream"), ("serve-responses-stream", "serve-stream"))
    for responses, chat in pairs:
        if responses not in outside_by_round or chat not in outside_by_round:
            continue
        a, b = outside_by_round[responses], outside_by_round[chat]
        diffs = [a[i] - b[i] for i in sorted(a.keys() & b.keys())]
        if not diffs:
            continue
        lo, hi = _bootstrap_ci(diffs)
        rows.append([responses, chat, ms(median(list(a.values())), 2), ms(median(list(b.values())), 2),
                     f"{ms(median(diffs), 2)} [{ms(lo, 2)}, {ms(hi, 2)}]"])
        verdict.setdefault(responses, {})["versus_chat"] = {"paired": median(diffs), "ci": (lo, hi)}
    if rows:
        out.append("\n**A Responses turn against the same Chat Completions turn** (time outside Letta, ms: the "
                   "medians, and the median of the per-round differences with its 95% bootstrap interval)\n")
        out.append(md_table(["Responses path", "Chat Completions path", "Responses outside", "Chat outside",
                             "paired difference [95% CI]"], rows))
    markdown = "\n".join(out)
    return markdown, {"info": info, "verdict": verdict}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="letta-hayhooks per-turn overhead vs letta-client directly")
    parser.add_argument("--turns", type=int, default=100, help="measured turns per path (default 100)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up turns per path (default 5)")
    parser.add_argument("--no-hayhooks-run", action="store_true", help="skip the `hayhooks run` paths")
    parser.add_argument("--no-session", action="store_true",
                        help="skip the extra `serve-stream-session` path (X-Session-Id, whole transcript each turn)")
    parser.add_argument("--only", nargs="+", default=None, metavar="PATH",
                        help="measure only these paths (e.g. for a profile of one of them)")
    parser.add_argument("--alt-env", action="append", default=[], metavar="NAME=VALUE",
                        help="also measure a second `letta-hayhooks serve` with this extra environment (paths "
                             "alt-nonstream / alt-stream), interleaved with the others: an A/B test of a setting")
    parser.add_argument("--no-responses", action="store_true",
                        help="skip the `serve-responses-*` paths (the same turns through POST /v1/responses)")
    parser.add_argument("--pause", type=float, default=0.2, metavar="SECONDS",
                        help="pause after each turn, so the background work it leaves does not land on the next path's "
                             "turn (default 0.2)")
    parser.add_argument("--write", action="store_true", help="write the section into benchmarks/RESULTS.md")
    parser.add_argument("--section", default="overhead", metavar="NAME",
                        help="the RESULTS.md section --write replaces (another name keeps a partial run, e.g. "
                             "`--only ... --section overhead-responses`, out of the full table)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="record the serve process with py-spy during the measured turns into this raw file "
                             "(and print a summary); the profiler perturbs the timings, so use a separate run")
    args = parser.parse_args(argv)
    markdown, data = run(Options(args.turns, args.warmup, not args.no_hayhooks_run, not args.no_session, args.profile,
                                 args.only, dict(item.split("=", 1) for item in args.alt_env), not args.no_responses,
                                 args.pause))
    if args.profile:
        print("\n## Profile of the serve process\n\n" + profile_summary(args.profile))
    print("\n## Machine\n\n" + machine_markdown(data["info"]) + "\n\n## Overhead\n\n" + markdown)
    if args.write and args.section != "overhead":
        paths = " ".join(args.only or [])
        write_section(args.section, f"## Overhead: {args.section} (`python -m benchmarks.overhead --only {paths}`)\n\n"
                      + markdown)
    elif args.write:
        write_section("overhead", "## Overhead (`python -m benchmarks.overhead`)\n\n" + markdown)
        write_section("machine", "## Machine\n\n" + machine_markdown(data["info"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
