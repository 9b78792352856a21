"""What every store offers, whether a local directory or S3."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

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


T = TypeVar("T")


class StoreWrapper:
    """A Store in front of another: every call goes through ``_call(op, call)`` (timing it, retrying
    it...), ``start`` and ``close`` straight to the wrapped store.

    Anything else the wrapped store offers (S3 lifecycle rules, folder listings) is reached through
    it, its coroutine methods through ``_call`` under their own name, so ``isinstance`` checks of
    optional store protocols see what the wrapped store has.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    async def _call(self, op: str, call: Callable[[], Awaitable[T]]) -> T:
        return await call()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            return await self._call(name, lambda: attr(*args, **kwargs))

        return wrapped

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        await self._call("put", lambda: self.inner.put(key, data, content_type))

    async def get(self, key: str) -> bytes:
        return await self._call("get", lambda: self.inner.get(key))

    async def head(self, key: str) -> ObjectInfo | None:
        return await self._call("head", lambda: self.inner.head(key))

    async def list(self, prefix: str) -> list[str]:
        return await self._call("list", lambda: self.inner.list(prefix))

    async def delete(self, key: str) -> None:
        await self._call("delete", lambda: self.inner.delete(key))


class UnsafeKey(CamflowError):
    """A key that could reach outside the store's namespace."""


def check_key(key: str) -> str:
    if not is_safe_key(key):
        raise UnsafeKey(f"store key {key!r} is not a relative path of A-Z a-z 0-9 . _ - / without '..'")
    return key
