"""structlog, configured once: one JSON object per line on stderr, bound with ``stream_id``."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_configured = False


def configure_logging(level: str = "info") -> None:
    global _configured
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the standard library (kafka, aiohttp) are kept at WARNING.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    _configured = True


def get_logger(component: str, **bound: Any) -> Any:
    """A logger bound with the component name (and any other fields, e.g. ``stream_id``).

    Lazy: a module-level logger made at import takes the level and renderer that
    ``configure_logging`` sets later (binding at import would freeze structlog's defaults)."""
    return structlog.get_logger(component=component, **bound)
