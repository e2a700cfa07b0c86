"""
API keys as tenants, against the real Letta server.

Proves: the same session key sent with two API keys reaches two conversations (a fact told with one key is not
recalled with the other) and two system-prompt blocks (the second key cannot delete the first key's block); the
agent's default thread stays shared; a restricted key sees and reaches only its agents (others are a 404
`model_not_found`, like absent ones); the sessions view needs an admin key and answers 503 while Letta is down;
keys never reach Letta or the log.
"""

from __future__ import annotations

import hashlib
import socket
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import openai
import pytest

from letta_hayhooks.components.prompt_overlay import overlay_label
from letta_hayhooks.components.session_resolver import SUMMARY_PREFIX
from letta_hayhooks.errors import model_not_found
from letta_hayhooks.turn_plan import session_digest
from tests.conftest import Backend, Server, wait_for_model
from tests.tcp_relay import TcpRelay

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
KEYS = {name: f"sk-{name}-{RUN}-{uuid.uuid4().hex}" for name in ("alpha", "beta", "narrow", "tagged", "ops", "plain")}


def tenant_id(name: str) -> str:
    return hashlib.sha256(KEYS[name].encode()).hexdigest()[:16]


def key_file(directory: Path, visible_glob: str, visible_tag: str) -> Path:
    path = directory / "keys.toml"
    path.write_text(f"""
[[keys]]
key = "{KEYS['alpha']}"
name = "alpha"

[[keys]]
key = "{KEYS['beta']}"
name = "beta"

[[keys]]
key = "{KEYS['narrow']}"
name = "narrow"
agents = ["{visible_glob}"]

[[keys]]
key = "{KEYS['tagged']}"
name = "tagged"
agents = ["tag:{visible_tag}"]

[[keys]]
key_sha256 = "{hashlib.sha256(KEYS['ops'].encode()).hexdigest()}"
name = "ops"
admin = true
""")
    return path


def keyed_env(path: Path) -> dict[str, str]:
    return {"LETTA_HAYHOOKS_API_KEYS": KEYS["plain"], "LETTA_HAYHOOKS_API_KEYS_FILE": str(path),
            "LETTA_HAYHOOKS_SESSIONS_ROUTE": "1"}


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


def sdk(server: Server, name: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=KEYS[name], max_retries=0, timeout=60)


def ask(server: Server, name: str, model: str, messages: list[dict], session: str | None = None) -> str:
    headers = {"X-Session-Id": session} if session else {}
    reply = sdk(server, name).chat.completions.create(model=model, messages=messages, extra_headers=headers)
    return reply.choices[0].message.content


