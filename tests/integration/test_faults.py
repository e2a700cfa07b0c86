"""
Fault and bad-input suite: bounded in time, loopback only, against the real Letta server.

Each test says what it proves. The suite's figures (requests tried, faults injected, 5xx answers, duplicated or
interleaved turns) are printed at the end of the test run.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
import uuid

import httpx
import openai
import pytest

from letta_hayhooks.components.session_resolver import SUMMARY_PREFIX
from letta_hayhooks.turn_plan import session_digest
from tests.conftest import Backend, Server, wait_for_model

pytestmark = pytest.mark.integration

FIGURES = {"requests": 0, "malformed requests": 0, "hostile cases": 0, "5xx to malformed requests": 0, "hangs": 0,
           "faults injected": 0, "duplicated turns": 0, "interleaved turns": 0}


def tally(status: int | None, *, malformed: bool = False) -> None:
    FIGURES["requests"] += 1
    if malformed:
        FIGURES["malformed requests"] += 1
    if status is None:
        FIGURES["hangs"] += 1
    elif status >= 500 and malformed:
        FIGURES["5xx to malformed requests"] += 1


@pytest.fixture(scope="module")
def roomy(letta_backend: Backend, server_factory, agent) -> Server:
    """A server with a deep session queue and a short turn timeout."""
    proxy = server_factory(letta_backend.base_url, extra_env={
        "LETTA_HAYHOOKS_SESSION_QUEUE_DEPTH": "64", "LETTA_HAYHOOKS_TURN_TIMEOUT": "4",
        "LETTA_HAYHOOKS_MAX_INFLIGHT_PER_AGENT": "64"})
    wait_for_model(proxy.url, agent.name)
    return proxy


def conversation_of(backend: Backend, agent_id: str, key: str):
    scope = session_digest(agent_id, key)
    found = [c for c in backend.client.conversations.list(agent_id=agent_id, limit=1000)
             if (c.summary or "").startswith(f"{SUMMARY_PREFIX}{scope}")]
    assert len(found) == 1
    return found[0]


def history(backend: Backend, conversation_id: str) -> list:
    page = backend.client.conversations.messages.list(conversation_id, order="asc", limit=500)
    return [m for m in page.items if m.message_type in ("user_message", "assistant_message")]


def malformed_bodies(model: str) -> list[tuple[str, bytes]]:
    """More than 50 malformed requests, built from a table of bad fields and bad messages."""
    good_messages = [{"role": "user", "content": "hi"}]
    bad_fields = {
        "model": [None, 42, "", [], {"x": 1}],
        "messages": [None, "hi", 5, {}, [None], [1, 2], ["text"], [{"content": "no role"}]],
        "stream": ["yes", 3, {}],
        "n": [0, 2, "2"],
        "tools": ["x", {}, [1], [{"type": "retrieval"}], [{"type": "function"}],
                  [{"type": "function", "function": {}}]],
        "tool_choice": ["sometimes", 5, {"type": "function"}, "required"],
        "user": [5, "x" * 300, "a\x00b"],
        "stream_options": ["x", 3],
        "letta_tool_activity": ["loud", 1],
    }
    bad_messages = [
        {"role": "user"}, {"role": "user", "content": None}, {"role": "user", "content": 7},
        {"role": "user", "content": [{"type": "text"}]}, {"role": "user", "content": [{"text": "no type"}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": "data:text/plain;base64,AA"}]},
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
        {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "tool", "content": "orphan"}, {"role": "function", "content": "legacy"},
        {"role": "assistant", "content": None, "tool_calls": "nope"},
        {"role": 3, "content": "x"},
    ]
    bodies: list[tuple[str, bytes]] = []
    for field, values in bad_fields.items():
        for value in values:
            body = {"model": model, "messages": good_messages, field: value}
            bodies.append((f"{field}={value!r}"[:60], json.dumps(body).encode()))
    for message in bad_messages:
        body = {"model": model, "messages": [message]}
        bodies.append((f"message={message!r}"[:60], json.dumps(body).encode()))
    raws = (b"", b"{", b"null", b"[]", b"\"text\"", b"\xff\xfe", b"{\"model\": \"" + model.encode() + b"\"}")
    bodies.extend((f"raw={raw[:20]!r}", raw) for raw in raws)
    return bodies


def test_malformed_requests_never_5xx_or_hang(server: Server, agent) -> None:
    """50+ malformed requests: every one gets a 4xx OpenAI error quickly; none is a 5xx or hangs."""
    bodies = malformed_bodies(agent.name)
    assert len(bodies) >= 50
    failures = []
    for label, raw in bodies:
        started = time.monotonic()
        try:
            response = httpx.post(f"{server.v1}/chat/completions", content=raw, timeout=15,
                                  headers={"content-type": "application/json"})
        except httpx.TimeoutException:
            tally(None, malformed=True)
            failures.append((label, "hang"))
            continue
        tally(response.status_code, malformed=True)
        ok = 400 <= response.status_code < 500 and set(response.json().get("error", {})) == {
            "message", "type", "param", "code"}
        if not ok or time.monotonic() - started > 10:
            failures.append((label, response.status_code, response.text[:200]))
    assert failures == []


# --- hostile clients: every case a clear OpenAI error with the right status, and a normal turn afterwards

USER = [{"role": "user", "content": "hi"}]
LOOPBACK_IMAGE = "http://127.0.0.1:{port}/v1/agents/"  # the Letta server's own API, reachable from Letta itself


def _part(url: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


def _tool(**function) -> list[dict]:
    return [{"type": "function", "function": {"name": "f", **function}}]


def _case(label: str, body: dict | bytes, status: int = 400, code: str | None = None,
          headers: dict[str, str] | None = None) -> tuple:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()  # ensure_ascii keeps "\ud800" escaped
    return label, raw, headers or {}, status, code


def bad_type_cases(model: str) -> list[tuple]:
    """Wrong types and ranges per OpenAI parameter: a 400 naming the field."""
    bad = {
        "temperature": ["hot", 2.5, -0.1, True, [1]], "top_p": [1.5, -1, "0.9"], "presence_penalty": [3, "x"],
        "frequency_penalty": [-2.5, {}], "n": [0, 2, "2", 1.5, True], "max_tokens": [-1, 0, 10**40, "64", 1.5],
        "max_completion_tokens": [0, 2**31, False], "seed": ["7", 2**64, 1.5], "stop": [5, ["a"] * 5, [1], {}],
        "logit_bias": [[], {"x": 1}, {"1": 500}, "bias"], "parallel_tool_calls": ["yes", 1],
        "user": [5, [], {}], "metadata": ["x", {"k": 1}, [1]], "stream_options": ["x", 3],
        "logprobs": ["yes"], "top_logprobs": [50, "1"], "response_format": ["json", {"type": "xml"}, {}],
        "letta_tool_activity": ["loud", 1], "stream": ["yes", 3, {}],
    }
    cases = [_case(f"{field}={value!r}"[:60], {"model": model, "messages": USER, field: value})
             for field, values in bad.items() for value in values]
    cases.append(_case("include_usage='yes'", {"model": model, "messages": USER,
                                                "stream_options": {"include_usage": "yes"}}))
    head = json.dumps({"model": model, "messages": USER})[:-1]
    for field, literal in (("temperature", "NaN"), ("top_p", "Infinity"), ("seed", "-Infinity"),
                           ("presence_penalty", "1e999"), ("max_tokens", "NaN")):
        cases.append(_case(f"{field}={literal}", f'{head}, "{field}": {literal}}}'.encode()))
    return cases


def unsupported_cases(model: str) -> list[tuple]:
    """Parameters Letta cannot honour: 400 unsupported_parameter."""
    values = [
        ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}),
        ("response_format", {"type": "json_object"}), ("logprobs", True), ("top_logprobs", 5),
        ("functions", [{"name": "f", "parameters": {"type": "object"}}]), ("function_call", "auto"),
        ("function_call", {"name": "f"}), ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
    ]
    return [_case(f"{field}={value!r}"[:60], {"model": model, "messages": USER, field: value},
                  code="unsupported_parameter") for field, value in values]


def surrogate_cases(model: str) -> list[tuple]:
    """A lone surrogate in every string that is forwarded: 400 invalid_unicode (Letta cannot encode it)."""
    bad = "half a pair: \ud800"
    tool_call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    bodies = {
        "user text": {"messages": [{"role": "user", "content": bad}]},
        "user text part": {"messages": [{"role": "user", "content": [{"type": "text", "text": bad}]}]},
        "system prompt": {"messages": [{"role": "system", "content": bad}, *USER]},
        "developer prompt": {"messages": [{"role": "developer", "content": bad}, *USER]},
        "history": {"messages": [{"role": "user", "content": bad}, {"role": "assistant", "content": "ok"}, *USER]},
        "assistant history": {"messages": [*USER, {"role": "assistant", "content": bad}, *USER]},
        "tool result": {"messages": [*USER, {"role": "assistant", "content": None, "tool_calls": [tool_call]},
                                     {"role": "tool", "tool_call_id": "c1", "content": bad}], "tools": _tool()},
        "tool call arguments": {"messages": [*USER, {"role": "assistant", "content": None, "tool_calls": [
            {**tool_call, "function": {"name": "f", "arguments": bad}}]}, *USER]},
        "tool description": {"messages": USER, "tools": _tool(description=bad)},
        "tool name": {"messages": USER, "tools": _tool(name="f\udc00")},
        "tool schema": {"messages": USER, "tools": _tool(parameters={"type": "object", "properties": {
            "q": {"type": "string", "description": bad}}})},
        "image url": {"messages": _part("https://example.com/\ud800.png")},
        "user field": {"messages": USER, "user": bad},
        "stop": {"messages": USER, "stop": [bad]},
        "metadata": {"messages": USER, "metadata": {"k": bad}},
        "key": {"messages": USER, "extra\ud800": 1},
    }
    cases = [_case(f"surrogate in {label}", {"model": model, **body}, code="invalid_unicode")
             for label, body in bodies.items()]
    # the one body parser refuses it before any model is looked up
    cases.append(_case("surrogate in model", {"model": "agent\ud800", "messages": USER}, code="invalid_unicode"))
    return cases


def nesting_and_cap_cases(model: str) -> list[tuple]:
    """Deep JSON and the per-request caps: fast 400s that name the limit."""
    head = json.dumps({"model": model})[:-1]
    deep = 10_000
    opening = '{"a": '
    cases = [
        _case("content nested 10,000 deep", f'{head}, "messages": [{{"role": "user", "content": '
              f'{"[" * deep}{"]" * deep}}}]}}'.encode(), code="nested_too_deeply"),
        _case("extra field nested 10,000 deep", f'{head}, "messages": {json.dumps(USER)}, "x": '
              f'{opening * deep}1{"}" * deep}}}'.encode(), code="nested_too_deeply"),
        _case("body nested 10,000 deep", ("[" * deep + "]" * deep).encode(), code="nested_too_deeply"),
        _case("extra field nested 500 deep", f'{head}, "messages": {json.dumps(USER)}, "x": '
              f'{"[" * 500}{"]" * 500}}}'.encode(), code="nested_too_deeply"),
    ]
    schema: dict = {"type": "string"}
    for _ in range(120):
        schema = {"type": "object", "properties": {"x": schema}}
    cases.append(_case("tool schema nested 240 deep", {"model": model, "messages": USER,
                                                       "tools": _tool(parameters=schema)}, code="nested_too_deeply"))
    words = [{"role": "user", "content": "word"}]
    cases += [
        _case("20,000 one-word user messages", {"model": model, "messages": words * 20_000}, code="too_many_messages"),
        _case("5,001 messages", {"model": model, "messages": [{"role": "user", "content": "q"},
                                                              {"role": "assistant", "content": "a"}] * 2500 + words},
              code="too_many_messages"),
        _case("65 new user messages", {"model": model, "messages": words * 65}, code="too_many_new_messages"),
        _case("257 content parts", {"model": model, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "w"}] * 257}]}, code="too_many_content_parts"),
        _case("body over 8 MB", {"model": model, "messages": [{"role": "user", "content": "x" * 8_400_000}]},
              413, "request_too_large"),
        _case("system prompt over 1 MB", {"model": model, "messages": [
            {"role": "system", "content": "x" * 1_100_000}, *USER]}, 413, "request_too_large"),
    ]
    return cases


def content_part_cases(model: str) -> list[tuple]:
    """Malformed content parts and messages."""
    contents = [[], [{"type": "text"}], [{"type": "text", "text": 5}], [{"text": "no type"}], ["plain"], [None],
                [{"type": "image_url"}], [{"type": "image_url", "image_url": {}}], [{"type": "image_url",
                                                                                   "image_url": 5}],
                [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=",
                                                     "detail": "ultra"}}],
                [{"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}],
                [{"type": "file", "file": {"file_id": "file-1"}}], [{"type": "refusal", "refusal": "no"}],
                [{"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}}], 7, {"text": "x"}]
    cases = [_case(f"content={content!r}"[:60], {"model": model, "messages": [{"role": "user", "content": content}]})
             for content in contents]
    messages = [
        [{"role": "system", "content": []}, *USER], [{"role": "tool", "content": []}],
        [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
         *USER],
        [{"role": "user"}], [{"role": "user", "content": None}], [{"role": "tool", "content": "orphan"}],
        [{"role": "function", "content": "legacy"}], [{"role": 3, "content": "x"}], [{"content": "no role"}],
        [{"role": "assistant", "content": None, "tool_calls": "nope"}], [*USER, {"role": "assistant",
                                                                                "content": "last"}],
        [{"role": "system", "content": "only a system prompt"}], None, "hi", {}, [None], [1, 2], ["text"],
    ]
    cases += [_case(f"messages={m!r}"[:60], {"model": model, "messages": m}) for m in messages]
    for url in ("data:image/png;base64,!!!not base64!!!", "data:image/png;base64,", "data:image/png;base64,iVBORw0KGgo",
                "data:text/plain;base64,AA==", "data:image/png,raw"):
        cases.append(_case(f"data url {url[:30]}", {"model": model, "messages": _part(url)}, code="invalid_image_url"))
    return cases


def ssrf_cases(model: str, letta_port: int) -> list[tuple]:
    """Image URLs that would make Letta fetch from inside the network: 400 image_url_not_allowed."""
    urls = [
        LOOPBACK_IMAGE.format(port=letta_port), f"https://127.0.0.1:{letta_port}/v1/agents/", "https://127.0.0.2/",
        "https://169.254.169.254/latest/meta-data/iam/", "http://169.254.169.254/latest/meta-data/",
        "https://[fd00:ec2::254]/latest/meta-data/", "https://metadata.google.internal/computeMetadata/v1/",
        "https://metadata/", "https://10.0.0.1/a.png", "https://172.16.0.1/a.png", "https://192.168.0.1/a.png",
        "https://100.64.0.1/a.png", "https://[::1]/a.png", "https://[fe80::1]/a.png", "https://[fc00::1]/a.png",
        "https://0.0.0.0/a.png", "https://224.0.0.1/a.png", "https://255.255.255.255/", "https://240.0.0.1/",
        "https://[::ffff:127.0.0.1]/", "https://[::ffff:a9fe:a9fe]/", "https://[64:ff9b::a9fe:a9fe]/",
        "https://[2002:7f00:1::]/", "https://2130706433/", "https://0x7f000001/", "https://0177.0.0.1/",
        "https://127.1/", "http://example.com/a.png", "http://93.184.216.34/a.png", "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO", "javascript:alert(1)", "ftp://example.com/a.png", "dict://127.0.0.1:11211/",
        "https://user:pw@example.com/a.png", "https://example.com@127.0.0.1/", "https:\\\\127.0.0.1\\a.png",
        "https://ex ample.com/a.png", "https://[::1/a.png", "https:///a.png",
    ]
    return [_case(f"image {url}"[:60], {"model": model, "messages": _part(url)}, code="image_url_not_allowed")
            for url in urls]


def tool_and_header_cases(model: str) -> list[tuple]:
    """Bad tool schemas, bad tool_choice and bad session headers."""
    tools = ["x", {}, [1], [{"type": "retrieval"}], [{"type": "function"}], [{"type": "function", "function": {}}],
             _tool(name="has spaces"), _tool(name="x" * 65), _tool(name=""), _tool(description=5),
             _tool(parameters="x"), _tool(parameters={"type": "array"}), _tool(parameters={"type": "object",
                                                                                          "properties": []}),
             _tool(parameters={"type": "object", "properties": {"a": 1}}),
             _tool(parameters={"type": "object", "required": "a"}),
             _tool(parameters={"type": "object", "required": [1]}), _tool() + _tool()]
    cases = [_case(f"tools={t!r}"[:60], {"model": model, "messages": USER, "tools": t}) for t in tools]
    choices = ["sometimes", 5, "required", {"type": "function", "function": {"name": "f"}}, [], True]
    cases += [_case(f"tool_choice={c!r}", {"model": model, "messages": USER, "tools": _tool(), "tool_choice": c})
              for c in choices]
    good = {"model": model, "messages": USER}
    for header, value in (("X-Session-Id", "k" * 300), ("X-Session-Id", "a\tb"), ("X-Letta-Chat-Key", "k" * 300)):
        cases.append(_case(f"header {header}={value[:10]!r}", good, code="invalid_session_key",
                           headers={header: value}))
    cases += [_case("user as a session key too long", {**good, "user": "u" * 300}, code="invalid_session_key")]
    raws = (b"", b"{", b"null", b"[]", b'"text"', b"\xff\xfe", b'{"model": "' + model.encode() + b'"}',
            b'{"model": 1e999, "messages": []}', b"{'model': 'single quotes'}")
    cases += [_case(f"raw={raw[:20]!r}", raw) for raw in raws]
    return cases


HOSTILE_BATCHES = {"bad types": bad_type_cases, "unsupported": unsupported_cases, "surrogates": surrogate_cases,
                   "nesting and caps": nesting_and_cap_cases, "content parts": content_part_cases,
                   "ssrf": ssrf_cases, "tools and headers": tool_and_header_cases}


def normal_turn(server: Server, model: str) -> None:
    text = f"still fine {uuid.uuid4().hex[:8]}"
    response = httpx.post(f"{server.v1}/chat/completions", timeout=60, headers={"X-Session-Id": uuid.uuid4().hex},
                          json={"model": model, "messages": [{"role": "user", "content": text}]})
    tally(response.status_code)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["choices"][0]["message"]["content"] == f"You said: {text}"


@pytest.mark.parametrize("batch", list(HOSTILE_BATCHES))
def test_hostile_requests_get_clear_errors(letta_backend: Backend, server: Server, agent, batch: str) -> None:
    """Each hostile case: the expected status and code in an OpenAI error body, quickly; then a normal turn works."""
    build = HOSTILE_BATCHES[batch]
    port = httpx.URL(letta_backend.base_url).port
    cases = build(agent.name, port) if batch == "ssrf" else build(agent.name)
    failures = []
    with httpx.Client(timeout=15) as client:
        for label, raw, headers, status, code in cases:
            started = time.monotonic()
            try:
                response = client.post(f"{server.v1}/chat/completions", content=raw,
                                       headers={"content-type": "application/json", **headers})
            except httpx.TimeoutException:
                tally(None, malformed=True)
                failures.append((label, "hang"))
                continue
            tally(response.status_code, malformed=True)
            FIGURES["hostile cases"] += 1
            error = response.json().get("error") if "json" in response.headers.get("content-type", "") else None
            ok = (response.status_code == status and isinstance(error, dict)
                  and set(error) == {"message", "type", "param", "code"} and error["message"]
                  and (code is None or error["code"] == code))
            if not ok or time.monotonic() - started > 5:
                failures.append((label, response.status_code, response.text[:200]))
    assert failures == []
    normal_turn(server, agent.name)


def test_hostile_suite_has_enough_cases(letta_backend: Backend) -> None:
    """The batches above hold at least 150 hostile cases (a guard against the lists shrinking)."""
    port = httpx.URL(letta_backend.base_url).port
    total = sum(len(build("m", port) if name == "ssrf" else build("m")) for name, build in HOSTILE_BATCHES.items())
    assert total >= 150, total


def test_twenty_thousand_messages_are_refused_fast(server: Server, agent) -> None:
    """20,000 one-word user messages (~680 KB): a 400 within a second or two, not minutes of CPU."""
    body = {"model": agent.name, "messages": [{"role": "user", "content": "word"}] * 20_000}
    started = time.monotonic()
    response = httpx.post(f"{server.v1}/chat/completions", json=body, timeout=60)
    tally(response.status_code, malformed=True)
    assert response.status_code == 400 and response.json()["error"]["code"] == "too_many_messages"
    assert "LETTA_HAYHOOKS_MAX_MESSAGES" in response.json()["error"]["message"]
    assert time.monotonic() - started < 3


def test_internal_image_urls_never_reach_letta(letta_backend: Backend, server: Server, agent) -> None:
    """
    Loopback (the Letta API itself, by address and by name) and metadata image URLs are refused before Letta sees
    the turn: no conversation is created for the session and the scripted model receives nothing of it.
    """
    port = httpx.URL(letta_backend.base_url).port
    for url in (LOOPBACK_IMAGE.format(port=port), f"https://localhost:{port}/v1/agents/",
                "https://169.254.169.254/latest/meta-data/", "https://[fd00:ec2::254]/latest/meta-data/"):
        key = f"ssrf-{uuid.uuid4().hex}"
        marker = f"SSRF-MARK-{uuid.uuid4().hex}"
        response = httpx.post(f"{server.v1}/chat/completions", timeout=30, headers={"X-Session-Id": key}, json={
            "model": agent.name, "messages": [{"role": "user", "content": [
                {"type": "text", "text": marker}, {"type": "image_url", "image_url": {"url": url}}]}]})
        tally(response.status_code, malformed=True)
        assert response.status_code == 400, (url, response.text[:300])
        assert response.json()["error"]["code"] == "image_url_not_allowed"
        scope = session_digest(agent.id, key)
        conversations = letta_backend.client.conversations.list(agent_id=agent.id, limit=1000)
        assert not [c for c in conversations if scope in (c.summary or "")], url
        assert marker not in json.dumps(letta_backend.model_requests()), url
    normal_turn(server, agent.name)


def test_unknown_routes_are_not_found_not_model_not_found(server: Server) -> None:
    """An unknown route answers code not_found; model_not_found stays for unknown models."""
    for method, path in (("GET", "/v1/nothing-here"), ("POST", "/v1/embeddings"), ("GET", "/v1/chat")):
        response = httpx.request(method, server.url + path, timeout=30)
        tally(response.status_code, malformed=True)
        error = response.json()["error"]
        assert response.status_code == 404 and error["code"] == "not_found" and path in error["message"]
    wrong_method = httpx.get(f"{server.v1}/chat/completions", timeout=30)
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
    missing = httpx.post(f"{server.v1}/chat/completions", timeout=30,
                         json={"model": "no-such-agent", "messages": USER})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_slow_letta_times_out_and_cancels_the_run(letta_backend: Backend, roomy: Server, agent) -> None:
    """A turn longer than LETTA_HAYHOOKS_TURN_TIMEOUT: 504 (or an error event + [DONE]) and the run is cancelled."""
    FIGURES["faults injected"] += 2
    sdk = openai.OpenAI(base_url=roomy.v1, api_key="unused", max_retries=0, timeout=60)
    key = f"slow-{uuid.uuid4().hex}"
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as timeout:
        sdk.chat.completions.create(model=agent.name, extra_headers={"X-Session-Id": key},
                                    messages=[{"role": "user", "content": "SLOW:8000:too slow"}])
    tally(timeout.value.status_code)
    assert timeout.value.status_code == 504 and time.monotonic() - started < 8
    with httpx.stream("POST", f"{roomy.v1}/chat/completions", timeout=60, headers={"X-Session-Id": key + "-s"},
                      json={"model": agent.name, "stream": True,
                            "messages": [{"role": "user", "content": "SLOW:8000:too slow"}]}) as response:
        response.read()
    tally(response.status_code)
    # nothing was streamed before the deadline, so the stream's answer is the HTTP error itself
    assert response.status_code == 504 and response.json()["error"]["code"] == "letta_timeout"
    conversation = conversation_of(letta_backend, agent.id, key)
    deadline = time.monotonic() + 15
    while True:
        runs = letta_backend.client.runs.list(conversation_id=conversation.id, limit=10).items
        if runs and all(r.status == "cancelled" for r in runs):
            break
        assert time.monotonic() < deadline, [(r.id, r.status) for r in runs]
        time.sleep(0.5)


def test_client_disconnect_cancels_the_run(letta_backend: Backend, server: Server, agent) -> None:
    """A client that goes away mid-stream: the Letta run is cancelled (visible in Letta's runs)."""
    FIGURES["faults injected"] += 1
    key = f"gone-{uuid.uuid4().hex}"
    with httpx.stream("POST", f"{server.v1}/chat/completions", timeout=60, headers={"X-Session-Id": key},
                      json={"model": agent.name, "stream": True,
                            "messages": [{"role": "user", "content": "SLOW:6000:nobody listens"}]}) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                break  # the role chunk arrived: the run started; now hang up
    tally(response.status_code)
    conversation = conversation_of(letta_backend, agent.id, key)
    deadline = time.monotonic() + 15
    while True:
        runs = letta_backend.client.runs.list(conversation_id=conversation.id, limit=10).items
        if runs and runs[0].status == "cancelled":
            break
        assert time.monotonic() < deadline, [(r.id, r.status) for r in runs]
        time.sleep(0.5)


def test_concurrent_requests_on_one_session_are_serialised(letta_backend: Backend, roomy: Server, agent) -> None:
    """50 concurrent requests on one session: 50 turns, one after another, none interleaved or duplicated."""
    key = f"serial-{uuid.uuid4().hex}"
    texts = [f"turn-{i:02d}" for i in range(50)]

    def send(text: str) -> str:
        response = httpx.post(f"{roomy.v1}/chat/completions", timeout=120, headers={"X-Session-Id": key},
                              json={"model": agent.name, "messages": [{"role": "user", "content": text}]})
        tally(response.status_code)
        assert response.status_code == 200, response.text[:300]
        return response.json()["choices"][0]["message"]["content"]

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(send, texts))
    assert answers == [f"You said: {t}" for t in texts]
    turns = history(letta_backend, conversation_of(letta_backend, agent.id, key).id)
    users = [m.content for m in turns if m.message_type == "user_message"]
    FIGURES["duplicated turns"] += len(users) - len(set(users))
    pairs = list(zip(turns[::2], turns[1::2], strict=True))
    interleaved = [p for p in pairs if p[1].content != f"You said: {p[0].content}"]
    FIGURES["interleaved turns"] += len(interleaved)
    assert sorted(users) == texts
    assert interleaved == []


