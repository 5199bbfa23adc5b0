"""The reward API: inside/outside episodes, async tasks, threads."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import fulmen
import pytest
from fulmen.context import EpisodeContext, NoEpisodeError, episode_scope
from fulmen.protocol import Reward


def make_ctx(episode_id: str, sink: list[Reward]) -> EpisodeContext:
    return EpisodeContext(episode_id=episode_id, gateway_url="http://127.0.0.1:1", sink=sink.append)


def test_reward_outside_an_episode_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FULMEN_EPISODE_URL", raising=False)
    with pytest.raises(NoEpisodeError, match="outside an episode"):
        fulmen.reward(1.0)


def test_reward_inside_scope_sync_and_async() -> None:
    got: list[Reward] = []
    with episode_scope(make_ctx("ep-a", got)):
        fulmen.reward(0.5, name="format", step=2)

        async def inner() -> None:
            await asyncio.sleep(0)
            fulmen.reward(1.0)

        asyncio.run(inner())
    assert [(r.episode_id, r.value, r.name, r.step) for r in got] == [
        ("ep-a", 0.5, "format", 2),
        ("ep-a", 1.0, None, None),
    ]


def test_concurrent_async_episodes_do_not_mix() -> None:
    got: list[Reward] = []

    async def episode(i: int) -> None:
        with episode_scope(make_ctx(f"ep-{i}", got)):
            for _ in range(3):
                await asyncio.sleep(0.001 * (i % 3))
                fulmen.reward(float(i))

    async def main() -> None:
        await asyncio.gather(*(episode(i) for i in range(20)))

    asyncio.run(main())
    assert len(got) == 60
    assert all(r.episode_id == f"ep-{int(r.value)}" for r in got)


def test_plain_thread_uses_the_single_running_episode() -> None:
    got: list[Reward] = []
    with episode_scope(make_ctx("ep-only", got)):
        t = threading.Thread(target=lambda: fulmen.reward(2.0))
        t.start()
        t.join()
    assert [r.episode_id for r in got] == ["ep-only"]


def test_plain_thread_with_several_episodes_is_an_error_not_a_guess() -> None:
    got: list[Reward] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            fulmen.reward(1.0)
        except NoEpisodeError as exc:
            errors.append(exc)

    with episode_scope(make_ctx("ep-1", got)):
        other = make_ctx("ep-2", got)
        # enter the second scope in a copied context so both are "running" in this process
        ctx = contextvars.copy_context()
        entered = threading.Event()
        release = threading.Event()

        def hold() -> None:
            with episode_scope(other):
                entered.set()
                release.wait(5)

        holder = threading.Thread(target=ctx.run, args=(hold,))
        holder.start()
        entered.wait(5)
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        # a thread that copies the context keeps its episode
        copied = threading.Thread(target=contextvars.copy_context().run, args=(lambda: fulmen.reward(3.0),))
        copied.start()
        copied.join()
        release.set()
        holder.join()
    assert errors and "did not inherit" in str(errors[0])
    assert [(r.episode_id, r.value) for r in got] == [("ep-1", 3.0)]


def test_episode_url_env_and_from_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FULMEN_EPISODE_URL", "http://127.0.0.1:9/rollout/ep-x")
    ctx = fulmen.current_episode()
    assert ctx.episode_id == "ep-x"
    assert ctx.base_url == "http://127.0.0.1:9/rollout/ep-x/v1"
    with pytest.raises(ValueError, match="not an episode URL"):
        EpisodeContext.from_url("http://127.0.0.1:9/v1")


def test_unreachable_gateway_is_a_reward_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # port 9 (discard) is closed on loopback: the POST must fail fast with a clear error
    monkeypatch.setenv("FULMEN_EPISODE_URL", "http://127.0.0.1:9/rollout/ep-x")
    with pytest.raises(fulmen.RewardError, match="could not reach the gateway"):
        fulmen.reward(1.0)
