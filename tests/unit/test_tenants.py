"""API keys as tenants: plain keys, the key file (TOML and JSON), its validation, and which agents a key may use."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from letta_hayhooks.letta_access.catalog import AgentInfo
from letta_hayhooks.settings import Settings, SettingsError, load_settings
from letta_hayhooks.tenants import KeyPolicy, KeyPolicyError, Tenant, allows, key_digest

SUPPORT = AgentInfo("agent-1", "support-bot", "support-bot", tags=("team-a",))
PUBLIC = AgentInfo("agent-2", "faq", "faq", tags=("public", "team-b"))
PRIVATE = AgentInfo("agent-3", "ceo-assistant", "ceo-assistant", tags=("exec",))


def write(tmp_path: Path, text: str, name: str = "keys.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_plain_keys_use_every_agent_and_no_operator_route() -> None:
    policy = KeyPolicy.load(["k1", "k2"])
    one, two = policy.tenant_for("k1"), policy.tenant_for("k2")
    assert one is not None and two is not None and one != two
    assert all(t.allows(agent) for t in (one, two) for agent in (SUPPORT, PUBLIC, PRIVATE))
    assert not (one.admin or one.may_list_sessions or one.may_read_metrics)
    assert one.every_agent
    assert policy.tenant_for("k3") is None and policy.tenant_for("") is None and policy.tenant_for(None) is None
    assert not KeyPolicy.load([]) and not KeyPolicy.load([], None)


def test_tenant_identity_is_a_short_hash_of_the_key_and_never_the_key() -> None:
    key = "sk-very-secret-value"
    tenant = KeyPolicy.load([key]).tenant_for(key)
    assert tenant.id == hashlib.sha256(key.encode()).hexdigest()[:16]
    assert key not in repr(tenant) and key not in tenant.name
    assert tenant.name == f"key-{tenant.id[:8]}"


def test_key_file_policies(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
[[keys]]
key = "alice-key"
name = "alice"
agents = ["support-*", "tag:public"]

[[keys]]
key_sha256 = "{key_digest('ops-key')}"
name = "ops"
admin = true

[[keys]]
key = "viewer-key"
agents = []
sessions_route = true
metrics = true
""")
    policy = KeyPolicy.load(["plain"], path)
    alice, ops, viewer = (policy.tenant_for(k) for k in ("alice-key", "ops-key", "viewer-key"))
    assert alice.name == "alice" and not alice.every_agent
    assert alice.allows(SUPPORT) and alice.allows(PUBLIC) and not alice.allows(PRIVATE)
    assert not alice.may_list_sessions
    assert ops.admin and ops.may_list_sessions and ops.may_read_metrics and ops.allows(PRIVATE)
    assert viewer.may_list_sessions and viewer.may_read_metrics and not viewer.admin
    assert not any(viewer.allows(agent) for agent in (SUPPORT, PUBLIC, PRIVATE))  # an empty list: no agent
    assert policy.tenant_for("plain").every_agent
    assert [t.name for t in policy.tenants][1:] == ["alice", "ops", viewer.name]


def test_key_file_in_json(tmp_path: Path) -> None:
    path = write(tmp_path, json.dumps({"keys": [{"key": "k", "agents": ["agent-3"], "name": "by-id"}]}), "keys.json")
    tenant = KeyPolicy.load([], path).tenant_for("k")
    assert tenant.allows(PRIVATE) and not tenant.allows(SUPPORT)  # a raw agent id is a pattern too


def test_patterns_are_case_sensitive_globs_and_exact_tags() -> None:
    tenant = Tenant(id="t", name="t", agents=("Support-*", "tag:team"))
    assert not tenant.allows(SUPPORT)  # names are matched case-sensitively, tags exactly
    assert not tenant.allows(PUBLIC)
    assert Tenant(id="t", name="t", agents=("support-?ot", "tag:exec")).allows(SUPPORT)
    assert allows(None, PRIVATE)  # no API keys: every agent
    assert not allows(tenant, PRIVATE)


@pytest.mark.parametrize(("text", "reason"), [
    ('[[keys]]\nkey = "a"\nadmn = true\n', "unknown field(s) admn"),
    ('[[keys]]\nname = "x"\n', "exactly one of `key` and `key_sha256`"),
    ('[[keys]]\nkey = "a"\nkey_sha256 = "' + "0" * 64 + '"\n', "exactly one of"),
    ('[[keys]]\nkey_sha256 = "abc"\n', "64 hex digits"),
    ('[[keys]]\nkey = " padded "\n', "without surrounding spaces"),
    ('[[keys]]\nkey = "a"\nadmin = "yes"\n', "`admin` must be true or false"),
    ('[[keys]]\nkey = "a"\nagents = "support-*"\n', "`agents` must be a list"),
    ('[[keys]]\nkey = "a"\nagents = ["tag:"]\n', "`tag:` needs a tag name"),
    ('[[keys]]\nkey = "a"\n[[keys]]\nkey = "a"\n', "configured twice"),
    ('keys = "a"\n', "exactly one list, `keys`"),
    ('[[keys]]\nkey = "sk-in-a-broken-line\n', "not valid TOML (line 2)"),
])
def test_bad_key_files_are_refused_without_showing_a_key(tmp_path: Path, text: str, reason: str) -> None:
    with pytest.raises(KeyPolicyError) as error:
        KeyPolicy.load([], write(tmp_path, text))
    assert reason in str(error.value)
    assert "sk-in-a-broken-line" not in str(error.value)


def test_a_key_both_plain_and_in_the_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyPolicyError, match="configured twice"):
        KeyPolicy.load(["a"], write(tmp_path, '[[keys]]\nkey = "a"\n'))


def test_settings_check_the_key_file_at_start_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("LETTA_HAYHOOKS_API_KEYS", "dup")
    monkeypatch.setenv("LETTA_HAYHOOKS_API_KEYS_FILE", str(write(tmp_path, '[[keys]]\nkey = "dup"\n')))
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert "LETTA_HAYHOOKS_API_KEYS_FILE" in str(error.value) and "configured twice" in str(error.value)
    monkeypatch.setenv("LETTA_HAYHOOKS_API_KEYS_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(SettingsError, match="cannot read the key file"):
        load_settings()
    monkeypatch.setenv("LETTA_HAYHOOKS_API_KEYS_FILE", str(write(tmp_path, '[[keys]]\nkey = "other"\n')))
    settings = Settings()
    assert KeyPolicy.load(settings.api_keys, settings.api_keys_file).tenant_for("other") is not None
    assert "other" not in repr(settings)


def test_a_session_key_that_is_an_api_key_is_recognised(tmp_path: Path) -> None:
    policy = KeyPolicy.load(["k1"], write(tmp_path, '[[keys]]\nkey = "k2"\n'))
    tenant = policy.tenant_for("k1")
    assert tenant.is_api_key("k1") and tenant.is_api_key("k2")  # any configured key, not only its own
    assert not tenant.is_api_key("chat-42")
