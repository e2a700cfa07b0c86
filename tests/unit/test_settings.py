"""Settings: one typed object; the README table and .env.example document exactly its variables and defaults."""

from __future__ import annotations

import re

import pytest

from letta_hayhooks.settings import ImageUrlPolicy, SessionPolicy, Settings, SettingsError, env_var_names, load_settings
from tests.conftest import ROOT

_ENV_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]+)=(.*)$")
_TABLE_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]+)` \| (.*?) \| (.*) \|$")


def env_example() -> dict[str, str]:
    rows = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = _ENV_LINE.match(line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def readme_table() -> dict[str, str]:
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        match = _TABLE_ROW.match(line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def ours(names: dict[str, str]) -> set[str]:
    return {name for name in names if name.startswith("LETTA_")}


def test_env_example_and_readme_list_every_setting() -> None:
    settings_names = set(env_var_names())
    assert ours(env_example()) == settings_names
    assert ours(readme_table()) == settings_names


def test_documented_defaults_are_the_real_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    documented = env_example()
    table = readme_table()
    for name, value in documented.items():
        shown = table[name]
        assert shown == (f"`{value}`" if value else "(unset)"), name
    for name in env_var_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(ROOT / "tests")  # no .env here
    defaults = Settings()
    from_docs = Settings(**{name: value for name, value in documented.items() if value and name.startswith("LETTA_")})
    assert from_docs.model_dump() == defaults.model_dump()


def test_values_are_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LETTA_HAYHOOKS_AGENT_TAGS", "a, b,,c")
    monkeypatch.setenv("LETTA_HAYHOOKS_SESSION_POLICY", "ephemeral")
    monkeypatch.setenv("LETTA_HAYHOOKS_API_KEYS", "k1,k2")
    monkeypatch.setenv("LETTA_BASE_URL", "https://letta.example/")
    monkeypatch.setenv("LETTA_HAYHOOKS_IMAGE_URL_ALLOWED_HOSTS", "Images.Internal., ,cdn.lan")
    monkeypatch.setenv("LETTA_HAYHOOKS_IMAGE_URLS", "off")
    settings = load_settings()
    assert settings.agent_tags == ["a", "b", "c"]
    assert settings.session_policy is SessionPolicy.EPHEMERAL
    assert settings.api_keys == ["k1", "k2"]
    assert settings.letta_base_url == "https://letta.example"
    assert settings.image_url_allowed_hosts == ["images.internal", "cdn.lan"]
    assert settings.image_urls is ImageUrlPolicy.OFF
    assert "k1" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LETTA_HAYHOOKS_REFRESH_INTERVAL", "soon"),
        ("LETTA_HAYHOOKS_REFRESH_INTERVAL", "-1"),
        ("LETTA_HAYHOOKS_SESSION_POLICY", "shared"),
        ("LETTA_HAYHOOKS_AGENT_NAME_REGEX", "(unclosed"),
        ("LETTA_BASE_URL", "localhost:8283"),
        ("LETTA_HAYHOOKS_TOOL_ACTIVITY", "loud"),
        ("LETTA_HAYHOOKS_MAX_MESSAGES", "0"),
        ("LETTA_HAYHOOKS_MAX_NEW_USER_MESSAGES", "many"),
        ("LETTA_HAYHOOKS_MAX_CONTENT_PARTS", "-5"),
        ("LETTA_HAYHOOKS_IMAGE_URLS", "any"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()
