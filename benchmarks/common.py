"""
What the benchmarks share: a Letta server with the scripted model, letta-hayhooks servers (`letta-hayhooks serve`
and `hayhooks run`), the timing relay, an RSS sampler, statistics, the machine description and RESULTS.md.

Everything runs on free loopback ports with its data in temporary directories and is stopped by PID at the end.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import harness
from tests.support.harness import BIN, ServerProcess
from letta_hayhooks.local.letta_server import STUB_EMBEDDING_HANDLE, STUB_MODEL_HANDLE, LocalLetta, free_port, terminate

ROOT = Path(__file__).resolve().parent.parent  # the repository root (hayhooks run starts here)
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

clock = time.monotonic  # CLOCK_MONOTONIC: the same clock in every process, so relay times line up


# ---------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    """The median."""
    return percentile(values, 50)


def ms(seconds: float, digits: int = 1) -> str:
    """Seconds as a millisecond string."""
    return "n/a" if seconds is None or math.isnan(seconds) else f"{seconds * 1000:.{digits}f}"


def ratio(a: float, b: float) -> str:
    """a / b as `1.023x`."""
    return "n/a" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:.3f}x"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- machine


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def letta_version(base_url: str) -> str:
    """The Letta server's version from its health route."""
    try:
        return str(httpx.get(f"{base_url}/v1/health/", timeout=5).json().get("version", "unknown"))
    except (httpx.HTTPError, ValueError):
        return "unknown"


def machine_info(letta_url: str | None = None) -> dict[str, str]:
    """CPU, cores, RAM, OS, Python and the versions that matter."""
    import psutil  # noqa: PLC0415 - the bench extra

    info = {
        "CPU": _cpu_model(),
        "cores (logical)": str(os.cpu_count()),
        "RAM": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": platform.platform(),
        "Python": platform.python_version(),
    }
    for package in ("hayhooks", "haystack-ai", "letta-client", "fastapi", "uvicorn", "httpx", "letta-hayhooks"):
        info[package] = _version(package)
    if letta_url:
        info["Letta server"] = f"{letta_version(letta_url)} (SQLite, scripted model)"
    return info


