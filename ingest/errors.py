"""Errors raised by ingest: one root, so callers can catch everything ingest refuses."""


class IngestError(Exception):
    """Root of every error ingest raises on bad input."""


class ParseError(IngestError):
    """Bytes from a peer that do not parse: the message names the value and the expected form."""
