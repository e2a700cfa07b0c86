"""
API keys as tenants: who a key is, which agents it may use, which operator routes it may open.

Plain keys (`LETTA_HAYHOOKS_API_KEYS=key1,key2`) may use every agent and no operator route. A key file
(`LETTA_HAYHOOKS_API_KEYS_FILE`, TOML, or JSON when the name ends in `.json`) gives each key a policy:

    [[keys]]
    key = "sk-alice-..."          # or key_sha256 = "<hex sha256 of the key>", so the file holds no secret
    name = "alice"                # shown in logs (the key never is)
    agents = ["support-*", "tag:public"]   # name globs (or agent ids) and tags; default: every agent
    admin = false                 # every operator route (sessions view, metrics)
    sessions_route = false        # only the sessions view
    metrics = false               # only the metrics

A tenant's identity is a short hash of its key: it becomes part of every session scope, so the same session key sent
with two keys reaches two conversations. Nothing here ever keeps or shows the key itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Protocol

_FIELDS = {"key", "key_sha256", "name", "agents", "admin", "sessions_route", "metrics"}
_FLAGS = ("admin", "sessions_route", "metrics")
_TAG_PREFIX = "tag:"
# 16 hex digits (64 bits) tell tenants apart; the full digest only checks presented keys
_ID_CHARS = 16


class KeyPolicyError(ValueError):
    """A key file or key list that cannot be used; the message never contains a key."""


class AgentLike(Protocol):
    """What `Tenant.allows` reads of an agent (the catalogue's `AgentInfo` has it)."""

    @property
    def name(self) -> str: ...

    @property
    def id(self) -> str: ...

    @property
    def tags(self) -> tuple[str, ...]: ...


def key_digest(key: str) -> str:
    """The hex sha256 of a key: what the server compares and what a key file may hold instead of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Tenant:
    """One API key's identity and grants."""

    id: str  # sha256(key)[:16]: part of every session scope of this key
    name: str  # for logs
    agents: tuple[str, ...] = ("*",)
    admin: bool = False
    sessions_route: bool = False
    metrics: bool = False
    # digests of every configured key, so a session key that is an API key can be refused (see `is_api_key`)
    _all_digests: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def allows(self, agent: AgentLike) -> bool:
        """Whether this key may see and use `agent` (a glob on its name or id, or `tag:<tag>`)."""
        tags = getattr(agent, "tags", ()) or ()
        for pattern in self.agents:
            if pattern.startswith(_TAG_PREFIX):
                if pattern[len(_TAG_PREFIX):] in tags:
                    return True
            elif fnmatchcase(agent.name, pattern) or fnmatchcase(agent.id, pattern):
                return True
        return False

    @property
    def every_agent(self) -> bool:
        """Whether this key may use every agent (then routes that list all pipelines show it nothing new)."""
        return "*" in self.agents

    @property
    def may_list_sessions(self) -> bool:
        """The sessions view shows every tenant's session keys: admins and keys granted it only."""
        return self.admin or self.sessions_route

    @property
    def may_read_metrics(self) -> bool:
        """Metrics cover every tenant's traffic: admins and keys granted them only."""
        return self.admin or self.metrics

    def is_api_key(self, value: str) -> bool:
        """Whether `value` is one of the configured API keys (a client must not make one a session key)."""
        return key_digest(value) in self._all_digests


def allows(tenant: Tenant | None, agent: AgentLike) -> bool:
    """`tenant.allows(agent)`, where no tenant (no API keys configured) may use every agent."""
    return tenant is None or tenant.allows(agent)


@dataclass(frozen=True)
class _Entry:
    digest: str
    name: str | None
    agents: tuple[str, ...]
    flags: dict[str, bool]


class KeyPolicy:
    """Every configured key, looked up by the digest of the key a request presents."""

    def __init__(self, entries: Sequence[_Entry]) -> None:
        digests = frozenset(entry.digest for entry in entries)
        if len(digests) != len(entries):
            msg = "the same API key is configured twice"
            raise KeyPolicyError(msg)
        self._by_digest: dict[str, Tenant] = {}
        for entry in entries:
            tenant_id = entry.digest[:_ID_CHARS]
            self._by_digest[entry.digest] = Tenant(
                id=tenant_id, name=entry.name or f"key-{tenant_id[:8]}", agents=entry.agents,
                _all_digests=digests, **entry.flags,
            )

    @classmethod
    def load(cls, plain_keys: Iterable[str] = (), key_file: str | Path | None = None) -> KeyPolicy:
        """
        The policy of the plain keys (every agent, no operator route) plus those of the key file.

        :raises KeyPolicyError: for an unreadable or malformed file, or a key configured twice.
        """
        entries = [_Entry(key_digest(key), None, ("*",), {}) for key in plain_keys if key]
        if key_file:
            entries += read_key_file(key_file)
        return cls(entries)

    def __bool__(self) -> bool:
        return bool(self._by_digest)

    @property
    def tenants(self) -> list[Tenant]:
        """Every tenant, in configuration order."""
        return list(self._by_digest.values())

    def tenant_for(self, presented: str | None) -> Tenant | None:
        """The tenant of a presented key; None for a missing or unknown key."""
        if not presented:
            return None
        # looked up by digest, not compared character by character: the timing tells nothing about a key
        return self._by_digest.get(key_digest(presented))


def read_key_file(path: str | Path) -> list[_Entry]:
    """
    Read a key file: `{"keys": [...]}` in TOML, or in JSON when the file name ends in `.json`.

    :raises KeyPolicyError: naming the entry and field at fault, never a key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read the key file: {exc.strerror or type(exc).__name__}"
        raise KeyPolicyError(msg) from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        # the parser's message may quote a line of the file, which can hold a key: only its position is kept
        line = getattr(exc, "lineno", None) or next(iter(re.findall(r"at line (\d+)", str(exc))), None)
        where = f" (line {line})" if line else ""
        msg = f"the key file is not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}{where}"
        raise KeyPolicyError(msg) from None
    if not isinstance(data, dict) or set(data) != {"keys"} or not isinstance(data["keys"], list):
        msg = "the key file must hold exactly one list, `keys`"
        raise KeyPolicyError(msg)
    return [_entry(i, raw) for i, raw in enumerate(data["keys"], start=1)]


def _entry(number: int, raw: Any) -> _Entry:
    where = f"key entry {number}"
    if not isinstance(raw, dict):
        msg = f"{where} is not a table/object"
        raise KeyPolicyError(msg)
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        # a typo such as `admn` must not silently grant or deny anything
        msg = f"{where}: unknown field(s) {', '.join(unknown)}"
        raise KeyPolicyError(msg)
    key, hashed = raw.get("key"), raw.get("key_sha256")
    if (key is None) == (hashed is None):
        msg = f"{where}: give exactly one of `key` and `key_sha256`"
        raise KeyPolicyError(msg)
    if key is not None:
        if not isinstance(key, str) or not key.strip() or key != key.strip():
            msg = f"{where}: `key` must be a non-empty string without surrounding spaces"
            raise KeyPolicyError(msg)
        digest = key_digest(key)
    else:
        if not isinstance(hashed, str) or len(hashed) != 64 or any(c not in "0123456789abcdef" for c in hashed.lower()):
            msg = f"{where}: `key_sha256` must be 64 hex digits (the sha256 of the key)"
            raise KeyPolicyError(msg)
        digest = hashed.lower()
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        msg = f"{where}: `name` must be a non-empty string"
        raise KeyPolicyError(msg)
    agents = raw.get("agents", ["*"])
    if not isinstance(agents, list) or not all(isinstance(p, str) and p.strip() for p in agents):
        msg = f"{where}: `agents` must be a list of name patterns or `tag:<tag>` strings"
        raise KeyPolicyError(msg)
    if any(p.startswith(_TAG_PREFIX) and not p[len(_TAG_PREFIX):] for p in agents):
        msg = f"{where}: `tag:` needs a tag name"
        raise KeyPolicyError(msg)
    flags = {}
    for flag in _FLAGS:
        value = raw.get(flag, False)
        if not isinstance(value, bool):
            msg = f"{where}: `{flag}` must be true or false"
            raise KeyPolicyError(msg)
        flags[flag] = value
    return _Entry(digest, name.strip() if name else None, tuple(p.strip() for p in agents), flags)