def load_average() -> str:
    """The 1/5/15-minute load average."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def busy_processes(exclude: set[int], sample: float = 1.0, threshold: float = 3.0) -> list[str]:
    """
    Processes other than this benchmark and what it started that used more than `threshold` % CPU over `sample`
    seconds (what else was running).
    """
    import psutil  # noqa: PLC0415

    me = psutil.Process()
    ours = {me.pid} | {child.pid for child in me.children(recursive=True)} | set(exclude)
    procs = []
    for proc in psutil.process_iter(["pid", "name"]):
        if proc.pid in ours:
            continue
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)
            procs.append(proc)
    time.sleep(sample)
    busy = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            pct = proc.cpu_percent(None)
            if pct >= threshold:
                # program names only: command lines name the machine's own paths, which RESULTS.md must not carry
                programs = " ".join(Path(part).name for part in proc.cmdline()[:2])[:60]
                busy.append(f"pid {proc.pid} {proc.info['name']} ({pct:.0f}% CPU: {programs})")
    return busy


def environment_note(exclude: set[int] | None = None) -> str:
    """Load average and other busy processes (not this benchmark's), as one markdown line."""
    others = busy_processes(exclude or set())
    return (f"load average {load_average()}; busy processes other than the benchmark's own: "
            f"{', '.join(others) if others else 'none'}")


def machine_markdown(info: dict[str, str]) -> str:
    """The machine description as a markdown table."""
    return md_table(["", ""], [[key, value] for key, value in info.items()])


# ---------------------------------------------------------------- processes


@contextlib.contextmanager
def letta_server(workdir: Path, stub_env: dict[str, str] | None = None) -> Iterator[LocalLetta]:
    """A Letta server with the scripted model, in `workdir`, stopped at the end."""
    with harness.scripted_letta(workdir / "letta-home", stub_env=stub_env) as letta:
        yield letta


@contextlib.contextmanager
def topology_servers(workdir: Path, letta_servers: int = 2) -> Iterator[Any]:
    """
    The production-like backend: Postgres with pgvector, Redis and `letta_servers` Letta servers on that database
    (`tests.support.topology.Topology`), with the scripted model, stopped at the end.
    """
    with harness.scripted_topology(workdir / "topology", letta_servers=letta_servers) as topology:
        yield topology


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A temporary directory (kept when BENCH_KEEP_TMP=1, for the logs)."""
    path = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))
    try:
        yield path
    finally:
        if os.environ.get("BENCH_KEEP_TMP") != "1":
            import shutil  # noqa: PLC0415

            shutil.rmtree(path, ignore_errors=True)
        else:
            print(f"kept {path}", file=sys.stderr)


def create_agent(client: Any, name: str) -> Any:
    """An agent on the scripted model (the same shape the tests use)."""
    return client.agents.create(
        name=name,
        model=STUB_MODEL_HANDLE,
        embedding=STUB_EMBEDDING_HANDLE,
        context_window_limit=128000,
        memory_blocks=[{"label": "persona", "value": "p"}, {"label": "human", "value": "h"}],
    )


Proxy = ServerProcess  # a letta-hayhooks server process: `serve` (the production server) or `hayhooks run`
_KINDS = {"serve": "serve", "hayhooks-run": "hayhooks"}  # the benchmarks' names -> the harness' commands


def start_proxy(kind: str, letta_url: str, log_dir: Path, extra_env: dict[str, str] | None = None,
                ready_path: str = "/v1/models") -> Proxy:
    """
    Start `letta-hayhooks serve` (kind="serve") or `hayhooks run` (kind="hayhooks-run") from the repository root.

    `hayhooks run` gets the environment the README asks for (telemetry off, sequential deploy, no span buffer) and
    nothing else: the caller's LETTA_HAYHOOKS_* and HAYHOOKS_* variables are left out.
    """
    proxy = harness.start_server(
        _KINDS[kind], letta_url, log_dir, cwd=ROOT, base_env=harness.environ_without("LETTA_HAYHOOKS_", "HAYHOOKS_"),
        extra_env={"HAYHOOKS_TRACING_INCLUDE_HAYSTACK_SPANS": "false", **(extra_env or {})},
        ready_path=ready_path, timeout=90,
    )
    proxy.kind = kind
    return proxy


def wait_for_models(proxy: Proxy, models: Sequence[str], timeout: float = 60.0) -> None:
    """Wait until the proxy's /v1/models lists every one of `models`."""
    try:
        harness.wait_for_models(proxy.url, models, timeout=timeout)
    except TimeoutError as exc:
        raise RuntimeError(f"{proxy.kind}: {exc}") from None


@dataclass
class TimingRelay:
    """The timing relay (`benchmarks/relay.py`) in its own process, in front of `target_port`."""

    target_port: int
    workdir: Path
    port: int = 0
    process: subprocess.Popen | None = None
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TimingRelay:
        self.port = free_port()
        ready = self.workdir / f"relay-{self.port}.ready"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.relay", "--target-port", str(self.target_port), "--port",
             str(self.port), "--out", str(self.workdir / f"relay-{self.port}.json"), "--ready", str(ready)],
            cwd=ROOT, start_new_session=True,
        )
        deadline = clock() + 15
        while not ready.exists():
            if clock() > deadline or self.process.poll() is not None:
                raise RuntimeError("the timing relay did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> list[dict[str, Any]]:
        """Stop the relay and return its records."""
        terminate(self.process, grace=15.0)
        out = self.workdir / f"relay-{self.port}.json"
        self.records = json.loads(out.read_text()) if out.exists() else []
        return self.records


def match_record(records: Sequence[dict[str, Any]], t0: float, t1: float, path_part: str) -> dict[str, Any] | None:
    """The relay record of the request sent between t0 and t1 whose path contains `path_part`."""
    found = [r for r in records if t0 <= r["t_req"] <= t1 and path_part in r["path"] and r["t_resp_last"]]
    return found[0] if len(found) == 1 else None


class RssSampler:
    """Samples the resident set size of a process and its children every `interval` seconds; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import psutil  # noqa: PLC0415

        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current(self) -> int:
        """The RSS now (bytes), children included."""
        import psutil  # noqa: PLC0415

        total = 0
        with contextlib.suppress(psutil.Error):
            total += self.process.memory_info().rss
            for child in self.process.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            self.samples += 1
            self._stop.wait(self.interval)

    def start(self) -> RssSampler:
        self.peak = self.current()
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop sampling; the peak in bytes."""
        self._stop.set()
        self._thread.join(2)
        return self.peak


def cpu_seconds(pid: int) -> float:
    """
    CPU time a process has used so far, summed over its threads, with nanosecond resolution (Linux schedstat;
    psutil's cpu_times counts 10 ms clock ticks, too coarse for one request). Falls back to psutil elsewhere.
    """
    total = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError, IndexError), \
                    open(f"/proc/{pid}/task/{task}/schedstat") as handle:
                total += int(handle.read().split()[0])
        return total / 1e9
    except OSError:
        import psutil  # noqa: PLC0415

        times = psutil.Process(pid).cpu_times()
        return times.user + times.system


