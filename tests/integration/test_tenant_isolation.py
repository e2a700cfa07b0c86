"""
Tenant isolation tried the way an attacker with a second key works, against the real Letta server.

Key A stores responses (keyless, with a session key, in a Conversations API record). Key B and a key limited to
another agent, holding only A's ids, try every read, continue, reference and delete: each answer is the 404 an id
that does not exist gets, the model never sees A's text, and A's data is intact afterwards. Two server processes on
one Letta agree (the owner lives in Letta); a response made before keys were configured is nobody's under keys.
Then bad JSON on every POST route is a 400 (never a 500), `stream: null` is a normal turn, and ten concurrent
requests plus a later replay with one Idempotency-Key carry the first completion's id, with one turn in Letta.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import openai
import pytest

from tests.conftest import Backend, Server, wait_for_model

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
KEYS = {name: f"sk-{name}-{RUN}-{uuid.uuid4().hex}" for name in ("a", "b", "narrow", "ops")}


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


def client(server: Server, name: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=KEYS[name], max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def world(letta_backend: Backend, server_factory, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    agent = letta_backend.create_agent("isolation")
    other = letta_backend.create_agent("isolation-other")
    path: Path = tmp_path_factory.mktemp("isolation-keys") / "keys.toml"
    path.write_text(f"""
[[keys]]
key = "{KEYS['a']}"
name = "a"

[[keys]]
key = "{KEYS['b']}"
name = "b"

[[keys]]
key = "{KEYS['narrow']}"
name = "narrow"
agents = ["{other.name}"]

