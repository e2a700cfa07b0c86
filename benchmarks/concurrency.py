"""
Concurrent streaming sessions through `letta-hayhooks serve`: throughput, errors, latency and the proxy's memory.

For each level (10, 50, 100 by default) that many chat sessions start at once, each with its own `X-Session-Id`,
spread round-robin over several agents, and each sends `--turns` streaming turns one after another, every request
carrying the whole transcript so far (as chat clients do). A turn counts as an error when the status is not 200,
an error event arrives, `[DONE]` is missing, or the answer is not the scripted model's answer to that very turn
(a crossed session would show here). The proxy's RSS (with its children) is sampled every 50 ms; Letta's too.

Each level runs three times: through the proxy with default settings; through a second proxy process whose
global cap on turns in flight is lowered (`--capped`, `LETTA_HAYHOOKS_MAX_INFLIGHT=8`), so the proxy queues the
turns Letta cannot take yet; and straight to Letta with letta-client (one conversation per session, as the proxy
makes), so the table shows how much of the limit is Letta's. Failed turns are split into Letta's failures (passed
on by the proxy with a `letta_*` code) and the proxy's own.

`--backend topology` runs the same sessions against the production-like backend instead: Postgres with pgvector,
Redis and two Letta servers on that database (`tests.support.topology`), one proxy in front of each, with
no in-flight cap; each session's turns go to the two proxies in turn (as a load balancer without stickiness
would send them). `--backend both` runs SQLite first, then the topology, in one run, side by side in one table
(written to its own section of RESULTS.md, `concurrency-topology`).

    python -m benchmarks.concurrency [--levels 10 50 100] [--turns 3] [--agents 4] [--capped 8] [--no-floor]
                                     [--backend sqlite|topology|both] [--env NAME=VALUE] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from letta_client import AsyncLetta, Letta

from benchmarks.common import (
    RssSampler,
    clock,
    cpu_seconds,
    create_agent,
    environment_note,
    letta_server,
    machine_info,
    machine_markdown,
    md_table,
    median,
    ms,
    percentile,
    run_id,
    start_proxy,
    timestamp,
    topology_servers,
    wait_for_models,
    workdir,
    write_section,
)


@dataclass
class Turn:
    ok: bool
    total: float
    ttft: float = math.nan
    error: str | None = None
    source: str | None = None  # "letta" (Letta failed; the proxy passed it on), "proxy", or "skipped"


def _proxy_error(status: int | None, payload: object, text: str) -> Turn:
    """
    A failed proxy turn, blamed on Letta when the proxy says Letta failed: a `letta_*` error code or a message
    about Letta ("The Letta server is unavailable", "Letta reported an error: ..."); the proxy's own errors
    (429 of its load control, "Internal error in the proxy.") never mention Letta.
    """
    error = payload.get("error") if isinstance(payload, dict) else None
    code = str(error.get("code") or "") if isinstance(error, dict) else ""
    message = str(error.get("message") or "") if isinstance(error, dict) else ""
    where = f"HTTP {status}" if status else "error event"
    letta = code.startswith("letta_") or "Letta" in message
    return Turn(False, math.nan, error=f"{where} {code}: {message or text[:140]}", source="letta" if letta else "proxy")


@dataclass
class Level:
    path: str
    sessions: int
    backend: str = "SQLite"
    turns: list[Turn] = field(default_factory=list)
    wall: float = 0.0
    proxy_rss_start: int = 0
    proxy_rss_peak: int = 0
    letta_rss_peak: int = 0
    proxy_cpu: float = 0.0
    letta_cpu: float = 0.0
    locked: int = 0


async def _proxy_turn(client: httpx.AsyncClient, url: str, model: str, session: str, history: list[dict],
                      text: str) -> Turn:
    body = {"model": model, "messages": [*history, {"role": "user", "content": text}], "stream": True}
    t0 = clock()
    ttft = math.nan
    parts: list[str] = []
    done = False
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body,
                                 headers={"X-Session-Id": session}) as response:
            if response.status_code != 200:
                await response.aread()
                try:
                    payload = json.loads(response.text)
                except ValueError:
                    payload = None
                return _proxy_error(response.status_code, payload, response.text)
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                payload = json.loads(data)
                if "error" in payload:
                    return _proxy_error(None, payload, data)
                for choice in payload.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        if math.isnan(ttft):
                            ttft = clock() - t0
                        parts.append(content)
    except (httpx.HTTPError, ValueError) as exc:
        return Turn(False, clock() - t0, error=repr(exc)[:160], source="proxy")
    total = clock() - t0
    answer = "".join(parts)
    if not done:
        return Turn(False, total, ttft, "no [DONE]", "proxy")
    if answer != f"You said: {text}":
        return Turn(False, total, ttft, f"wrong answer {answer[:80]!r}", "proxy")
    history += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
    return Turn(True, total, ttft)


async def _proxy_session(client: httpx.AsyncClient, urls: list[str], offset: int, model: str, session: str,
                         turns: int, start: asyncio.Event) -> list[Turn]:
    """One session; turn k goes to `urls[(offset + k) % len(urls)]` (one URL: every turn to that proxy)."""
    await start.wait()
    history: list[dict] = []
    results = []
    for k in range(turns):
        url = urls[(offset + k) % len(urls)]
        turn = await _proxy_turn(client, url, model, session, history, f"{session} turn {k}")
        results.append(turn)
        if not turn.ok:
            break  # the transcript is broken from here on
    return results


async def _floor_session(client: AsyncLetta, agent_id: str, session: str, turns: int,
                         start: asyncio.Event) -> list[Turn]:
    await start.wait()
    results = []
    try:
        conversation = await client.conversations.create(agent_id=agent_id, summary=f"bench {session}")
    except Exception as exc:  # noqa: BLE001
        return [Turn(False, 0.0, error=f"create conversation: {exc!r}"[:160], source="letta")]
    for k in range(turns):
        text = f"{session} turn {k}"
        t0 = clock()
        ttft = math.nan
        parts: list[str] = []
        try:
            stream = await client.conversations.messages.create(
                conversation.id, messages=[{"role": "user", "content": text}], streaming=True, stream_tokens=True,
                include_pings=True)
            async for event in stream:
                if getattr(event, "message_type", None) == "assistant_message":
                    if math.isnan(ttft):
                        ttft = clock() - t0
                    parts.append(str(event.content))
        except Exception as exc:  # noqa: BLE001
            results.append(Turn(False, clock() - t0, error=repr(exc)[:160], source="letta"))
            break
        total = clock() - t0
        answer = "".join(parts)
        ok = answer == f"You said: {text}"
        results.append(Turn(ok, total, ttft, None if ok else f"wrong answer {answer[:80]!r}", None if ok else "letta"))
    return results


async def _run_level(level: Level, sessions: list[tuple[str, str, str]], turns: int, proxy_urls: list[str] | None,
                     letta_url: str) -> None:
    """sessions: (session key, model name, agent id)."""
    start = asyncio.Event()

    async def race(sessions_started: list) -> list[list[Turn]]:
        # every session is waiting on `start` before the clock starts, so they all begin together
        tasks = [asyncio.create_task(session) for session in sessions_started]
        await asyncio.sleep(0.2)
        t0 = clock()
        start.set()
        done = await asyncio.gather(*tasks)
        level.wall = clock() - t0
        return done

    limits = httpx.Limits(max_connections=level.sessions + 20, max_keepalive_connections=level.sessions + 20)
    if proxy_urls is not None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(900, connect=30), limits=limits) as client:
            results = await race([_proxy_session(client, proxy_urls, s, model, key, turns, start)
                                  for s, (key, model, _) in enumerate(sessions)])
    else:
        client = AsyncLetta(base_url=letta_url, timeout=900, max_retries=0)
        results = await race([_floor_session(client, agent_id, key, turns, start) for key, _, agent_id in sessions])
        await client.close()
    for session_turns in results:
        level.turns += session_turns
        missing = turns - len(session_turns)
        level.turns += [Turn(False, math.nan, error="not sent (earlier turn failed)", source="skipped")] * missing


def _locked_lines(log: Path, offset: int) -> tuple[int, int]:
    """How many `database is locked` lines Letta logged after `offset`, and the new offset."""
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return 0, offset
    return data.count(b"database is locked"), offset + len(data)


def run(levels: list[int], turns: int, n_agents: int, floor: bool, capped: int, extra_env: dict[str, str],
        backend: str = "sqlite") -> tuple[str, dict]:
    results: list[Level] = []
    info: dict[str, str] = {}
    env_note = ""
    with workdir("concurrency") as wd:
        if backend in ("sqlite", "both"):
            env_note, info = _run_sqlite(wd, results, levels, turns, n_agents, floor, capped, extra_env)
        if backend in ("topology", "both"):
            note, info = _run_topology(wd, results, levels, turns, n_agents, extra_env)
            env_note = f"{env_note}; before the topology rows: {note}" if env_note else note
    return report(results, turns, n_agents, capped, extra_env, env_note), {"info": info, "levels": results}


def _run_sqlite(wd: Path, results: list[Level], levels: list[int], turns: int, n_agents: int, floor: bool,
                capped: int, extra_env: dict[str, str]) -> tuple[str, dict[str, str]]:
    rid = run_id()
    with letta_server(wd) as letta:
        direct = Letta(base_url=letta.base_url, timeout=300, max_retries=0)
        agents = [create_agent(direct, f"bench-cc-{rid}-{i}") for i in range(n_agents)]
        proxies = []
        try:
            proxies.append(("letta-hayhooks serve", start_proxy("serve", letta.base_url, wd, extra_env)))
            if capped:
                env = {**extra_env, "LETTA_HAYHOOKS_MAX_INFLIGHT": str(capped)}
                proxies.append((f"letta-hayhooks serve, MAX_INFLIGHT={capped}",
                                start_proxy("serve", letta.base_url, wd, env)))
            for _, proxy in proxies:
                wait_for_models(proxy, [a.name for a in agents])
            env_note = environment_note(exclude=set())
            letta_pid = letta.letta_process.pid
            letta_log = letta.home / "logs" / "letta.log"
            _, log_offset = _locked_lines(letta_log, 0)
            for n in levels:
                paths = [(name, proxy) for name, proxy in proxies]
                if floor:
                    paths.append(("letta-client direct (floor)", None))
                for p, (path, proxy) in enumerate(paths):
                    level = Level(path, n)
                    sessions = [(f"bench-{rid}-{n}-{p}-{s}", agents[s % n_agents].name, agents[s % n_agents].id)
                                for s in range(n)]
                    pid = proxy.pid if proxy else proxies[0][1].pid
                    proxy_rss = RssSampler(pid).start()
                    letta_rss = RssSampler(letta_pid).start()
                    level.proxy_rss_start = proxy_rss.peak
                    cpu0, lcpu0 = cpu_seconds(pid), cpu_seconds(letta_pid)
                    print(f"{path}: {n} sessions x {turns} turns", file=sys.stderr)
                    asyncio.run(_run_level(level, sessions, turns, [proxy.url] if proxy else None, letta.base_url))
                    level.proxy_cpu, level.letta_cpu = cpu_seconds(pid) - cpu0, cpu_seconds(letta_pid) - lcpu0
                    level.proxy_rss_peak, level.letta_rss_peak = proxy_rss.stop(), letta_rss.stop()
                    level.locked, log_offset = _locked_lines(letta_log, log_offset)
                    errors = [t.error for t in level.turns if not t.ok]
                    print(f"  wall {level.wall:.1f} s, errors {len(errors)} {errors[:2]}", file=sys.stderr)
                    results.append(level)
        finally:
            for _, proxy in proxies:
                proxy.stop()
        info = machine_info(letta.base_url)
    return env_note, info


def _run_topology(wd: Path, results: list[Level], levels: list[int], turns: int, n_agents: int,
                  extra_env: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Two proxies in front of two Letta servers on Postgres and Redis; no in-flight cap."""
    rid = run_id()
    with topology_servers(wd) as topology:
        direct = Letta(base_url=topology.lettas[0].base_url, timeout=300, max_retries=0)
        agents = [create_agent(direct, f"bench-cct-{rid}-{i}") for i in range(n_agents)]
        env = {key: value for key, value in extra_env.items() if key != "LETTA_HAYHOOKS_MAX_INFLIGHT"}
        proxies = [start_proxy("serve", letta.base_url, wd, env) for letta in topology.lettas]
        try:
            for proxy in proxies:
                wait_for_models(proxy, [a.name for a in agents])
            env_note = environment_note(exclude=set())
            letta_pids = [letta.letta_process.pid for letta in topology.lettas]
            for n in levels:
                level = Level(f"{len(proxies)} proxies -> {len(letta_pids)} Letta", n, backend="Postgres + Redis")
                sessions = [(f"bench-{rid}-{n}-t-{s}", agents[s % n_agents].name, agents[s % n_agents].id)
                            for s in range(n)]
                proxy_rss = [RssSampler(p.pid).start() for p in proxies]
                letta_rss = [RssSampler(pid).start() for pid in letta_pids]
                level.proxy_rss_start = max(r.peak for r in proxy_rss)
                cpu0 = [cpu_seconds(p.pid) for p in proxies]
                lcpu0 = [cpu_seconds(pid) for pid in letta_pids]
                print(f"{level.path} (Postgres): {n} sessions x {turns} turns", file=sys.stderr)
                asyncio.run(_run_level(level, sessions, turns, [p.url for p in proxies], topology.lettas[0].base_url))
                level.proxy_cpu = sum(cpu_seconds(p.pid) - c for p, c in zip(proxies, cpu0, strict=True))
                level.letta_cpu = sum(cpu_seconds(pid) - c for pid, c in zip(letta_pids, lcpu0, strict=True))
                level.proxy_rss_peak = max(r.stop() for r in proxy_rss)
                level.letta_rss_peak = max(r.stop() for r in letta_rss)
                level.locked = -1
                errors = [t.error for t in level.turns if not t.ok]
                print(f"  wall {level.wall:.1f} s, errors {len(errors)} {errors[:2]}", file=sys.stderr)
                results.append(level)
        finally:
            for proxy in proxies:
                proxy.stop()
        info = machine_info(topology.lettas[0].base_url)
        info["Letta server"] = info["Letta server"].replace(
            "SQLite", "SQLite; and Postgres 18 + pgvector 0.8, Redis 6.2")
    return env_note, info


