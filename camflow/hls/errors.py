"""Errors of the HLS contract."""

from camflow.errors import CamflowError


class PlaylistError(CamflowError):
    """A playlist that cannot be written as asked, or text that is not a playlist camflow wrote."""


class DateTimeError(PlaylistError, ValueError):
    """A date-time that is not ISO 8601 with a zone (e.g. ``2026-11-21T10:15:00.123Z``)."""
