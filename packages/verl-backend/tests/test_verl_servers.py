"""verl's vLLM replicas behind one gateway: the least-busy replica pool, with test doubles."""

from __future__ import annotations

import json
import urllib.request

import pytest
from fulmen_testkit.vllm_double import VllmDouble
from fulmen_verl.servers import ReplicaPool, replica_urls, upstream_for


def test_replica_urls_and_single_replica_needs_no_pool() -> None:
    assert replica_urls(["10.0.0.1:8000", "[::1]:9"]) == ["http://10.0.0.1:8000", "http://[::1]:9"]
    assert upstream_for(["10.0.0.1:8000"]) == ("http://10.0.0.1:8000", None)
    with pytest.raises(ValueError, match="no vLLM replica"):
        replica_urls([])


def test_pool_spreads_requests_and_forwards_token_ids() -> None:
    doubles = [VllmDouble(), VllmDouble()]
    for d in doubles:
        d.start_in_thread()
    url, pool = upstream_for([d.url.removeprefix("http://") for d in doubles])
    assert pool is not None
    try:
        body = {
            "model": "tiny",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 3,
            "return_token_ids": True,
            "logprobs": True,
        }
        for _ in range(4):
            request = urllib.request.Request(
                f"{url}/v1/chat/completions",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = json.loads(response.read())
            assert answer["choices"][0]["token_ids"]
            assert answer["choices"][0]["logprobs"]["content"]
        assert [len(d.received) for d in doubles] == [2, 2]  # idle replicas take turns
    finally:
        pool.stop_thread()
        for d in doubles:
            d.stop_thread()


def test_pool_requires_replicas() -> None:
    with pytest.raises(ValueError, match="no replica"):
        ReplicaPool([])
