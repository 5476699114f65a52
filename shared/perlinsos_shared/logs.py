"""Structured JSON logs, one line per event, with the active trace and span ids.

Personal data never goes into a log line: pass masked or pseudonymous values only. As a
second line of defence the formatter masks NIK-shaped and phone-shaped digit runs in the
message, the extra fields and exception text, and renders pydantic validation errors
without the input values they would otherwise quote.

Every library logger (FastStream's included, which otherwise prints its own coloured
lines) goes through the same formatter on stderr.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from opentelemetry import trace
from pydantic import ValidationError

from perlinsos_shared.scrubbing import scrub, scrub_value

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _validation_text(exc: ValidationError) -> str:
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or '$'}: {e['msg']}"
        for e in exc.errors(include_input=False, include_url=False)[:10]
    ]
    return f"{exc.error_count()} validation error(s) for {exc.title}: " + "; ".join(parts)


def format_exception(exc: BaseException) -> str:
    """A traceback whose messages are masked and never quote a validation error's input."""
    lines: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    chain: list[BaseException] = []
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    for i, e in enumerate(reversed(chain)):
        if i:
            lines.append("\nDuring handling of the above exception, another was raised:\n")
        if e.__traceback__ is not None:
            lines.append("Traceback (most recent call last):\n")
            lines.extend(traceback.format_tb(e.__traceback__))
        message = _validation_text(e) if isinstance(e, ValidationError) else str(e)
        lines.append(f"{type(e).__module__}.{type(e).__qualname__}: {scrub(message)}")
    return "".join(lines)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            out["trace_id"] = format(ctx.trace_id, "032x")
            out["span_id"] = format(ctx.span_id, "016x")
        for key, value in record.__dict__.items():
            if key in out or key in _STANDARD or key.startswith("_") or value in ("", None):
                continue
            out[key] = scrub_value(value if _is_plain(value) else str(value))
        if record.exc_info and record.exc_info[1] is not None:
            out["exception"] = format_exception(record.exc_info[1])
        return json.dumps(out, default=str)


def _is_plain(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | list | tuple)


# httpx logs every request at info: a line per SMS handed over, and the provider's URLs
LIBRARY_LOGGERS = ("aiokafka", "kafka", "faststream", "asyncio", "httpx", "httpcore")


def setup_logging(service: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(f"perlinsos-{service}"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    route_library_logger("faststream")


def route_library_logger(name: str) -> logging.Logger:
    """Make a library logger (and the ones it already made below it) write through root."""
    for logger_name in [name, *_children(name)]:
        logger = logging.getLogger(logger_name)
        logger.handlers.clear()
        logger.propagate = True
    return logging.getLogger(name)


def _children(name: str) -> list[str]:
    prefix = name + "."
    return [n for n in logging.Logger.manager.loggerDict if n.startswith(prefix)]
