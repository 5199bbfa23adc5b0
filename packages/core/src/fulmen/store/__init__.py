"""Durable storage of episodes, transitions and rewards (SQLite by default)."""

from fulmen.store.base import EpisodeNotFound, Store, StoreError

__all__ = ["EpisodeNotFound", "SQLiteStore", "Store", "StoreError", "open_store"]


def __getattr__(name: str) -> object:
    if name in ("SQLiteStore", "open_store"):
        from fulmen.store import sqlite

        return getattr(sqlite, name)
    raise AttributeError(name)