# ---------------------------------------------------------------- clients


@dataclass
class Timing:
    """One request as the client saw it."""

    t0: float
    total: float = math.nan
    ttft: float = math.nan  # first content token
    ok: bool = True
    error: str | None = None
    text: str = ""
    chunk_times: list[float] = field(default_factory=list)  # arrival of every content delta


def http_failed(timing: Timing, response: httpx.Response) -> bool:
    """Record a non-200 answer on `timing` (its body read, its end time set); True when the request failed."""
    if response.status_code == 200:
        return False
    response.read()
    timing.ok, timing.error = False, f"HTTP {response.status_code}: {response.text[:200]}"
    if math.isnan(timing.total):
        timing.total = clock() - timing.t0
    return True


def sse_data(lines: Iterator[str]) -> Iterator[str]:
    """The `data:` payloads of an SSE stream."""
    for line in lines:
        if line.startswith("data:"):
            yield line[5:].strip()


def proxy_chat(client: httpx.Client, url: str, model: str, text: str, *, stream: bool,
               headers: dict[str, str] | None = None, history: list[dict] | None = None) -> Timing:
    """
    One chat completion through a letta-hayhooks server (raw httpx: no SDK cost in the measurement).

    With `history` (a list, updated in place) the request carries the whole transcript, as chat clients send it.
    """
    messages = [*(history or []), {"role": "user", "content": text}]
    body = {"model": model, "messages": messages, "stream": stream}
    timing = Timing(t0=clock())
    try:
        if not stream:
            response = client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
            timing.total = clock() - timing.t0
            if not http_failed(timing, response):
                timing.text = response.json()["choices"][0]["message"]["content"] or ""
                if history is not None:
                    history += [{"role": "user", "content": text}, {"role": "assistant", "content": timing.text}]
            return timing
        with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as response:
            if http_failed(timing, response):
                return timing
            parts = []
            for data in sse_data(response.iter_lines()):
                if data == "[DONE]":
                    break
                payload = json.loads(data)
                if "error" in payload:
                    timing.ok, timing.error = False, str(payload["error"])[:200]
                    continue
                for choice in payload.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        now = clock()
                        if not timing.chunk_times:
                            timing.ttft = now - timing.t0
                        timing.chunk_times.append(now)
                        parts.append(content)
            timing.text = "".join(parts)
        timing.total = clock() - timing.t0
    except httpx.HTTPError as exc:
        timing.ok, timing.error = False, repr(exc)
        timing.total = clock() - timing.t0
    if history is not None and timing.ok:
        history += [{"role": "user", "content": text}, {"role": "assistant", "content": timing.text}]
    return timing


