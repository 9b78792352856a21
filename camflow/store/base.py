"""What every store offers, whether a local directory or S3."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from camflow.errors import CamflowError
from camflow.keys import is_safe_key


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: float


class Store(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write the whole object; readers see the old object or the new one, never a part."""
        ...

    async def get(self, key: str) -> bytes:
        """The whole object; raises camflow.errors.NotFound when there is none."""
        ...

    async def head(self, key: str) -> ObjectInfo | None: ...

    async def list(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, sorted."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; removing a missing one is not an error."""
        ...


@runtime_checkable
class Browsable(Protocol):
    """A store that names the sub-folders of a folder without listing every key below them
    (a directory read; an S3 listing with a ``/`` delimiter)."""

    async def children(self, prefix: str) -> list[str]:
        """The names of the folders directly under ``prefix`` (which ends with ``/``), sorted."""
        ...


class UnsafeKey(CamflowError):
    """A key that could reach outside the store's namespace."""


def check_key(key: str) -> str:
    if not is_safe_key(key):
        raise UnsafeKey(f"store key {key!r} is not a relative path of A-Z a-z 0-9 . _ - / without '..'")
    return key