[[keys]]
key_sha256 = "{hashlib.sha256(KEYS['ops'].encode()).hexdigest()}"
name = "ops"
admin = true
""")
    env = {"LETTA_HAYHOOKS_API_KEYS_FILE": str(path)}
    first = server_factory(letta_backend.base_url, extra_env=env)
    second = server_factory(letta_backend.base_url, extra_env=env)  # a second process behind the same balancer
    for server in (first, second):
        for model in (agent.name, other.name):
            wait_for_model(server.url, model, headers=auth("ops"))
    secret = f"SECRET-{uuid.uuid4().hex[:10]}"
    a = client(first, "a")
    keyless = a.responses.create(model=agent.name, input=f"remember {secret}")
    keyed = a.responses.create(model=agent.name, input=f"keyed {secret}", extra_headers={"X-Session-Id": f"s-{RUN}"})
    record = httpx.post(f"{first.v1}/conversations", json={"items": []}, headers=auth("a"), timeout=30).json()
    in_record = a.responses.create(model=agent.name, input=f"recorded {secret}", conversation=record["id"])
    chat = a.chat.completions.create(model=agent.name, messages=[{"role": "user", "content": f"chat {secret}"}])
    # the Letta conversations they live in, as A's own GET shows them
    conversations = {name: a.responses.retrieve(made.id).conversation.id
                     for name, made in (("keyless", keyless), ("keyed", keyed))}
    return SimpleNamespace(first=first, second=second, agent=agent, other=other, secret=secret, keyless=keyless,
                           keyed=keyed, record=record, in_record=in_record, chat=chat, conversations=conversations)


def missing_body(response: httpx.Response, known_id: str, unknown_id: str) -> dict:
    """The error body with the id replaced: what a foreign id gets must be what an unknown id gets."""
    return json.loads(response.text.replace(known_id, unknown_id))


def unknown_response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


@pytest.mark.parametrize("attacker", ["b", "narrow"])
@pytest.mark.parametrize("which", ["keyless", "keyed", "in_record"])
@pytest.mark.parametrize("process", ["first", "second"])
def test_reads_of_another_keys_response_are_404s_like_missing_ids(world, attacker, which, process) -> None:
    server: Server = getattr(world, process)
    target = getattr(world, which).id
    unknown = unknown_response_id()
    for path in ("/responses/{}", "/responses/{}/input_items"):
        theirs = httpx.get(server.v1 + path.format(target), headers=auth(attacker), timeout=30)
        absent = httpx.get(server.v1 + path.format(unknown), headers=auth(attacker), timeout=30)
        assert theirs.status_code == absent.status_code == 404, theirs.text
        assert missing_body(theirs, target, unknown) == absent.json()
        assert world.secret not in theirs.text
    # the owner reaches it, from either process
    assert httpx.get(f"{server.v1}/responses/{target}", headers=auth("a"), timeout=30).status_code == 200
    items = httpx.get(f"{server.v1}/responses/{target}/input_items", headers=auth("a"), timeout=30).json()
    assert world.secret in json.dumps(items)


@pytest.mark.parametrize("attacker", ["b", "narrow"])
def test_continuing_referencing_or_naming_another_keys_objects_is_a_404(world, letta_backend, attacker) -> None:
    server = world.second
    model = world.agent.name if attacker == "b" else world.other.name
    before = len(letta_backend.model_requests())
    attempts = {
        "previous_response_id": {"model": model, "input": "RECALL?" + world.secret,
                                 "previous_response_id": world.keyless.id},
        "item_reference": {"model": model, "input": [
            {"type": "item_reference", "id": world.keyless.output[0].id},
            {"role": "user", "content": "RECALL?" + world.secret}]},
        "conversation (Letta id)": {"model": model, "input": "RECALL?" + world.secret,
                                    "conversation": world.conversations["keyless"]},
        "conversation (record)": {"model": model, "input": "RECALL?" + world.secret,
                                  "conversation": world.record["id"]},
    }
    for name, body in attempts.items():
        for stream in (False, True):
            answer = httpx.post(f"{server.v1}/responses", json={**body, "stream": stream}, headers=auth(attacker),
                                timeout=60)
            assert answer.status_code == 404, (name, stream, answer.text)
            assert answer.json()["error"]["type"] == "invalid_request_error"
            assert world.secret not in answer.text.replace("RECALL?" + world.secret, "")
    # none of it reached the model: B's turns never ran with A's history
    assert not any(world.secret in json.dumps(r) for r in letta_backend.model_requests()[before:])
    # a refused reference is what a missing one gets
    unknown = httpx.post(f"{server.v1}/responses", headers=auth(attacker), timeout=60, json={
        "model": model, "previous_response_id": unknown_response_id(), "input": "x"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "previous_response_not_found"


def test_the_chat_conversation_of_another_key_cannot_be_named(world) -> None:
    conversation = world.conversations["keyed"]
    answer = httpx.post(f"{world.first.v1}/responses", headers=auth("b"), timeout=60, json={
        "model": world.agent.name, "input": "RECALL?" + world.secret, "conversation": conversation})
    assert answer.status_code == 404
    absent = httpx.post(f"{world.first.v1}/responses", headers=auth("b"), timeout=60, json={
        "model": world.agent.name, "input": "x", "conversation": f"conv-{uuid.uuid4()}"})
    assert missing_body(answer, conversation, absent.json()["error"]["message"].split("'")[1]) == absent.json()


def test_the_owner_continues_its_own_everywhere(world) -> None:
    a = client(world.second, "a")
    again = a.responses.create(model=world.agent.name, input="RECALL?" + world.secret,
                               previous_response_id=world.keyless.id)
    assert again.output_text == f"RECALL:{world.secret}=yes"
    referenced = a.responses.create(model=world.agent.name, input=[
        {"type": "item_reference", "id": world.keyed.output[0].id}, {"role": "user", "content": "ok"}])
    assert referenced.output_text == "You said: ok"
    named = a.responses.create(model=world.agent.name, input="RECALL?keyed " + world.secret,
                               conversation=world.conversations["keyed"])
    assert named.output_text == f"RECALL:keyed {world.secret}=yes"


def test_delete_by_another_key_is_a_404_and_destroys_nothing(world) -> None:
    for attacker in ("b", "narrow"):
        for process in (world.first, world.second):
            gone = httpx.delete(f"{process.v1}/responses/{world.in_record.id}", headers=auth(attacker), timeout=30)
            assert gone.status_code == 404, gone.text
            record = httpx.delete(f"{process.v1}/conversations/{world.record['id']}", headers=auth(attacker),
                                  timeout=30)
            assert record.status_code == 404
    kept = client(world.first, "a").responses.retrieve(world.in_record.id)
    assert kept.output_text == f"You said: recorded {world.secret}"
    items = httpx.get(f"{world.first.v1}/conversations/{world.record['id']}/items", headers=auth("a"), timeout=30)
    assert items.status_code == 200 and world.secret in items.text
    # the owner may delete its own, after which it is gone for everybody
    assert httpx.delete(f"{world.second.v1}/responses/{world.keyed.id}", headers=auth("a"), timeout=30).json() \
        == {"id": world.keyed.id, "object": "response", "deleted": True}
    assert httpx.get(f"{world.first.v1}/responses/{world.keyed.id}", headers=auth("a"), timeout=30).status_code == 404


def test_admin_keys_are_no_exception(world) -> None:
    answer = httpx.get(f"{world.first.v1}/responses/{world.keyless.id}", headers=auth("ops"), timeout=30)
    assert answer.status_code == 404


def test_a_response_made_before_keys_is_nobodys_under_keys(world, server: Server) -> None:
    # `server` runs without API keys on the same Letta: what it stored has no tenant's scope
    old = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=60)
    wait_for_model(server.url, world.agent.name)
    made = old.responses.create(model=world.agent.name, input="before keys")
    assert old.responses.retrieve(made.id).id == made.id  # without keys nothing changed
    for name in ("a", "b", "ops"):
        assert httpx.get(f"{world.first.v1}/responses/{made.id}", headers=auth(name), timeout=30).status_code == 404


# ---------------------------------------------------------------------------------------------------- bad JSON

DEEP = b"[" * 10_000 + b"]" * 10_000
BAD_BODIES = {
    "nested 10,000 deep": b'{"metadata": ' + DEEP + b"}",
    "NaN": b'{"metadata": {"x": NaN}, "items": []}',
    "Infinity": b'{"metadata": {"x": Infinity}}',
    "1e999": b'{"metadata": {"x": 1e999}}',
    "lone surrogate": b'{"items": [{"type": "message", "role": "user", "content": "\\ud800"}]}',
    "not JSON": b"{nope",
}


@pytest.mark.parametrize("bad", list(BAD_BODIES))
def test_bad_json_is_a_400_on_every_post_route(world, bad: str) -> None:
    server = world.first
    record = world.record["id"]
    for path in ("/chat/completions", "/responses", "/conversations", f"/conversations/{record}",
                 f"/conversations/{record}/items"):
        answer = httpx.post(server.v1 + path, content=BAD_BODIES[bad], headers={
            **auth("a"), "content-type": "application/json"}, timeout=60)
        assert answer.status_code == 400, (path, answer.status_code, answer.text[:200])
        assert answer.json()["error"]["type"] == "invalid_request_error"
    items = httpx.get(f"{server.v1}/conversations/{record}/items", headers=auth("a"), timeout=30).text
    assert "\\ud800" not in items  # nothing of it reached Letta's store


def test_explicit_nulls_are_defaults(world) -> None:
    answer = httpx.post(f"{world.first.v1}/chat/completions", headers=auth("a"), timeout=60, json={
        "model": world.agent.name, "messages": [{"role": "user", "content": "null stream"}], "stream": None,
        "temperature": None, "stream_options": None, "tools": None, "user": None})
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "You said: null stream"
    response = httpx.post(f"{world.first.v1}/responses", headers=auth("a"), timeout=60, json={
        "model": world.agent.name, "input": "null response", "stream": None, "instructions": None})
    assert response.status_code == 200 and response.json()["output"][-1]["content"][0]["text"] \
        == "You said: null response"


# ---------------------------------------------------------------------------------------------------- retries

@pytest.mark.parametrize("stream", [False, True])
def test_ten_concurrent_retries_and_a_replay_carry_the_first_id(world, letta_backend, stream: bool) -> None:
    text = f"once {uuid.uuid4().hex[:8]} {stream}"
    body = {"model": world.agent.name, "messages": [{"role": "user", "content": text}], "stream": stream}
    headers = {**auth("a"), "Idempotency-Key": f"idem-{uuid.uuid4().hex}"}

    async def one(http: httpx.AsyncClient) -> tuple[str, int]:
        answer = await http.post(f"{world.first.v1}/chat/completions", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        if not stream:
            return answer.json()["id"], answer.json()["created"]
        chunks = [json.loads(line[6:]) for line in answer.text.splitlines()
                  if line.startswith("data: {")]
        assert len({(c["id"], c["created"]) for c in chunks}) == 1
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) \
            == f"You said: {text}"
        return chunks[0]["id"], chunks[0]["created"]

    async def main() -> list[tuple[str, int]]:
        async with httpx.AsyncClient(timeout=60) as http:
            together = await asyncio.gather(*(one(http) for _ in range(10)))
            await asyncio.sleep(1.1)  # a later replay would get another `created` if it were made anew
            return [*together, await one(http)]

    before = letta_backend.model_requests()
    ids = asyncio.run(main())
    assert len(set(ids)) == 1, ids
    turns = [r for r in letta_backend.model_requests() if r not in before and text in json.dumps(r)]
    assert len(turns) == 1  # one turn in Letta