def test_concurrent_sessions_have_no_cross_talk(letta_backend: Backend, server: Server, agent) -> None:
    """50 concurrent sessions on one agent: each answer and each conversation holds only its own turn."""
    keys = [f"many-{i}-{uuid.uuid4().hex}" for i in range(50)]

    def send(key: str) -> str:
        response = httpx.post(f"{server.v1}/chat/completions", timeout=180, headers={"X-Session-Id": key},
                              json={"model": agent.name, "messages": [{"role": "user", "content": f"I am {key}"}]})
        tally(response.status_code)
        assert response.status_code == 200, response.text[:300]
        return response.json()["choices"][0]["message"]["content"]

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(send, keys))
    assert answers == [f"You said: I am {key}" for key in keys]
    for key in keys[:10]:
        turns = history(letta_backend, conversation_of(letta_backend, agent.id, key).id)
        assert [m.content for m in turns] == [f"I am {key}", f"You said: I am {key}"]


def test_one_megabyte_system_prompt(letta_backend: Backend, server: Server, server_factory) -> None:
    """A 1 MB system prompt: 413 with the default limit, an answer when the limit allows it."""
    big_agent = letta_backend.create_agent("megabyte", context_window_limit=2_000_000)
    prompt = ("All work and no play. " * 50_000)[:1_048_576] + "MB-END"
    body = {"model": big_agent.name, "messages": [{"role": "system", "content": prompt},
                                                  {"role": "user", "content": "SYSTEM?MB-END"}]}
    wait_for_model(server.url, big_agent.name)
    refused = httpx.post(f"{server.v1}/chat/completions", json=body, timeout=60)
    tally(refused.status_code)
    assert refused.status_code == 413
    allowed = server_factory(letta_backend.base_url, extra_env={"LETTA_HAYHOOKS_MAX_SYSTEM_PROMPT_BYTES": "2000000"})
    wait_for_model(allowed.url, big_agent.name)
    answer = httpx.post(f"{allowed.v1}/chat/completions", json=body, timeout=120,
                        headers={"X-Session-Id": uuid.uuid4().hex})
    tally(answer.status_code)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["choices"][0]["message"]["content"] == "SYSTEM_HAS:MB-END=yes"


