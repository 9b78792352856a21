"""Errors of the packager."""

from camflow.errors import CamflowError


class PackagerError(CamflowError):
    """Root of every error raised by the packager."""
