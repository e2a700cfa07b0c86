"""The overlay block: its label, its rendering and where it goes in the agent's compiled prompt."""

from __future__ import annotations

from letta_hayhooks.components import PromptOverlay
from letta_hayhooks.components.prompt_overlay import (
    compose_system,
    normalize_prompt,
    overlay_label,
    prompt_hash,
    render_block,
)
from letta_hayhooks.turn_plan import session_digest

COMPILED = "<base_instructions>x</base_instructions>\n<memory_blocks>\n<persona>\np\n</persona>\n</memory_blocks>\n" \
           "<memory_metadata>\n- AGENT_ID: a\n</memory_metadata>"


def test_label_fits_letta_limit() -> None:
    assert len(overlay_label(session_digest("agent-" + "0" * 36, "k" * 256))) <= 50


def test_normalise() -> None:
    assert normalize_prompt("a\r\nb\rc\x00d") == "a\nb\ncd"
    assert prompt_hash("a") != prompt_hash("b")


def test_block_goes_inside_memory_blocks_and_keeps_the_persona() -> None:
    composed = compose_system(COMPILED, "client_prompt_x", "Be terse.")
    blocks = composed[composed.index("<memory_blocks>"):composed.index("</memory_blocks>")]
    assert "<persona>" in blocks and "<client_prompt_x>" in blocks and "Be terse." in blocks
    assert "- read_only=true" in render_block("client_prompt_x", "Be terse.")
    assert composed.endswith("</memory_metadata>")


def test_prompt_without_memory_blocks_gets_one() -> None:
    composed = compose_system("plain prompt", "client_prompt_x", "v")
    assert composed.startswith("plain prompt") and composed.rstrip().endswith("</memory_blocks>")


async def test_disabled_or_absent_prompt_gives_no_override() -> None:
    overlay = PromptOverlay(base_url="http://127.0.0.1:9", enabled=False)
    out = await overlay.run_async(agent_id="a", conversation_id="c", session_scope="s", system_prompt="x",
                                  ephemeral=True)
    assert out == {"override_system": None}


class _FailingBlocks:
    """Letta's block API failing on every call; prompt compilation still works."""

    def __init__(self) -> None:
        self.blocks = self
        self.conversations = self
        self.calls = 0

    async def list(self, **_):
        self.calls += 1
        raise ConnectionError("blocks are down")

    async def recompile(self, conversation_id, **_):
        return COMPILED


async def test_block_failure_falls_back_to_the_request_prompt(monkeypatch) -> None:
    from letta_hayhooks.letta_access.clients import LettaConnection

    fake = _FailingBlocks()
    monkeypatch.setattr(LettaConnection, "async_client", lambda _connection: fake)
    overlay = PromptOverlay(base_url="http://letta")
    out = await overlay.run_async(agent_id="a", conversation_id="conv", session_scope="s", system_prompt="Be terse.")
    assert "Be terse." in out["override_system"] and "<persona>" in out["override_system"]
    assert fake.calls == 1
    # the next turn tries to store the block again (a failure is not cached as success)
    await overlay.run_async(agent_id="a", conversation_id="conv", session_scope="s", system_prompt="Be terse.")
    assert fake.calls == 2


class _RecordingBlocks(_FailingBlocks):
    """Letta's block API answering: no block stored; creating one works."""

    def __init__(self) -> None:
        super().__init__()
        self.created: list[str] = []

    async def list(self, **_):
        self.calls += 1
        return []

    async def create(self, *, label, **_):
        self.created.append(label)
        return type("Block", (), {"id": f"block-{label}"})()


async def test_a_fresh_scope_is_not_looked_up(monkeypatch) -> None:
    from letta_hayhooks.letta_access.clients import LettaConnection

    fake = _RecordingBlocks()
    monkeypatch.setattr(LettaConnection, "async_client", lambda _connection: fake)
    overlay = PromptOverlay(base_url="http://letta")
    # a new chat without a system prompt: nothing stored under its scope, nothing to look up or delete
    out = await overlay.run_async(agent_id="a", conversation_id="conv-1", session_scope="new", fresh_scope=True)
    assert out == {"override_system": None} and fake.calls == 0
    # a new chat with one: the block is created without looking for an old one
    out = await overlay.run_async(agent_id="a", conversation_id="conv-2", session_scope="new2", fresh_scope=True,
                                  system_prompt="Be terse.")
    assert "Be terse." in out["override_system"]
    assert fake.calls == 0 and fake.created == ["client_prompt_new2"]
    # a scope the overlay has not seen and that is not fresh is looked up (a block may be stored from before)
    await overlay.run_async(agent_id="a", conversation_id="conv-3", session_scope="old")
    assert fake.calls == 1
