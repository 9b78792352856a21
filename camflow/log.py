"""structlog, configured once, on stderr, bound with ``stream_id``.

For people on a terminal (stderr is a TTY): structlog's console renderer, one aligned, coloured
line per event. Everywhere else (a pipe, a file, a container's log collector): one JSON object
per line. ``--log-format json|console`` (env ``CAMFLOW_LOG_FORMAT``) forces either.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from camflow.errors import ConfigError

AUTO, CONSOLE, JSON = "auto", "console", "json"
LOG_FORMATS = (AUTO, CONSOLE, JSON)


def renders_for_people(log_format: str, stream: TextIO) -> bool:
    """Whether ``log_format`` on ``stream`` means the console renderer (``auto``: on a TTY)."""
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"log format {log_format!r}: expected one of {', '.join(LOG_FORMATS)}")
    if log_format == AUTO:
        return bool(getattr(stream, "isatty", lambda: False)())
    return log_format == CONSOLE


def configure_logging(level: str = "info", log_format: str = AUTO) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    processors: list[Any] = [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level]
    if renders_for_people(log_format, sys.stderr):
        # The console renderer formats exceptions itself (format_exc_info would flatten them first).
        processors += [
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
        ]
    else:
        processors += [
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # sys.stderr as it is when a line is written, not when configured (a test may swap it)
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the standard library (kafka, aiohttp) are kept at WARNING.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")


def get_logger(component: str, **bound: Any) -> Any:
    """A logger bound with the component name (and any other fields, e.g. ``stream_id``).

    Lazy: a module-level logger made at import takes the level and renderer that
    ``configure_logging`` sets later (binding at import would freeze structlog's defaults)."""
    return structlog.get_logger(component=component, **bound)