def letta_turn(client: Any, agent_id: str, text: str, *, stream_tokens: bool,
               conversation_id: str = "default") -> Timing:
    """
    The floor: the same Letta request the proxy makes (`POST /v1/conversations/{id}/messages`, streaming, pings on),
    sent directly the way a letta-client user sends it (`conversations.messages.create`, iterated to [DONE]). `ttft`
    is the first `assistant_message` event.
    """
    from letta_client import omit  # noqa: PLC0415

    timing = Timing(t0=clock())
    parts = []
    try:
        stream = client.conversations.messages.create(
            conversation_id,
            agent_id=agent_id if conversation_id == "default" else omit,
            messages=[{"role": "user", "content": text, "otid": str(uuid.uuid4())}],
            streaming=True,
            stream_tokens=stream_tokens,
            include_pings=True,
        )
        for event in stream:
            kind = getattr(event, "message_type", None)
            if kind == "assistant_message":
                now = clock()
                if not timing.chunk_times:
                    timing.ttft = now - timing.t0
                timing.chunk_times.append(now)
                content = event.content
                parts.append(content if isinstance(content, str) else str(content))
            elif kind == "error_message":
                timing.ok, timing.error = False, str(event)[:200]
            elif kind == "stop_reason" and event.stop_reason not in ("end_turn", "requires_approval"):
                timing.ok, timing.error = False, f"stop_reason {event.stop_reason}"
        timing.text = "".join(parts)
    except Exception as exc:  # noqa: BLE001 - any failure is an error of this turn
        timing.ok, timing.error = False, repr(exc)[:200]
    timing.total = clock() - timing.t0
    return timing


# ---------------------------------------------------------------- RESULTS.md


