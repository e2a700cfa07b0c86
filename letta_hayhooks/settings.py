"""
One typed settings object for the whole server, read from the environment and `.env`.

Every variable is documented in `.env.example` and in the README's configuration table; a test checks that the
three agree. Bad values fail at start-up with a message that names the variable.
"""

import re
from enum import StrEnum
from functools import lru_cache
from typing import Annotated

from pydantic import AliasChoices, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from letta_hayhooks.tenants import KeyPolicy


class SessionPolicy(StrEnum):
    """What a request without a session key talks to."""

    TRANSCRIPT = "transcript"  # each chat its own conversation, found from the transcript the client sends
    AGENT = "agent"  # the agent's default conversation (a personal agent's one thread)
    EPHEMERAL = "ephemeral"  # a throwaway conversation that replays the client's transcript


class ToolActivity(StrEnum):
    """How a stream shows the agent's own (server-side) tool calls; they are never client tool calls."""

    NONE = "none"  # not shown
    REASONING = "reasoning"  # one line per call/return in reasoning_content
    STATUS = "status"  # Open WebUI status events
    DELTA = "delta"  # a `letta_tool_activity` object on the chunk's delta (for clients that know it)


class ImageUrlPolicy(StrEnum):
    """Which `image_url` content parts may name a URL that Letta fetches itself."""

    PUBLIC = "public"  # https URLs whose host resolves only to public addresses (plus the allowed hosts)
    OFF = "off"  # only inline data: images


class LogFormat(StrEnum):
    """How the server log is written."""

    TEXT = "text"  # one readable line per record (coloured only on a terminal)
    JSON = "json"  # one JSON object per line: time, level, logger, message, request_id and the record's fields


