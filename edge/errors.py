"""Errors raised by the edge: one root, so callers can catch everything the edge refuses."""


class EdgeError(Exception):
    """Root of every error the edge raises on bad input."""


class BadPath(EdgeError):
    """A request path that is not one of the edge's object paths: the message names it and the form."""


class RangeNotSatisfiable(EdgeError):
    """A Range that starts at or beyond the end of the object."""
