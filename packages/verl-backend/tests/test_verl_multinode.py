"""Multi-node, simulated on this machine: a Ray head node (``ray start --head``, no custom
resource, like a CPU-only head) and a second raylet (``ray start --address``) offering
``worker_node``. ``[verl] ray_runners`` actors pinned to the second node by
``ray_runner_resources`` get the agent code and fulmen through Ray's runtime env (not from
the driver's paths), reach the gateway through its advertised address (the gateway listens on
``0.0.0.0``), and their episodes land in the trainer's store.

The vLLM test double stands in for verl's vLLM replica (no GPU here). Ray's processes are
started by this test in their own process groups and stopped by those ids (never ``ray stop``,
which would stop every Ray cluster on the machine).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fulmen.gateway.app import Gateway
from fulmen.protocol import Task
from fulmen.store import open_store
from fulmen.train import RolloutSampling
from fulmen_testkit.vllm_double import VllmDouble
from fulmen_verl.config import VerlConfig
from fulmen_verl.episodes import (
    EpisodeSpec,
    RunnerSpec,
    run_episodes_ray,
    runner_gateway_url,
    runner_runtime_env,
)

pytestmark = pytest.mark.slow  # two raylets and two actors with a runtime env: ~30-50 s

RAY = str(Path(sys.executable).with_name("ray"))
_NODE_ENV = {
    "RAY_AUTH_MODE": "disabled",  # this driver joins with a plain address (a throwaway cluster)
    "RAY_raylet_start_wait_time_s": "120",  # a busy 2-core machine starts raylets slowly
}

AGENT = '''
import json
import urllib.request

import fulmen
import ray


def agent(task, ctx):
    body = {"model": "tiny", "messages": [{"role": "user", "content": task.data["q"]}],
            "max_tokens": 4}
    request = urllib.request.Request(
        f"{ctx.base_url}/chat/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        json.loads(response.read())
    return {"node": ray.get_runtime_context().get_node_id(), "base_url": ctx.base_url,
            "agent_file": __file__, "fulmen_file": fulmen.__file__}


def reward(task, output, ctx):
    return 1.0
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ray_node(*args: str, log: Path) -> subprocess.Popen[bytes]:
    """``ray start --block ...`` in its own process group: stopping it (SIGTERM) stops the
    node's processes, and only those."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **_NODE_ENV},
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def wait_started(proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until ``ray start`` says its node is up (the machine may be busy: up to 180 s)."""
    deadline = time.monotonic() + 180
    while "Ray runtime started" not in log.read_text(errors="replace"):
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
        time.sleep(0.5)


@pytest.fixture
def two_node_cluster(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``(address, node ip)`` of a started two-node cluster (the test connects with
    ``ray.init``; the fixture disconnects and stops the nodes)."""
    import ray

    ip = ray.util.get_node_ip_address()
    port = free_port()
    temp = tempfile.mkdtemp(prefix="fr", dir="/tmp")  # short: Ray's socket paths live there
    common = (f"--node-ip-address={ip}", "--object-store-memory=100000000")
    nodes = [
        ray_node(
            "--head",
            f"--port={port}",
            "--num-cpus=0",  # a head that runs no task or actor, like a CPU-only head node
            f"--temp-dir={temp}",
            "--include-dashboard=false",
            *common,
            log=tmp_path / "head.log",
        )
    ]
    try:
        wait_started(nodes[0], tmp_path / "head.log")
        nodes.append(
            ray_node(
                f"--address={ip}:{port}",
                "--num-cpus=2",
                '--resources={"worker_node": 2}',
                *common,
                log=tmp_path / "worker.log",
            )
        )
        wait_started(nodes[1], tmp_path / "worker.log")
        yield f"{ip}:{port}", ip
    finally:
        ray.shutdown()
        for proc in reversed(nodes):
            stop(proc)
        shutil.rmtree(temp, ignore_errors=True)


def test_runners_on_the_second_node_reach_the_advertised_gateway(
    tmp_path: Path, two_node_cluster: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray
    from ray._private import ray_constants

    # Under `uv run` Ray would run every worker with `uv run` in the shipped directory, which
    # must then hold the pyproject.toml; here the nodes share this machine's environment.
    monkeypatch.setattr(ray_constants, "RAY_ENABLE_UV_RUN_RUNTIME_ENV", False)

    address, ip = two_node_cluster
    project = tmp_path / "project"  # the user's project: only the driver has it at this path
    project.mkdir()
    (project / "remote_agent.py").write_text(AGENT)
    # the job's runtime env ships the project and fulmen (as the trainer's ray.init does)
    ray.init(
        address=address,
        runtime_env=runner_runtime_env(str(project), ship_code=True),
        log_to_driver=False,
    )
    deadline = time.monotonic() + 120
    while sum(n["Alive"] for n in ray.nodes()) < 2:
        assert time.monotonic() < deadline, "the second node did not join"
        time.sleep(0.5)

    verl = VerlConfig(
        gateway_host="0.0.0.0",
        gateway_advertise=ip,
        ray_address="auto",
        ray_runners=2,
        ray_runner_resources={"worker_node": 1},
    )
    double = VllmDouble()
    double.start_in_thread()
    store = open_store(tmp_path / "episodes.db")
    gateway = Gateway(store, double.url, host=verl.gateway_host)
    gateway.start_in_thread()
    try:
        url = runner_gateway_url(verl, gateway.url)
        port = gateway.url.rsplit(":", 1)[1]
        assert gateway.url.startswith("http://0.0.0.0:") and url == f"http://{ip}:{port}"
        spec = RunnerSpec(
            agent="remote_agent:agent",
            reward="remote_agent:reward",
            base_dir=str(project),
            concurrency=2,
            timeout_s=60,
            max_attempts=1,
            shipped=verl.ship_code,
        )
        tasks = tuple(Task(id=f"t{i}", data={"q": f"question {i}"}) for i in range(2))
        episodes = EpisodeSpec(
            tasks=tasks,
            group_size=2,
            group_prefix="step1",
            metadata=RolloutSampling(temperature=1.0, seed=0, step_index=0),
        )
        results, actors = run_episodes_ray(
            url,
            spec,
            episodes,
            actors=verl.ray_runners,
            resources=verl.ray_runner_resources,
        )
        ids = [r.episode.id for r in results]
        assert len(actors) == 2 and len(ids) == 4
        records = store.records(ids)
        assert all(r.episode.status == "succeeded" and r.rewards for r in records)
        assert all(len(r.transitions) == 1 for r in records)  # the LLM call went through
        worker = next(n["NodeID"] for n in ray.nodes() if "worker_node" in n["Resources"])
        outputs: list[dict[str, Any]] = [r.episode.metadata["output"] for r in records]
        for out in outputs:
            assert out["node"] == worker  # ran on the second node
            assert out["base_url"].startswith(f"{url}/rollout/")  # the advertised address
            # the agent and fulmen came with the runtime env, not from the driver's paths
            assert not out["agent_file"].startswith(str(project))
            assert "runtime_resources" in out["agent_file"]
            assert "runtime_resources" in out["fulmen_file"]
    finally:
        gateway.stop_thread()
        double.stop_thread()
        store.close()

