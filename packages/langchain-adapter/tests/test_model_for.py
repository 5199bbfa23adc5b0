"""``LangChainAdapter.model_for``: a ``ChatOpenAI`` at the episode with training defaults."""

from __future__ import annotations

from typing import Any

import pytest
from fulmen import EpisodeContext
from fulmen.adapters import MODEL_TIMEOUT_S, AdapterError
from fulmen_langchain import LangChainAdapter
from pydantic import SecretStr

CTX = EpisodeContext(episode_id="ep-1", gateway_url="http://127.0.0.1:9", auth_token="tok")


def test_defaults_for_training() -> None:
    model = LangChainAdapter.model_for(CTX, temperature=0.5)
    assert model.model_name == "policy" and model.temperature == 0.5
    assert model.openai_api_base == CTX.base_url
    key = model.openai_api_key
    assert isinstance(key, SecretStr) and key.get_secret_value() == "tok"
    assert model.use_responses_api is False
    assert model.include_response_headers is True
    assert (model.max_retries, model.request_timeout) == (0, MODEL_TIMEOUT_S)


def test_retries_and_timeout_are_the_caller_s_to_change() -> None:
    model = LangChainAdapter.model_for(CTX, "other", max_retries=2, timeout=5.0)
    assert (model.model_name, model.max_retries, model.request_timeout) == ("other", 2, 5.0)
    assert LangChainAdapter.model_for(CTX, request_timeout=7.0).request_timeout == 7.0


@pytest.mark.parametrize("owned", ["base_url", "api_key", "use_responses_api"])
def test_the_episode_settings_are_refused(owned: str) -> None:
    kwargs: dict[str, Any] = {owned: True}
    with pytest.raises(AdapterError, match=owned):
        LangChainAdapter.model_for(CTX, **kwargs)