class LogLevel(StrEnum):
    """The least severe log level written."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class Settings(BaseSettings):
    """Server configuration. Field aliases are the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    # --- Letta backend
    letta_base_url: str = Field("http://localhost:8283", alias="LETTA_BASE_URL")
    letta_api_key: str | None = Field(None, alias="LETTA_API_KEY", repr=False)
    letta_project: str | None = Field(None, alias="LETTA_PROJECT")
    letta_timeout: float = Field(300.0, alias="LETTA_HAYHOOKS_LETTA_TIMEOUT", gt=0)
    letta_connect_timeout: float = Field(5.0, alias="LETTA_HAYHOOKS_CONNECT_TIMEOUT", gt=0)

    # --- agent catalogue
    agent_tags: Annotated[list[str], NoDecode] = Field(default_factory=list, alias="LETTA_HAYHOOKS_AGENT_TAGS")
    agent_name_regex: str | None = Field(None, alias="LETTA_HAYHOOKS_AGENT_NAME_REGEX")
    hide_sleeptime_agents: bool = Field(True, alias="LETTA_HAYHOOKS_HIDE_SLEEPTIME")
    refresh_interval: float = Field(30.0, alias="LETTA_HAYHOOKS_REFRESH_INTERVAL", gt=0)

    # --- sessions and system prompts
    session_policy: SessionPolicy = Field(SessionPolicy.TRANSCRIPT, alias="LETTA_HAYHOOKS_SESSION_POLICY")
    overlay_enabled: bool = Field(True, alias="LETTA_HAYHOOKS_OVERLAY")
    max_system_prompt_bytes: int = Field(1_048_576, alias="LETTA_HAYHOOKS_MAX_SYSTEM_PROMPT_BYTES", gt=0)
    overlay_ttl_hours: float = Field(168.0, alias="LETTA_HAYHOOKS_OVERLAY_TTL_HOURS", gt=0)
    branch_ttl_hours: float = Field(0.0, alias="LETTA_HAYHOOKS_BRANCH_TTL_HOURS", ge=0)
    prompt_cache_seconds: float = Field(30.0, alias="LETTA_HAYHOOKS_PROMPT_CACHE_SECONDS", ge=0)
    sessions_route: bool = Field(False, alias="LETTA_HAYHOOKS_SESSIONS_ROUTE")

    # --- streaming and clients
    stream_tokens: bool = Field(True, alias="LETTA_HAYHOOKS_STREAM_TOKENS")
    think_tags: bool = Field(False, alias="LETTA_HAYHOOKS_THINK_TAGS")
    tool_activity: ToolActivity = Field(ToolActivity.NONE, alias="LETTA_HAYHOOKS_TOOL_ACTIVITY")

    # --- security
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="LETTA_HAYHOOKS_API_KEYS", repr=False
    )
    # per-key policies (agents, operator routes); see letta_hayhooks/tenants.py for the format
    api_keys_file: str | None = Field(None, alias="LETTA_HAYHOOKS_API_KEYS_FILE")
    max_body_bytes: int = Field(8 * 1_048_576, alias="LETTA_HAYHOOKS_MAX_BODY_BYTES", gt=0)
    max_messages: int = Field(5000, alias="LETTA_HAYHOOKS_MAX_MESSAGES", gt=0)
    max_new_user_messages: int = Field(64, alias="LETTA_HAYHOOKS_MAX_NEW_USER_MESSAGES", gt=0)
    max_content_parts: int = Field(256, alias="LETTA_HAYHOOKS_MAX_CONTENT_PARTS", gt=0)
    image_urls: ImageUrlPolicy = Field(ImageUrlPolicy.PUBLIC, alias="LETTA_HAYHOOKS_IMAGE_URLS")
    image_url_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="LETTA_HAYHOOKS_IMAGE_URL_ALLOWED_HOSTS"
    )

    # --- load management
    turn_timeout: float = Field(600.0, alias="LETTA_HAYHOOKS_TURN_TIMEOUT", gt=0)
    max_inflight: int = Field(128, alias="LETTA_HAYHOOKS_MAX_INFLIGHT", gt=0)
    max_inflight_per_agent: int = Field(32, alias="LETTA_HAYHOOKS_MAX_INFLIGHT_PER_AGENT", gt=0)
    session_queue_depth: int = Field(8, alias="LETTA_HAYHOOKS_SESSION_QUEUE_DEPTH", ge=0)
    session_queue_wait: float = Field(120.0, alias="LETTA_HAYHOOKS_SESSION_QUEUE_WAIT", ge=0)

    # --- shutdown and connections
    shutdown_grace: float = Field(30.0, alias="LETTA_HAYHOOKS_SHUTDOWN_GRACE", ge=0)
    header_timeout: float = Field(10.0, alias="LETTA_HAYHOOKS_HEADER_TIMEOUT", gt=0)
    keepalive_timeout: float = Field(5.0, alias="LETTA_HAYHOOKS_KEEPALIVE_TIMEOUT", gt=0)

    # --- observability (logs, metrics; traces are Hayhooks' HAYHOOKS_TRACING_ENABLED and OTEL_* variables)
    log_format: LogFormat = Field(LogFormat.TEXT, alias="LETTA_HAYHOOKS_LOG_FORMAT")
    log_level: LogLevel = Field(LogLevel.INFO, alias="LETTA_HAYHOOKS_LOG_LEVEL")
    metrics: bool = Field(True, alias="LETTA_HAYHOOKS_METRICS")
    metrics_public: bool = Field(False, alias="LETTA_HAYHOOKS_METRICS_PUBLIC")

    # --- debug
    debug_events: bool = Field(False, alias="LETTA_HAYHOOKS_DEBUG_EVENTS")
    debug_include_text: bool = Field(False, alias="LETTA_HAYHOOKS_DEBUG_INCLUDE_TEXT")
    debug_file: str | None = Field(None, alias="LETTA_HAYHOOKS_DEBUG_FILE")

    # --- local mode (used only when LETTA_BASE_URL is not set)
    data_dir: str | None = Field(None, alias="LETTA_HAYHOOKS_DATA_DIR")
    local_letta_port: int = Field(8283, alias="LETTA_HAYHOOKS_LOCAL_LETTA_PORT", gt=0, lt=65536)
    local_model: str | None = Field(None, alias="LETTA_HAYHOOKS_LOCAL_MODEL")
    letta_venv: str | None = Field(None, alias="LETTA_HAYHOOKS_LETTA_VENV")

    @field_validator("agent_tags", "api_keys", "image_url_allowed_hosts", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("api_keys_file")
    @classmethod
    def _check_key_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        # read now so a broken file (or a key given twice) stops the server at start-up, naming this variable
        if value:
            KeyPolicy.load(info.data.get("api_keys") or (), value)
        return value or None

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _case_insensitive(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            return value.upper() if info.field_name == "log_level" else value.lower()
        return value

    @field_validator("image_url_allowed_hosts")
    @classmethod
    def _normalise_hosts(cls, value: list[str]) -> list[str]:
        # compared with the URL's host name, which is matched lower-case and without a trailing dot
        return [host.lower().rstrip(".") for host in value]

    @field_validator("agent_name_regex")
    @classmethod
    def _compile_regex(cls, value: str | None) -> str | None:
        if value:
            try:
                re.compile(value)
            except re.error as exc:
                msg = f"not a valid regular expression: {exc}"
                raise ValueError(msg) from exc
        return value or None

    @field_validator("letta_base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            msg = "must start with http:// or https://"
            raise ValueError(msg)
        return value.rstrip("/")


class SettingsError(RuntimeError):
    """Raised when the environment holds a bad value; the message names the variable."""


def _describe(exc: ValidationError) -> str:
    problems = []
    aliases = {name: field.alias or name for name, field in Settings.model_fields.items()}
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "?"
        problems.append(f"{aliases.get(field, field)}: {err['msg']}")
    return "invalid configuration: " + "; ".join(problems)


def load_settings() -> Settings:
    """Read the settings now, turning validation errors into one readable `SettingsError`."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once."""
    return load_settings()


def env_var_names() -> list[str]:
    """Every environment variable the settings read, in declaration order."""
    names = [field.alias for field in Settings.model_fields.values() if field.alias]
    for field in Settings.model_fields.values():
        if isinstance(field.validation_alias, AliasChoices):
            names.extend(str(choice) for choice in field.validation_alias.choices)
    return names