def report(levels: list[Level], turns: int, n_agents: int, capped: int,
           extra_env: dict[str, str], env_note: str) -> str:
    rows = []
    for lv in levels:
        ok = [t for t in lv.turns if t.ok]
        totals = [t.total for t in ok]
        ttfts = [t.ttft for t in ok if not math.isnan(t.ttft)]
        by_source = {src: sum(1 for t in lv.turns if t.source == src) for src in ("letta", "proxy", "skipped")}
        proxy = lv.path.startswith("letta-hayhooks") or lv.backend != "SQLite"
        rows.append([
            lv.backend, lv.path, lv.sessions, len(lv.turns), len(lv.turns) - len(ok),
            f"{by_source['letta']} / {by_source['proxy']} / {by_source['skipped']}",
            "-" if lv.locked < 0 else lv.locked,
            f"{lv.wall:.1f}", f"{len(ok) / lv.wall:.2f}",
            ms(median(totals), 0), ms(percentile(totals, 99), 0), ms(median(ttfts), 0), ms(percentile(ttfts, 99), 0),
            f"{lv.proxy_rss_start / 2**20:.0f} -> {lv.proxy_rss_peak / 2**20:.0f}" if proxy else "-",
            f"{lv.letta_rss_peak / 2**20:.0f}",
            ms(lv.proxy_cpu / max(len(ok), 1), 1) if proxy else "-",
            ms(lv.letta_cpu / max(len(ok), 1), 0),
        ])
    topology = any(lv.backend != "SQLite" for lv in levels)
    table = md_table(["backend", "path", "sessions", "turns", "errors", "errors: Letta / proxy / not sent",
                      "SQLite locked",
                      "wall s", "turns/s", "latency p50", "latency p99", "TTFT p50", "TTFT p99",
                      "proxy RSS MiB (idle -> peak)", "Letta peak RSS MiB", "proxy CPU ms/turn",
                      "Letta CPU ms/turn"], rows)
    errors = []
    for lv in levels:
        for t in lv.turns:
            if not t.ok and t.source != "skipped" and len(errors) < 4 and t.error not in errors:
                errors.append(t.error)
    settings = ", ".join(f"{k}={v}" for k, v in extra_env.items()) or "defaults (128 turns in flight, 32 per agent)"
    capped_note = (f" The second proxy row is the same server with `LETTA_HAYHOOKS_MAX_INFLIGHT={capped}`: it queues "
                   f"turns beyond {capped} in the proxy instead of handing them all to Letta at once."
                   if capped else "")
    return (
        f"Run {timestamp()}: each session sends {turns} streaming turns one after another (the whole transcript "
        f"each time, its own `X-Session-Id`), sessions spread round-robin over {n_agents} agents (so at most "
        f"{math.ceil(max(lv.sessions for lv in levels) / n_agents)} per agent, under the per-agent cap of 32); proxy "
        f"settings: {settings}.{capped_note} The floor sends the same sessions straight to Letta with letta-client "
        "(one conversation per session). *errors: Letta / proxy / not sent* splits failed turns into turns Letta "
        "failed (the proxy's error names Letta as the cause, or letta-client got the error directly), turns the "
        "proxy failed itself (`429`, timeouts, a missing `[DONE]`, a wrong answer), and later turns "
        "of a session not sent after a failure; *SQLite locked* counts `database is locked` lines in Letta's log "
        "during that row. Latency and TTFT in ms per turn; RSS sampled every 50 ms, children included; CPU per "
        "successful turn. The benchmark client runs on the same 2 cores. "
        + ("*Postgres + Redis* rows: PostgreSQL 18 with pgvector, Redis and two Letta servers on that database, "
           "one `letta-hayhooks serve` in front of each (no in-flight cap, the default 128 turns in flight per "
           "proxy); turn k of session s goes to proxy (s + k) mod 2; the RSS column is the larger of the two "
           "proxies (and of the two Letta servers), CPU is both proxies' (both Letta servers') per turn. "
           if topology else "")
        + f"While measuring: {env_note}.\n\n{table}\n\n"
        + ("Distinct errors: " + "; ".join(f"`{e}`" for e in errors) if errors else "No errors.")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="concurrent streaming sessions through letta-hayhooks")
    parser.add_argument("--levels", type=int, nargs="+", default=[10, 50, 100], help="concurrent sessions")
    parser.add_argument("--turns", type=int, default=3, help="turns per session (default 3)")
    parser.add_argument("--agents", type=int, default=4, help="agents the sessions are spread over (default 4)")
    parser.add_argument("--no-floor", action="store_true", help="skip the letta-client direct comparison")
    parser.add_argument("--capped", type=int, default=8, metavar="N",
                        help="also run a proxy with LETTA_HAYHOOKS_MAX_INFLIGHT=N (default 8; 0 skips it)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra proxy environment, e.g. LETTA_HAYHOOKS_MAX_INFLIGHT_PER_AGENT=100")
    parser.add_argument("--backend", choices=["sqlite", "topology", "both"], default="sqlite",
                        help="Letta on SQLite (default), the Postgres + Redis topology, or both side by side")
    parser.add_argument("--write", action="store_true", help="write the section into benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    extra_env = dict(item.split("=", 1) for item in args.env)
    markdown, data = run(args.levels, args.turns, args.agents, not args.no_floor, args.capped, extra_env,
                         args.backend)
    print("\n## Machine\n\n" + machine_markdown(data["info"]) + "\n\n## Concurrency\n\n" + markdown)
    if args.write and args.backend == "sqlite":
        write_section("concurrency", "## Concurrency (`python -m benchmarks.concurrency`)\n\n" + markdown)
    elif args.write:
        command = f"python -m benchmarks.concurrency --backend {args.backend}"
        write_section("concurrency-topology", f"## Concurrency on Postgres and Redis (`{command}`)\n\n"
                      f"Machine:\n\n{machine_markdown(data['info'])}\n\n{markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
