"""The store: objects under deterministic keys (segments, init sections, playlists)."""

from camflow.store.base import ObjectInfo, Store
from camflow.store.file import FileStore

__all__ = ["FileStore", "ObjectInfo", "Store"]