def test_letta_killed_mid_stream_then_restarted(letta_backend: Backend, server: Server, agent) -> None:
    """Letta dies mid-stream: error event + [DONE] within seconds; after a restart the same proxy answers again."""
    FIGURES["faults injected"] += 1
    body = {"model": agent.name, "stream": True,
            "messages": [{"role": "user", "content": "DRIP:150:" + "streaming until the server dies " * 5}]}
    payloads: list[str] = []
    started = time.monotonic()
    try:
        with httpx.stream("POST", f"{server.v1}/chat/completions", json=body, timeout=60,
                          headers={"X-Session-Id": f"kill-{uuid.uuid4().hex}"}) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    payloads.append(line[6:])
                    if len(payloads) == 3:
                        letta_backend.letta.letta_process.kill()
        tally(response.status_code)
        assert time.monotonic() - started < 20
        assert payloads[-1] == "[DONE]"
        assert set(json.loads(payloads[-2])) == {"error"}
    finally:
        letta_backend.letta.restart_letta(timeout=240)
    sdk = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=60)
    reply = sdk.chat.completions.create(model=agent.name, messages=[{"role": "user", "content": "alive again"}],
                                        extra_headers={"X-Session-Id": f"after-{uuid.uuid4().hex}"})
    tally(200)
    assert reply.choices[0].message.content == "You said: alive again"


