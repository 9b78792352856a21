"""FileStore: the embedded default, a directory on local disk.

Writes go to a temporary file in the same directory and are renamed into place, so a
reader (or a crash) never sees half an object.
"""

from __future__ import annotations

import asyncio
import os
import stat
import tempfile
from pathlib import Path

from camflow.errors import NotFound
from camflow.keys import is_safe_key
from camflow.store.base import ObjectInfo, check_key


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        return None

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix="." + path.name)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        await asyncio.to_thread(self._put, key, data)

    def _get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise NotFound(f"no object at key {key!r}") from exc

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._get, key)

    def _head(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(
            key=key, size=st.st_size, etag=f"{st.st_size:x}-{st.st_mtime_ns:x}", last_modified=st.st_mtime
        )

    async def head(self, key: str) -> ObjectInfo | None:
        return await asyncio.to_thread(self._head, key)

    def _children(self, prefix: str) -> list[str]:
        if prefix and not is_safe_key(prefix.rstrip("/")):
            check_key(prefix)
        try:
            with os.scandir(self.root / prefix) as entries:
                return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith(".tmp-"))
        except (FileNotFoundError, NotADirectoryError):
            return []

    async def children(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._children, prefix)

    def _list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        if prefix and not is_safe_key(prefix.rstrip("/")):
            check_key(prefix)
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return keys
        for dirpath, _, files in os.walk(base):
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), self.root).replace(os.sep, "/")
                if rel.startswith(prefix):
                    keys.append(rel)
        return sorted(keys)

    async def list(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._list, prefix)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, True)
