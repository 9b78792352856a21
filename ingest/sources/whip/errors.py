"""Errors of the WHIP endpoint: each carries the HTTP status it is answered with."""

from __future__ import annotations

from ingest.errors import IngestError


class WhipError(IngestError):
    """A WHIP request refused: ``status`` and a machine-readable ``error`` name; the message is the reason."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason
