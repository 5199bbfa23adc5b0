"""One global openai client shared by every episode, on a gateway with an admin token: each
episode's calls carry that episode's own capability (its HMAC token), never the admin token the
global client was built with.

Real pieces on loopback: the vLLM wire-format double, a gateway with ``auth_token`` (the admin
token), the runner giving each agent its episode token, a plain openai client and the Agents
SDK with one shared ``AsyncOpenAI``. A recording HTTP proxy in front of the gateway keeps the
``Authorization`` header of every request the gateway received.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _oa_samples import MAX_TURNS, asolve_with_client, sdk_agents, solve_with_client
from agents import OpenAIChatCompletionsModel, RunConfig
from agents import Runner as SDKRunner
from aiohttp import ClientSession, ClientTimeout, web
from fulmen import EpisodeContext, Task
from fulmen.gateway import Gateway
from fulmen.gateway.authority import episode_token
from fulmen.gateway.loop_thread import LoopThread
from fulmen.protocol import EpisodeStatus
from fulmen.runner import AgentFn, Runner
from fulmen.store import open_store
from fulmen_openai import AgentsSDKAdapter, OpenAIClientAdapter
from fulmen_testkit import MODEL, kit_task
from fulmen_testkit.vllm_double import VllmDouble
from openai import AsyncOpenAI, OpenAI

ADMIN = "admin-secret-token"
_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


@dataclass
class RecordingProxy:
    """Forwards every request to ``target`` and records ``(path, Authorization)``."""

    target: str
    seen: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    """``(path, X-Episode-Id, Authorization)`` of each request, in arrival order."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(
            (
                request.path,
                request.headers.get("X-Episode-Id"),
                request.headers.get("Authorization"),
            )
        )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with (
            ClientSession(timeout=ClientTimeout(total=30), auto_decompress=False) as http,
            http.request(
                request.method,
                self.target + request.path_qs,
                data=await request.read(),
                headers=headers,
            ) as upstream,
        ):
            body = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            return web.Response(body=body, status=upstream.status, headers=out)


@dataclass
class AuthStack:
    gateway: Gateway
    proxy: RecordingProxy
    proxy_url: str

    def run(self, agent: AgentFn, count: int) -> list[str]:
        """Run ``count`` episodes concurrently; returns their ids (every one must succeed)."""
        runner = Runner(
            self.gateway, concurrency=count, timeout_s=60, max_attempts=1, auth_token=ADMIN
        )
        results = runner.run(agent, [kit_task(i) for i in range(count)])
        for r in results:
            assert r.episode.status is EpisodeStatus.SUCCEEDED, r.episode.error
        return [r.episode.id for r in results]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[AuthStack]:
    double = VllmDouble(model=MODEL)
    store = open_store(tmp_path / "s.db")
    gateway = Gateway(store, double.start_in_thread(), auth_token=ADMIN)
    gateway.start_in_thread()
    proxy = RecordingProxy(gateway.url)
    loop = LoopThread("recording-proxy")
    loop.start()

    async def serve() -> tuple[web.AppRunner, str]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", proxy.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"

    app_runner, url = loop.run(serve(), timeout=30)
    try:
        yield AuthStack(gateway, proxy, url)
    finally:
        loop.run(app_runner.cleanup(), timeout=30)
        loop.stop()
        gateway.stop_thread()
        double.stop_thread()
        store.close()


def _check_only_episode_tokens(stack: AuthStack, episodes: list[str], calls_each: int) -> None:
    calls = [s for s in stack.proxy.seen if s[0].endswith("/chat/completions")]
    assert len(calls) == calls_each * len(episodes)
    assert {episode for _, episode, _ in calls} == set(episodes)
    for _, episode, authorization in calls:
        assert episode is not None
        assert authorization == f"Bearer {episode_token(ADMIN, episode)}", authorization
    assert all(ADMIN not in (auth or "") for _, _, auth in stack.proxy.seen)


@pytest.mark.parametrize("use_async", [False, True])
def test_global_openai_client_carries_only_the_episodes_token(
    stack: AuthStack, use_async: bool
) -> None:
    shared = OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=ADMIN, max_retries=0)
    shared_async = AsyncOpenAI(base_url=f"{stack.proxy_url}/v1", api_key=ADMIN, max_retries=0)

    def sync_agent(task: Task, ctx: EpisodeContext) -> str | None:
        return solve_with_client(task, shared)

    async def async_agent(task: Task, ctx: EpisodeContext) -> str | None:
        return await asolve_with_client(task, shared_async)

    with OpenAIClientAdapter() as adapter:
        episodes = stack.run(async_agent if use_async else sync_agent, 6)
    assert adapter.unattributed == 0 and adapter.failures == 0
    _check_only_episode_tokens(stack, episodes, calls_each=2)
    for episode in episodes:  # recorded and annotated under the right episode
        transitions = stack.gateway.store.transitions(episode)
        assert [t.metadata.get("framework") for t in transitions] == ["openai", "openai"]


def test_agents_sdk_with_a_global_client_carries_only_the_episodes_token(stack: AuthStack) -> None:
    shared = AsyncOpenAI(base_url=f"{stack.proxy_url}/v1", api_key=ADMIN, max_retries=0)
    config = RunConfig(model=OpenAIChatCompletionsModel(model=MODEL, openai_client=shared))

    async def agent(task: Task, ctx: EpisodeContext) -> str:
        result = await SDKRunner.run(
            sdk_agents(task), str(task.data["question"]), run_config=config, max_turns=MAX_TURNS
        )
        return str(result.final_output)

    with AgentsSDKAdapter() as adapter:
        episodes = stack.run(agent, 4)
    assert adapter.failures == 0
    calls = [s for s in stack.proxy.seen if s[0].endswith("/chat/completions")]
    assert len(calls) >= 2 * len(episodes)
    _check_only_episode_tokens(stack, episodes, calls_each=len(calls) // len(episodes))
