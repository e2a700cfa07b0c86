"""RequestBodyMiddleware: every body read once, bounded, and (for JSON) parsed and checked by the one parser."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from letta_hayhooks.server.request_body import RequestBodyMiddleware, json_body_of


def run(raw: bytes, *, method: str = "POST", content_type: bytes | None = b"application/json", chunks: int = 1,
        max_body_bytes: int = 10_000) -> tuple[int | None, Any, list[dict], bytes]:
    """(status, the body the inner app saw in the scope, what the inner app received, the answer's bytes)."""
    seen: dict[str, Any] = {}
    received: list[dict] = []
    sent: list[dict] = []
    pieces = [raw[len(raw) * i // chunks:len(raw) * (i + 1) // chunks] for i in range(chunks)]
    queue = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)]

    async def receive() -> dict:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    async def inner(scope: dict, receive_: Any, send_: Any) -> None:
        seen["body"] = json_body_of(scope)
        received.append(await receive_())
        await send_({"type": "http.response.start", "status": 204, "headers": []})
        await send_({"type": "http.response.body", "body": b""})

    headers = [(b"content-type", content_type)] if content_type is not None else []
    scope = {"type": "http", "method": method, "path": "/v1/conversations", "headers": headers, "query_string": b""}
    asyncio.run(RequestBodyMiddleware(inner, max_body_bytes=max_body_bytes)(scope, receive, send))
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), None)
    return status, seen.get("body"), received, b"".join(m.get("body", b"") for m in sent)


def error_of(answer: bytes) -> dict:
    return json.loads(answer)["error"]


@pytest.mark.parametrize(("raw", "message"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"metadata": {"x": NaN}}', "finite number"),
    (b'{"metadata": {"x": Infinity}}', "finite number"),
    (b'{"metadata": {"x": -Infinity}}', "finite number"),
    (b'{"metadata": {"x": 1e999}}', "finite number"),
    (b'{"items": [{"content": "\\ud800"}]}', "lone UTF-16 surrogate"),
    (b'{"\\udc00": 1}', "lone UTF-16 surrogate"),
    (b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
    (b'{"a": ' * 10_000 + b"1" + b"}" * 10_000, "nested too deeply"),
    (b'{"a": ' * 150 + b"1" + b"}" * 150, "nested too deeply"),
    (b"\xff\xfe{}", "not valid JSON"),
])
def test_bad_json_is_a_400_before_any_route(raw: bytes, message: str) -> None:
    status, seen, received, answer = run(raw, max_body_bytes=1_000_000)
    assert status == 400
    error = error_of(answer)
    assert message in error["message"] and error["type"] == "invalid_request_error"
    assert received == [] and seen is None  # no route saw it


def test_a_good_body_is_parsed_once_and_replayed_unchanged() -> None:
    raw = json.dumps({"items": [{"role": "user", "content": "hi \u2603"}], "metadata": {"n": 1.5}}).encode()
    status, seen, received, _ = run(raw, chunks=3)
    assert status == 204
    assert seen == json.loads(raw)
    assert received == [{"type": "http.request", "body": raw, "more_body": False}]


def test_after_the_body_the_route_sees_the_clients_disconnect() -> None:
    status, _, received, _ = run(b"{}")
    assert status == 204 and received[0]["body"] == b"{}"


def test_a_body_over_the_limit_is_a_413_even_when_it_is_not_json() -> None:
    status, _, received, answer = run(b"x" * 101, content_type=b"multipart/form-data; boundary=b", max_body_bytes=100)
    assert status == 413 and received == []
    assert error_of(answer)["type"] == "invalid_request_error"


def test_other_content_types_pass_unparsed() -> None:
    status, seen, received, _ = run(b"--b\r\nnot json\r\n", content_type=b"multipart/form-data; boundary=b")
    assert status == 204 and seen is None and received[0]["body"] == b"--b\r\nnot json\r\n"


def test_a_body_without_a_content_type_is_read_as_json() -> None:
    assert run(b"{bad", content_type=None)[0] == 400
    assert run(b'{"a": 1}', content_type=None)[1] == {"a": 1}


def test_an_empty_body_and_a_get_pass() -> None:
    assert run(b"")[:2] == (204, None)
    assert run(b"{bad", method="GET")[0] == 204


def test_a_large_body_is_parsed_off_the_event_loop_with_the_same_checks() -> None:
    big = b'{"x": "' + b"y" * 70_000 + b'", "n": NaN}'
    assert run(big, max_body_bytes=100_000)[0] == 400
    ok = b'{"x": "' + b"y" * 70_000 + b'"}'
    assert run(ok, max_body_bytes=100_000)[1] == {"x": "y" * 70_000}
