"""structlog set-up: JSON lines on stderr for journald, a readable console on a TTY.

Logs go to stderr only; measurements go to NDJSON files (or stdout for ``measure``),
so the two streams never mix.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import orjson
import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class StderrLogger:
    """Writes each rendered line to the stream current at call time (``sys.stderr`` by
    default), never to one captured at start-up, and never raises: a closed or broken
    stderr loses a log line, not a measurement."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def msg(self, message: str | bytes) -> None:
        stream = self._stream or sys.stderr
        try:
            if isinstance(message, bytes):
                stream.buffer.write(message + b"\n")
            else:
                stream.write(message + "\n")
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def configure_logging(
    level: str = "info", *, stream: TextIO | None = None, json: bool | None = None
) -> None:
    """Configure structlog once, at start-up, from the CLI."""
    out = stream or sys.stderr
    as_json = not out.isatty() if json is None else json
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if as_json:
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    logger = StderrLogger(stream)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=lambda *_: logger,
        cache_logger_on_first_use=False,
    )
