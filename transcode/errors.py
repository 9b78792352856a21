"""Errors raised by the transcoder."""


class TranscodeError(Exception):
    """Root of every error the transcoder raises on a segment it cannot turn into renditions."""


class BadSegment(TranscodeError):
    """A raw segment whose bytes are not a playable fMP4 (corrupt input)."""
