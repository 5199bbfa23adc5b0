"""Agent episodes in Ray actors on a local Ray cluster (CPU), reaching the gateway over HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fulmen.gateway.app import Gateway
from fulmen.protocol import Task
from fulmen.store import open_store
from fulmen.train import GreedySampling, RolloutSampling
from fulmen_testkit.vllm_double import VllmDouble
from fulmen_verl.episodes import EpisodeSpec, RayEpisodeRunner, RunnerSpec, run_episodes_ray

pytestmark = pytest.mark.slow  # starting Ray and two actors takes ~15-30 s on 2 cores

HERE = Path(__file__).resolve().parent


def test_ray_actors_run_whole_groups_through_the_gateway(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    double = VllmDouble()
    double.start_in_thread()
    store = open_store(tmp_path / "episodes.db")
    gateway = Gateway(store, double.url)
    gateway.start_in_thread()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        spec = RunnerSpec(
            agent="verl_recording:agent",
            reward="verl_recording:reward",
            base_dir=str(HERE),
            concurrency=4,
            timeout_s=60,
            max_attempts=1,
        )
        tasks = tuple(Task(id=f"t{i}", data={"question": f"q{i}", "turns": 2}) for i in range(3))
        episodes = EpisodeSpec(
            tasks=tasks,
            group_size=2,
            group_prefix="step1",
            metadata=RolloutSampling(temperature=1.0, seed=0, step_index=0),
        )
        results, actors = run_episodes_ray(gateway.url, spec, episodes, actors=2)
        ids = [r.episode.id for r in results]
        assert len(actors) == 2 and len(ids) == 6
        records = store.records(ids)
        assert {r.episode.group_id for r in records} == {"step1:t0", "step1:t1", "step1:t2"}
        assert all(r.episode.status == "succeeded" for r in records)
        assert all(len(r.transitions) == 2 and r.rewards for r in records)
        assert all(t.response_logprobs for r in records for t in r.transitions)
        # the actors are reused for the next step
        results2, again = run_episodes_ray(gateway.url, spec, episodes, actors=2, workers=actors)
        ids2 = [r.episode.id for r in results2]
        assert again == actors and len(ids2) == 6 and not set(ids) & set(ids2)
        assert all(r.ok and r.outcome is not None and r.output is None for r in results2)
        # the step driver's runner for [verl] ray_runners: greedy evaluation, no groups (in
        # actors of its own: free the two CPUs the first ones hold)
        for actor in actors:
            ray.kill(actor)
        runner = RayEpisodeRunner(gateway.url, spec, actors=2)
        evaluated = asyncio.run(
            runner.arun(None, tasks, description="eval", episode_metadata=GreedySampling(0))
        )
        assert len(evaluated) == 3 and all(r.ok and r.outcome is not None for r in evaluated)
        records = store.records([r.episode.id for r in evaluated])
        assert all(r.episode.group_id is None for r in records)
        assert all(r.episode.metadata["sampling"]["temperature"] == 0.0 for r in records)
    finally:
        ray.shutdown()
        gateway.stop_thread()
        double.stop_thread()
        store.close()
