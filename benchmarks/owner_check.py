"""
What the tenant owner check costs a turn that continues a stored response (`previous_response_id`) under API keys.

Two `letta-hayhooks serve` processes with one API key (A, B) and two without keys (C, D), on one Letta (scripted
model). Every round makes a fresh response through A and one through C, then continues each twice, in a random
order: through the process that made it (A, C), and through the other one (B, D), which has never seen the
conversation. With keys, A knows the conversation is the key's (no extra Letta read) and B reads the conversation's
summary once to check the owner; without keys nothing is checked. Each proxy reaches Letta through its own timing
relay (`benchmarks/relay.py`), so the report counts the Letta requests each continuation made before its turn
reached Letta, and the time from the client's request to that moment: the owner check's cost is the difference
keyed - keyless there, free of Letta's turn-to-turn jitter (the whole turn is shown too).

    python -m benchmarks.owner_check [--rounds 40] [--write]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid

import httpx
from letta_client import Letta

from benchmarks.common import (
    TimingRelay,
    clock,
    create_agent,
    environment_note,
    letta_server,
    machine_info,
    machine_markdown,
    md_table,
    median,
    percentile,
    run_id,
    start_proxy,
    timestamp,
    workdir,
    write_section,
)
from tests.support import harness

KEY = f"sk-bench-{uuid.uuid4().hex}"


def respond(http: httpx.Client, url: str, model: str, text: str, previous: str | None, key: str | None) -> tuple[
        str, float]:
    body = {"model": model, "input": text, **({"previous_response_id": previous} if previous else {})}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    started = time.perf_counter()
    answer = http.post(f"{url}/v1/responses", json=body, headers=headers)
    elapsed = time.perf_counter() - started
    answer.raise_for_status()
    return answer.json()["id"], elapsed


def run(rounds: int) -> str:  # noqa: PLR0915 - one measured run, start to report
    rid = run_id()
    with workdir("owner-check") as work, letta_server(work) as letta:
        client = Letta(base_url=letta.base_url, timeout=60)
        agent = create_agent(client, f"owner-{rid}")
        keyed = {"LETTA_HAYHOOKS_API_KEYS": KEY}
        port = int(letta.base_url.rsplit(":", 1)[1])
        relays = [TimingRelay(port, work).start() for _ in range(4)]
        # /v1/models needs the key: ready once /healthz answers
        proxy_a = start_proxy("serve", relays[0].url, work, keyed, ready_path="/healthz")
        proxy_b = start_proxy("serve", relays[1].url, work, keyed, ready_path="/healthz")
        proxy_c = start_proxy("serve", relays[2].url, work)
        proxy_d = start_proxy("serve", relays[3].url, work)
        proxies = (proxy_a, proxy_b, proxy_c, proxy_d)
        paths = {"keys, same process": (0, KEY), "keys, other process": (1, KEY),
                 "no keys, same process": (2, None), "no keys, other process": (3, None)}
        windows: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
        try:
            for proxy in proxies:
                key = KEY if proxy in (proxy_a, proxy_b) else None
                harness.wait_for_models(proxy.url, [agent.name],
                                        headers={"Authorization": f"Bearer {key}"} if key else None)
            rng = random.Random(7)
            with httpx.Client(timeout=60) as http:
                for i in range(rounds + 3):
                    made = {KEY: respond(http, proxy_a.url, agent.name, f"start {i}", None, KEY)[0],
                            None: respond(http, proxy_c.url, agent.name, f"start {i}", None, None)[0]}
                    order = list(paths.items())
                    rng.shuffle(order)
                    for name, (index, key) in order:
                        # two continuations of one response branch it (both are answered): fine for timing
                        started = clock()
                        respond(http, proxies[index].url, agent.name, f"next {i} {name}", made[key], key)
                        if i >= 3:  # warm-up rounds
                            windows[name].append((started, clock()))
                    time.sleep(0.1)
        finally:
            for proxy in proxies:
                proxy.stop()
            records = [relay.stop() for relay in relays]
        info = machine_info(letta.base_url)
    rows = []
    before_turn: dict[str, list[float]] = {}
    for name, (index, _key) in paths.items():
        counts: list[int] = []
        before: list[float] = []
        totals: list[float] = []
        kinds: dict[str, int] = {}
        for t0, t1 in windows[name]:
            seen = sorted((r for r in records[index] if t0 <= r["t_req"] <= t1), key=lambda r: r["t_req"])
            turn = next((r for r in seen if r["method"] == "POST" and "/messages" in r["path"]), None)
            if turn is None:
                continue
            ahead = [r for r in seen if r["t_req"] < turn["t_req"]]
            counts.append(len(ahead))
            for r in ahead:
                kind = f"{r['method']} {r['path'].split('?')[0].rsplit('/', 1)[0]}/..."
                kinds[kind] = kinds.get(kind, 0) + 1
            before.append(turn["t_req"] - t0)
            totals.append(t1 - t0)
        before_turn[name] = before
        rows.append([name, len(before), f"{median(counts):.0f}" if counts else "-",
                     "; ".join(f"{k} x{v / max(len(counts), 1):.1f}" for k, v in sorted(kinds.items())),
                     f"{median(before) * 1000:.2f}", f"{percentile(before, 99) * 1000:.2f}",
                     f"{median(totals) * 1000:.1f}"])
    table = md_table(["continuation through", "turns", "Letta requests before the turn",
                      "which (per turn)", "to the turn at Letta, median ms", "p99 ms", "whole turn, median ms"],
                     rows)
    costs = []
    for where in ("same process", "other process"):
        keyed_v, keyless_v = before_turn[f"keys, {where}"], before_turn[f"no keys, {where}"]
        if keyed_v and keyless_v:
            costs.append(f"{where}: {(median(keyed_v) - median(keyless_v)) * 1000:+.2f} ms")
    table += "\n\nThe owner check's cost before the turn reaches Letta (keys - no keys, medians): " + \
        ", ".join(costs) + "."
    return ("## Tenant owner check on `previous_response_id` (`benchmarks/owner_check.py`)\n\n"
            f"Run {timestamp()}, {rounds} rounds. {environment_note()}\n\n{machine_markdown(info)}\n\n{table}\n\n"
            "`same process`: the proxy that made the response continues it (with keys it remembers the conversation "
            "is the key's); `other process`: a second proxy that has never seen the conversation continues it (with "
            "keys, one read of its summary); `no keys`: no owner check at all.\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the cost of the tenant owner check on previous_response_id")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--write", action="store_true", help="write the section into benchmarks/RESULTS.md")
    opts = parser.parse_args(argv)
    markdown = run(opts.rounds)
    print(markdown)
    if opts.write:
        write_section("owner check", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
