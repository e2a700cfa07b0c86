"""
The server's one logging setup, applied by the entry points (`letta-hayhooks serve`, the ASGI factory, the pipelines
folder under `hayhooks run`).

Hayhooks logs through loguru and routes a few stdlib loggers (uvicorn's, FastAPI's) into it; Haystack and this
project's components log through the stdlib (`haystack.logging.getLogger`), which nothing routed, so their INFO lines
were lost. Here every one of them goes to one loguru sink on stderr:

- `text`: one readable line per record, its structured fields after it; ANSI colours only when stderr is a terminal
  (Hayhooks' own sink colours everything);
- `json`: one JSON object per line: `time`, `level`, `logger`, `message`, `request_id` and the record's fields.

Exceptions are shown with their type and frames, not their message, and tracebacks never show variable values
(loguru's `diagnose`): both can hold message text. `LETTA_HAYHOOKS_DEBUG_INCLUDE_TEXT` shows them.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from loguru import logger as log

from letta_hayhooks.errors import describe_exception
from letta_hayhooks.settings import LogFormat, Settings

# stdlib loggers whose records go to the server log: Haystack's, this project's and the web server's
ROUTED_LOGGERS = ("haystack", "haystack_integrations", "letta_hayhooks", "components", "pipelines", "uvicorn",
                  "uvicorn.error", "uvicorn.access", "fastapi")
# libraries that log every HTTP request (with URLs) at INFO: only their warnings
QUIET_LOGGERS = ("httpx", "httpcore", "letta_client", "openai", "hpack")
# Haystack logs "Warming up component ..." and "Running component ..." at INFO, a dozen lines per turn: its INFO
# lines only at the DEBUG level
CHATTY_LOGGERS = ("haystack", "haystack_integrations")
# uvicorn's access records of these paths are left out (Hayhooks' trace dashboard polls /traces)
_EXCLUDED_ACCESS_PREFIXES = ("/traces",)
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "color_message", "taskName",
}
# loguru extra keys that are not a record's own fields
_INTERNAL = frozenset({"request_id", "logger", "_fields", "_exception"})

_state: dict[str, Any] = {"handler": None}


class ToLoguru(logging.Handler):
    """A stdlib handler that hands records to loguru with their structured fields (Haystack's keyword arguments)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) > 2 \
                and str(record.args[2]).startswith(_EXCLUDED_ACCESS_PREFIXES):
            return
        try:
            level: str | int = log.level(record.levelname).name
        except ValueError:
            level = record.levelno
        fields = {key: value for key, value in vars(record).items()
                  if key not in _RECORD_ATTRIBUTES and not key.startswith("_")}
        log.opt(exception=record.exc_info).bind(logger=record.name, **fields).log(level, record.getMessage())


def _fields(extra: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in extra.items() if key not in _INTERNAL}


def _render_exception(exception: Any, include_text: bool) -> str:
    """Type and frames of a logged exception; its message only with debug text on."""
    if exception is None or exception.type is None:
        return ""
    frames = traceback.extract_tb(exception.traceback)
    lines = ["Traceback (most recent call last):"]
    lines += [f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}' for frame in frames]
    value = exception.value
    lines.append(f"{exception.type.__name__}: {value}" if include_text or value is None else describe_exception(value))
    return "\n".join(lines)


def _text_format(include_text: bool) -> Callable[[dict[str, Any]], str]:
    def render(record: dict[str, Any]) -> str:
        extra = record["extra"]
        # values go in through extra: text put into the format string itself would be read as colour markup
        fields = _fields(extra)
        extra["_fields"] = (" | " + ", ".join(f"{key}={value!r}" for key, value in fields.items())) if fields else ""
        extra["_exception"] = ("\n" + _render_exception(record["exception"], include_text)) \
            if record["exception"] else ""
        request = " | {extra[request_id]}" if extra.get("request_id") else ""
        return ("<dim>{time:YYYY-MM-DD HH:mm:ss.SSS}</dim> | <level>{level: <8}</level>" + request
                + " | {message}<dim>{extra[_fields]}</dim>{extra[_exception]}\n")

    return render


class JsonSink:
    """One JSON object per record and line."""

    def __init__(self, stream: TextIO, include_text: bool) -> None:
        self.stream = stream
        self.include_text = include_text

    def write(self, message: Any) -> None:
        record = message.record
        extra = record["extra"]
        entry: dict[str, Any] = {
            "time": record["time"].astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record["level"].name,
            "logger": extra.get("logger") or record["name"],
            "message": record["message"],
            "request_id": extra.get("request_id"),
        }
        for key, value in _fields(extra).items():
            entry.setdefault(key, value)
        if record["exception"]:
            entry["exception"] = _render_exception(record["exception"], self.include_text)
        self.stream.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
        self.stream.flush()


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """
    Send every log of the server to one sink in the configured format and level (again: replaces the last setup).

    Hayhooks' own stderr sink is removed; sinks added later (the debug event file) are left alone.
    """
    stream = stream or sys.stderr
    include_text = settings.debug_include_text
    if _state["handler"] is not None:
        log.remove(_state["handler"])
    else:
        log.remove()  # Hayhooks' sink, added when it was imported
    level = settings.log_level.value
    if settings.log_format is LogFormat.JSON:
        sink = JsonSink(stream, include_text)
        _state["handler"] = log.add(sink.write, level=level, format="{message}", backtrace=False, diagnose=False)
    else:
        colour = bool(getattr(stream, "isatty", lambda: False)())
        _state["handler"] = log.add(stream, level=level, format=_text_format(include_text), colorize=colour,
                                    backtrace=False, diagnose=False)
    route_stdlib_logging(settings)


def is_configured() -> bool:
    """True once an entry point has called `configure_logging` in this process."""
    return _state["handler"] is not None


def route_stdlib_logging(settings: Settings) -> None:
    """Route the stdlib loggers of `ROUTED_LOGGERS` (Haystack's, ours, uvicorn's) into loguru, at the set level."""
    handler = ToLoguru()
    level = logging.getLevelName(settings.log_level.value)
    for name in ROUTED_LOGGERS:
        stdlib = logging.getLogger(name)
        stdlib.handlers = [handler]
        stdlib.propagate = False
        # records below the level are not even built (Haystack and uvicorn log per request at DEBUG)
        stdlib.setLevel(level if name not in CHATTY_LOGGERS or level <= logging.DEBUG else max(level, logging.WARNING))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


def timestamped(message: str) -> str:
    """A start-up progress line for a log that is not a terminal."""
    return f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S')} | {message}"
