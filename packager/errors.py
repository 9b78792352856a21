"""Errors of the packager."""

from camflow.errors import CamflowError


class PackagerError(CamflowError):
    """Root of every error raised by the packager."""


class PlaylistError(PackagerError):
    """A playlist entry or variant that cannot be written as asked (e.g. a non-positive duration)."""