def write_section(name: str, markdown: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section between `<!-- BEGIN name -->` and `<!-- END name -->` in RESULTS.md."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{markdown.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def run_id() -> str:
    """A short id that keeps agent names unique between runs."""
    return uuid.uuid4().hex[:6]


def timestamp() -> str:
    """Now, UTC."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


# ---------------------------------------------------------------- profiling


class PySpy:
    """`py-spy record` attached to a running process (raw collapsed stacks), stopped with SIGINT."""

    def __init__(self, pid: int, out: Path, rate: int = 500) -> None:
        self.pid = pid
        self.out = out
        self.rate = rate
        self.process: subprocess.Popen | None = None

    def start(self) -> PySpy:
        exe = BIN / "py-spy"
        if not exe.exists():
            msg = "py-spy is not installed: pip install py-spy"
            raise RuntimeError(msg)
        self.process = subprocess.Popen(
            [str(exe), "record", "--pid", str(self.pid), "--rate", str(self.rate), "--nonblocking", "--format", "raw",
             "--output", str(self.out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        time.sleep(1.0)  # let it attach
        return self

    def stop(self) -> Path:
        terminate(self.process, grace=60.0, sig=signal.SIGINT)
        return self.out


_PACKAGES = (
    ("letta_hayhooks/", "letta_hayhooks"), ("/components/", "components (this project)"),
    ("haystack/", "haystack"), ("hayhooks/", "hayhooks"), ("fastapi_openai_compat/", "fastapi_openai_compat"),
    ("letta_client/", "letta_client"), ("pydantic_core", "pydantic"), ("pydantic/", "pydantic"),
    ("httpx/", "httpx"), ("httpcore/", "httpcore"), ("h11/", "h11"), ("anyio/", "anyio"),
    ("starlette/", "starlette"), ("fastapi/", "fastapi"), ("uvicorn/", "uvicorn"), ("sse_starlette/", "sse_starlette"),
    ("opentelemetry/", "opentelemetry"), ("loguru/", "loguru"), ("asyncio/", "asyncio (stdlib)"),
    ("json/", "json (stdlib)"), ("copy.py", "copy (stdlib deepcopy)"), ("logging/", "logging (stdlib)"),
    ("typing.py", "typing (stdlib)"), ("inspect.py", "inspect (stdlib)"), ("dataclasses.py", "dataclasses (stdlib)"),
)


def _package(frame: str) -> str:
    for needle, name in _PACKAGES:
        if needle in frame:
            return name
    if "/python3." in frame and "site-packages" not in frame:
        return "other stdlib"
    return "other"


def _short(frame: str) -> str:
    # "func (<venv>/site-packages/pkg/mod.py:12)" -> "func (pkg/mod.py:12)"; the repository root is cut off too
    if "(" not in frame:
        return frame
    func, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("site-packages/", f"{ROOT}/", "/lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{func} ({where})"


_OWNERS = (
    ("components/", "this project: components/"), ("letta_hayhooks/", "this project: letta_hayhooks/"),
    ("pipeline_wrapper.py", "this project: pipelines/"),
    ("haystack/", "Haystack pipeline machinery"), ("hayhooks/", "Hayhooks (routes, wrapper, logging)"),
    ("fastapi_openai_compat/", "Hayhooks' OpenAI router (fastapi_openai_compat)"),
    ("letta_client/", "letta-client + httpx/httpcore (the Letta call)"),
    ("httpx/", "letta-client + httpx/httpcore (the Letta call)"),
    ("httpcore/", "letta-client + httpx/httpcore (the Letta call)"),
    ("starlette/", "FastAPI/Starlette (middleware, routing, responses)"),
    ("fastapi/", "FastAPI/Starlette (middleware, routing, responses)"),
    ("uvicorn/", "uvicorn (HTTP server)"), ("click/", "start-up"),
)


def _owner(real: list[str]) -> str:
    """The code that owns a sample: the innermost frame of a known owner (generic libraries are charged to it)."""
    if real[-1].startswith("Runner.run (asyncio/runners.py"):
        return "event loop (C: epoll, callbacks, socket I/O)"
    for frame in reversed(real):
        where = frame.partition(" (")[2]
        for needle, name in _OWNERS:
            if needle in where:
                return name
    return "other"


def profile_summary(raw: Path, top: int = 20, focus: str | None = None) -> str:
    """
    Summarise py-spy raw output: CPU samples by package (self time of the innermost frame), the functions with the
    most self time, and the functions with the most inclusive time. `focus` keeps only stacks through a frame
    containing that text.
    """
    stacks: list[tuple[list[str], int]] = []
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f]
        if focus and not any(focus in f for f in frames):
            continue
        stacks.append((frames, int(count)))
    total = sum(c for _, c in stacks) or 1
    by_pkg: dict[str, int] = {}
    by_owner: dict[str, int] = {}
    self_time: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    for frames, count in stacks:
        # skip py-spy's "process"/"thread" pseudo frames
        real = [f for f in frames if "(" in f]
        if not real:
            continue
        leaf = real[-1]
        by_pkg[_package(leaf)] = by_pkg.get(_package(leaf), 0) + count
        owner = _owner(real)
        by_owner[owner] = by_owner.get(owner, 0) + count
        self_time[_short(leaf)] = self_time.get(_short(leaf), 0) + count
        for frame in {_short(f) for f in real}:
            inclusive[frame] = inclusive.get(frame, 0) + count

    def table(data: dict[str, int], title: str, limit: int) -> str:
        rows = [[name.replace("|", "\\|"), f"{100 * n / total:.1f}%"]
                for name, n in sorted(data.items(), key=lambda kv: -kv[1])[:limit]]
        return md_table([title, "share of samples"], rows)

    return "\n\n".join([
        f"{total} samples" + (f" in stacks through `{focus}`" if focus else ""),
        table(by_owner, "owner (generic libraries charged to their caller)", 15),
        table(by_pkg, "package (self time)", 15),
        table(self_time, "function (self time)", top),
        table(inclusive, "function (inclusive time)", top),
    ])
