"""``OpenAIClientAdapter.model_for``: the episode's own openai client, sync or async."""

from __future__ import annotations

from typing import Any

import pytest
from fulmen import EpisodeContext
from fulmen.adapters import MODEL_TIMEOUT_S, AdapterError
from fulmen_openai import OpenAIClientAdapter
from openai import AsyncOpenAI, OpenAI

CTX = EpisodeContext(episode_id="ep-1", gateway_url="http://127.0.0.1:9", auth_token="tok")


def test_sync_and_async_clients_with_training_defaults() -> None:
    client = OpenAIClientAdapter.model_for(CTX)
    assert isinstance(client, OpenAI)
    assert str(client.base_url) == f"{CTX.base_url}/" and client.api_key == "tok"
    assert (client.max_retries, client.timeout) == (0, MODEL_TIMEOUT_S)
    async_client = OpenAIClientAdapter.model_for(CTX, use_async=True, max_retries=3, timeout=9.0)
    assert isinstance(async_client, AsyncOpenAI)
    assert str(async_client.base_url) == f"{CTX.base_url}/"
    assert (async_client.max_retries, async_client.timeout) == (3, 9.0)


@pytest.mark.parametrize("owned", ["base_url", "api_key"])
def test_the_episode_route_and_key_are_not_the_caller_s(owned: str) -> None:
    kwargs: dict[str, Any] = {owned: "elsewhere"}
    with pytest.raises(AdapterError, match=owned):
        OpenAIClientAdapter.model_for(CTX, **kwargs)