@pytest.fixture(scope="module")
def setup(letta_backend: Backend, server_factory, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    visible_tag = f"visible-{RUN}"
    shared = letta_backend.create_agent("tenants-shared", tags=[visible_tag])
    hidden = letta_backend.create_agent("tenants-hidden")
    glob = f"tenants-shared-{letta_backend.run_id}-*"
    path = key_file(tmp_path_factory.mktemp("tenant-keys"), glob, visible_tag)
    server = server_factory(letta_backend.base_url, extra_env=keyed_env(path))
    for model in (shared.name, hidden.name):
        wait_for_model(server.url, model, headers=auth("ops"))
    return SimpleNamespace(server=server, shared=shared, hidden=hidden, key_file=path,
                           server_backend=letta_backend.base_url)


def summaries(backend: Backend, agent_id: str) -> list[str]:
    return [c.summary or "" for c in backend.client.conversations.list(agent_id=agent_id, limit=1000)]


def test_the_same_session_key_with_another_api_key_is_another_conversation(
    letta_backend: Backend, setup: SimpleNamespace
) -> None:
    server, model = setup.server, setup.shared.name
    session = f"chat-{uuid.uuid4().hex}"
    fact = f"PAPAYA-{uuid.uuid4().hex[:8]}"
    told = [{"role": "user", "content": f"the secret is {fact}"}]
    assert ask(server, "alpha", model, told, session) == f"You said: the secret is {fact}"
    # beta sends alpha's session key: it must not reach alpha's conversation
    assert ask(server, "beta", model, [{"role": "user", "content": f"RECALL?{fact}"}], session) == f"RECALL:{fact}=no"
    transcript = [*told, {"role": "assistant", "content": f"You said: the secret is {fact}"},
                  {"role": "user", "content": f"RECALL?{fact}"}]
    assert ask(server, "alpha", model, transcript, session) == f"RECALL:{fact}=yes"

    mine = session_digest(setup.shared.id, session, tenant_id("alpha"))
    theirs = session_digest(setup.shared.id, session, tenant_id("beta"))
    found = summaries(letta_backend, setup.shared.id)
    assert sum(s.startswith(f"{SUMMARY_PREFIX}{mine} ") for s in found) == 1
    assert sum(s.startswith(f"{SUMMARY_PREFIX}{theirs} ") for s in found) == 1
    assert not any(key in s for s in found for key in KEYS.values())  # keys never reach Letta


def test_another_api_key_cannot_delete_the_system_prompt_block(letta_backend: Backend, setup: SimpleNamespace) -> None:
    server, model = setup.server, setup.shared.name
    session = f"prompt-{uuid.uuid4().hex}"
    needle = f"NEEDLE-{uuid.uuid4().hex[:8]}"
    system = {"role": "system", "content": f"You are alpha's helper. {needle}"}
    assert ask(server, "alpha", model, [system, {"role": "user", "content": f"SYSTEM?{needle}"}], session) \
        == f"SYSTEM_HAS:{needle}=yes"
    label = overlay_label(session_digest(setup.shared.id, session, tenant_id("alpha")))
    assert len(letta_backend.client.blocks.list(label=label).items) == 1

    # beta sends alpha's session key and no system prompt: that used to delete alpha's block
    assert ask(server, "beta", model, [{"role": "user", "content": f"SYSTEM?{needle}"}], session) \
        == f"SYSTEM_HAS:{needle}=no"
    assert len(letta_backend.client.blocks.list(label=label).items) == 1
    assert ask(server, "alpha", model, [system, {"role": "user", "content": f"SYSTEM?{needle}"}], session) \
        == f"SYSTEM_HAS:{needle}=yes"


def test_keyless_chats_are_the_tenants_own_and_the_default_thread_stays_shared(
    setup: SimpleNamespace, server_factory
) -> None:
    model = setup.shared.name
    fact = f"GUAVA-{uuid.uuid4().hex[:8]}"
    told = [{"role": "user", "content": f"note {fact}"}]
    # the default policy: a keyless chat is its own conversation, found from its transcript, within the key's scope
    assert ask(setup.server, "alpha", model, told) == f"You said: note {fact}"
    same_history = [*told, {"role": "assistant", "content": f"You said: note {fact}"},
                    {"role": "user", "content": f"RECALL?{fact}"}]
    assert ask(setup.server, "alpha", model, same_history) == f"RECALL:{fact}=yes"
    assert ask(setup.server, "beta", model, same_history[2:]) == f"RECALL:{fact}=no"
    # the `agent` policy: every key's keyless turns meet in the agent's one default thread, by design
    agent_policy = server_factory(setup.server_backend, extra_env={
        **keyed_env(setup.key_file), "LETTA_HAYHOOKS_SESSION_POLICY": "agent"})
    wait_for_model(agent_policy.url, model, headers=auth("ops"))
    fact = f"PAPAYA-{uuid.uuid4().hex[:8]}"
    assert ask(agent_policy, "alpha", model, [{"role": "user", "content": f"note {fact}"}]) == f"You said: note {fact}"
    assert ask(agent_policy, "beta", model, [{"role": "user", "content": f"RECALL?{fact}"}]) == f"RECALL:{fact}=yes"


def test_an_api_key_is_refused_as_a_session_key(setup: SimpleNamespace) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        ask(setup.server, "alpha", setup.shared.name, [{"role": "user", "content": "hi"}], KEYS["beta"])
    assert refused.value.body["code"] == "invalid_session_key"


def test_a_restricted_key_sees_and_reaches_only_its_agents(setup: SimpleNamespace) -> None:
    server, shared, hidden = setup.server, setup.shared, setup.hidden
    narrow = sdk(server, "narrow")
    listed = {m.id for m in narrow.models.list()}
    assert shared.name in listed and hidden.name not in listed
    assert {shared.name, hidden.name} <= {m.id for m in sdk(server, "alpha").models.list()}
    assert narrow.models.retrieve(shared.name).id == shared.name

    absent = f"no-such-agent-{RUN}"
    for model in (hidden.name, hidden.id, absent):  # another key's agent looks exactly like an absent one
        with pytest.raises(openai.NotFoundError) as missing:
            narrow.models.retrieve(model)
        assert missing.value.body["code"] == "model_not_found"
        with pytest.raises(openai.NotFoundError) as chat_missing:
            narrow.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert chat_missing.value.body == model_not_found(model).body()["error"]
    assert ask(server, "narrow", shared.name, [{"role": "user", "content": "mine"}], f"n-{RUN}") == "You said: mine"
    # Hayhooks' status routes name every pipeline: not for a key restricted to some agents
    assert httpx.get(f"{server.url}/status", headers=auth("narrow"), timeout=30).status_code == 404
    assert httpx.get(f"{server.url}/status", headers=auth("alpha"), timeout=30).status_code == 200


def test_a_key_restricted_by_tag_reaches_the_tagged_agent(setup: SimpleNamespace) -> None:
    tagged = sdk(setup.server, "tagged")
    listed = {m.id for m in tagged.models.list()}
    assert setup.shared.name in listed and setup.hidden.name not in listed
    with pytest.raises(openai.NotFoundError):
        tagged.models.retrieve(setup.hidden.name)


def test_the_sessions_view_needs_an_admin_key(setup: SimpleNamespace) -> None:
    server, model = setup.server, setup.shared.name
    session = f"listed-{uuid.uuid4().hex}"
    ask(server, "alpha", model, [{"role": "user", "content": "remember me"}], session)
    ask(server, "beta", model, [{"role": "user", "content": "me too"}], session)
    url = f"{server.v1}/letta/sessions"
    for name in ("beta", "plain", "narrow"):
        refused = httpx.get(url, params={"model": model}, headers=auth(name), timeout=30)
        assert refused.status_code == 403, name
        assert refused.json()["error"]["type"] == "permission_error"
        assert session not in refused.text
    view = httpx.get(url, params={"model": model}, headers=auth("ops"), timeout=30)
    assert view.status_code == 200
    owners = {row["tenant"] for row in view.json()["data"] if row["session_key"] == session}
    assert owners == {"alpha", "beta"}
    assert httpx.get(url, params={"model": f"absent-{RUN}"}, headers=auth("ops"), timeout=30).status_code == 404


def test_keys_never_reach_the_log(setup: SimpleNamespace) -> None:
    log = setup.server.log()
    assert "narrow" in log  # the names are there (refusals), the keys are not
    assert not any(key in log for key in KEYS.values())


def test_the_sessions_view_answers_503_while_letta_is_down(
    letta_backend: Backend, server_factory, setup: SimpleNamespace
) -> None:
    relay = TcpRelay(letta_backend.letta.letta_port)
    relay.up()
    try:
        proxy = server_factory(relay.url, extra_env=keyed_env(setup.key_file))
        wait_for_model(proxy.url, setup.shared.name, headers=auth("ops"))
        relay.down()
        down = httpx.get(f"{proxy.v1}/letta/sessions", params={"model": setup.shared.name}, headers=auth("ops"),
                         timeout=60)
        assert down.status_code == 503, down.text
        assert down.json()["error"]["type"] == "server_error"
        assert "127.0.0.1" not in down.text
        # a non-admin key is refused before Letta is asked
        assert httpx.get(f"{proxy.v1}/letta/sessions", params={"model": setup.shared.name}, headers=auth("beta"),
                         timeout=60).status_code == 403
    finally:
        relay.close()


def test_the_sessions_view_answers_503_when_letta_never_answered(server_factory, setup: SimpleNamespace) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proxy = server_factory(f"http://127.0.0.1:{port}", extra_env=keyed_env(setup.key_file))
    down = httpx.get(f"{proxy.v1}/letta/sessions", params={"model": setup.shared.name}, headers=auth("ops"),
                     timeout=60)
    assert down.status_code == 503, down.text
    assert down.json()["error"]["type"] == "server_error"