def test_healthz_stays_fast_while_the_largest_allowed_request_is_processed(server: Server, agent) -> None:
    # The largest request the default limits allow: 5,000 messages (64 of them new user messages), ~7.7 MB, a
    # 100 KB system prompt and a session key. Before, per-request work was quadratic and ran on the event loop:
    # 20,000 small messages stalled /healthz for 19 s.
    history: list[dict] = [{"role": "system", "content": "S" * 100_000}]
    while len(history) + 2 <= 5000 - 64:
        history += [{"role": "user", "content": "u" * 1500}, {"role": "assistant", "content": "a" * 1500}]
    messages = history + [{"role": "user", "content": f"new {i} " + "n" * 1500} for i in range(64)]
    assert 4990 < len(messages) <= 5000
    body = json.dumps({"model": agent.name, "messages": messages}).encode()
    assert len(body) < 8 * 1_048_576  # under the default body limit

    latencies: list[float] = []
    done = False

    def probe() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not done:
                started = time.perf_counter()
                client.get("/healthz").raise_for_status()
                latencies.append(time.perf_counter() - started)
                time.sleep(0.01)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        prober = pool.submit(probe)
        time.sleep(0.2)
        started = time.perf_counter()
        response = httpx.post(f"{server.v1}/chat/completions", content=body, timeout=300,
                              headers={"content-type": "application/json", "X-Session-Id": f"big-{uuid.uuid4().hex}"})
        elapsed = time.perf_counter() - started
        done = True
        prober.result()
    tally(response.status_code)
    assert response.status_code == 200, response.text[:300]
    during = sorted(latencies)
    median = during[len(during) // 2]
    FIGURES["largest request: seconds"] = round(elapsed, 2)
    FIGURES["largest request: /healthz median ms"] = round(median * 1000, 1)
    FIGURES["largest request: /healthz max ms"] = round(during[-1] * 1000, 1)
    assert len(during) >= 5
    assert median < 0.100, f"/healthz median {median * 1000:.0f} ms while the request took {elapsed:.1f} s"
