"""A ready test stack: the vLLM test double, an SQLite store and a gateway in front of it."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fulmen.gateway.app import Gateway
from fulmen.store.sqlite import SQLiteStore, open_store

from fulmen_testkit.vllm_double.server import VllmDouble

__all__ = ["Stack", "running_stack"]


@dataclass(frozen=True, slots=True)
class Stack:
    """A running double + store + gateway."""

    double: VllmDouble
    """The upstream (a test double of vLLM's wire format)."""
    store: SQLiteStore
    """The store the gateway records into."""
    gateway: Gateway
    """The gateway."""

    @property
    def url(self) -> str:
        """The gateway's base URL."""
        return self.gateway.url

    def base_url(self, episode_id: str) -> str:
        """The OpenAI base URL for an episode's agent: ``{gateway}/rollout/{id}/v1``."""
        return f"{self.gateway.url}/rollout/{episode_id}/v1"


@asynccontextmanager
async def running_stack(
    store_path: str | os.PathLike[str],
    *,
    double: VllmDouble | None = None,
    **gateway_options: Any,
) -> AsyncGenerator[Stack, None]:
    """Start a double (or use ``double``), open the store at ``store_path`` and start a gateway
    with ``gateway_options``; everything is stopped and closed on exit. Needs a running loop."""
    upstream = double or VllmDouble()
    await upstream.start()
    store = open_store(store_path)
    gateway = Gateway(store, upstream.url, **gateway_options)
    try:
        await gateway.start()
        yield Stack(double=upstream, store=store, gateway=gateway)
    finally:
        await gateway.stop()
        await upstream.stop()
        store.close()
