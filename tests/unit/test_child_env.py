"""
What local mode's children (the scripted model and Letta) find in their environment: never this server's secrets,
but the provider settings local mode chose, and the rest of the shell's environment.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from letta_hayhooks.local import letta_server
from letta_hayhooks.local.letta_server import LocalLetta

SECRETS = {
    "LETTA_HAYHOOKS_API_KEYS": "client-key-1,client-key-2",
    "LETTA_HAYHOOKS_API_KEY": "the-chat-clients-key",
    "LETTA_API_KEY": "remote-letta-key",
}


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Start a `LocalLetta` with stand-ins for the processes; returns the keyword arguments of each Popen."""
    for name, value in {**SECRETS, "ANTHROPIC_API_KEY": "provider-key", "OPENAI_API_KEY": "shell-openai",
                        "LETTA_PG_URI": "postgresql://x", "SOMETHING_ELSE": "kept"}.items():
        monkeypatch.setenv(name, value)
    calls: list[dict[str, Any]] = []

    def popen(args: list[str], **kwargs: Any) -> SimpleNamespace:
        calls.append({"args": args, **kwargs})
        return SimpleNamespace(pid=1, poll=lambda: None)

    monkeypatch.setattr(letta_server.subprocess, "Popen", popen)
    monkeypatch.setattr(LocalLetta, "_wait", lambda *_args, **_kwargs: None)
    return calls


def fake_venv(tmp_path: Path) -> Any:
    return SimpleNamespace(installed=lambda: True, python=tmp_path / "python", tiktoken_cache=tmp_path / "tiktoken",
                           path=tmp_path)


def test_the_scripted_model_and_letta_never_get_our_secrets(launched: list[dict], tmp_path: Path) -> None:
    LocalLetta(home=tmp_path, venv=fake_venv(tmp_path), letta_port=1, stub_port=2).start()
    stub, letta = (call["env"] for call in launched)
    for env in (stub, letta):
        assert not set(SECRETS) & set(env)
        assert not any(value in SECRETS.values() for value in env.values())
        assert "LETTA_PG_URI" not in env and env["SOMETHING_ELSE"] == "kept"
    assert letta["ANTHROPIC_API_KEY"] == "provider-key"  # the shell's provider keys still reach Letta
    assert letta["OPENAI_API_KEY"] == "sk-scripted"  # the scripted model, not the shell's OpenAI key


def test_a_provider_key_reaches_letta(launched: list[dict], tmp_path: Path) -> None:
    provider = {"OPENAI_API_KEY": "sk-real", "OPENAI_BASE_URL": "https://api.example"}
    LocalLetta(home=tmp_path, venv=fake_venv(tmp_path), letta_port=1, provider_env=provider).start()
    (letta,) = (call["env"] for call in launched)
    assert letta["OPENAI_API_KEY"] == "sk-real" and letta["OPENAI_BASE_URL"] == "https://api.example"
    assert not set(SECRETS) & set(letta)
