"""Errors of the shared contracts (events, bus, store, tokens, config)."""


class CamflowError(Exception):
    """Root of every error raised by camflow's shared contracts."""


class EventDecodeError(CamflowError):
    """Bytes on the bus that are not an event this reader understands."""


class EventVersionError(EventDecodeError):
    """A well-formed event header naming a type or major version this reader does not take
    (a newer major, a type a newer release added): the reader is older than the writer."""


class JsonFormError(CamflowError, ValueError):
    """A JSON value that is not of the form its field's type asks for (``camflow.jsonform``)."""


class NotFound(CamflowError):
    """A store key that does not exist."""


class StoreUnavailable(CamflowError):
    """The store could not be reached or answered that it cannot serve now (5xx, slow down, timeout):
    the same call may succeed later. Not the same as a key that does not exist (``NotFound``) or a
    request the store refuses (bad credentials, a bad key), which a retry does not change."""


class StoreRetryStopped(CamflowError):
    """The service stopped while a store call was waiting for the store to come back: it did not land."""


class BusRetryStopped(CamflowError):
    """The service stopped while a publish was being repeated until the bus acknowledged it
    (``camflow.bus.retry``): it was not acknowledged, and what caused it is not committed."""


class TokenError(CamflowError):
    """A token that is malformed, forged, expired, or scoped to another stream or action."""


class ConfigError(CamflowError):
    """A setting with a value outside its expected form."""


class MediaFormatError(CamflowError):
    """Bytes that are not the ISO BMFF / fMP4 structure the segment contract promises."""
