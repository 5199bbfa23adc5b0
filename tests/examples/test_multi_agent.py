"""The mixed multi-agent example: a LangGraph planner and an AutoGen solver in one episode.

Checks that every call carries the right agent and framework, that concurrent mixed episodes
never mix, that rewards are routed per agent, that ``[credit] agents = ["solver"]`` masks
exactly the planner's calls — in the batch builder and in a real training run — and that with
a ``[[policy]]`` per agent each call reaches its agent's adapter and each policy trains on its
own agent's rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _smoke import REPO, run_smoke
from fulmen.batch import build_batch, group_records
from fulmen.credit import GRPOAssigner
from fulmen.protocol import EpisodeRecord, EpisodeStatus
from fulmen.store import open_store

ROUTED_REWARD = '''
import zlib

def reward(task, output, ctx):
    """Varies with the episode (so GRPO groups have signal); routed per agent."""
    ctx.reward(float(zlib.crc32(ctx.episode_id.encode()) % 2), agent="solver")
    planner = float(zlib.crc32(ctx.episode_id.encode() + b"/planner") % 2)
    ctx.reward(planner, agent="planner")  # the planner's own outcome: trainable if selected
'''

PROBE = """
import json, sys
from pathlib import Path
from fulmen import Task
from fulmen.gateway import Gateway
from fulmen.runner import Runner
from fulmen.store import open_store
from fulmen_testkit.vllm_double import VllmDouble
from examples.multi_agent import agent as example
from routed_reward import reward

from fulmen.policies import PolicyConfig, PolicyRoutes

out = Path(sys.argv[1])
policies = sys.argv[2:] == ["policies"]  # each agent routed to its own adapter
double = VllmDouble(model=example.MODEL, lora_modules=("planner", "solver") if policies else ())
store = open_store(out / "episodes.db")
routes = PolicyRoutes.of(
    [PolicyConfig(name=a, agents=(a,)) for a in ("planner", "solver")], base=example.MODEL
)
gateway = Gateway(store, double.start_in_thread(), routes=routes if policies else None)
gateway.start_in_thread()
tasks = [Task(id=str(p["id"]), data=p) for p in example.train_tasks()[:4]]
results = Runner(gateway, concurrency=16, max_attempts=1, reward_fn=reward).run(
    example.run, tasks, group_size=4, group_prefix="g"
)
(out / "episodes.json").write_text(json.dumps([r.episode.id for r in results]))
sent = [(r.headers.get("x-request-id"), r.body["model"]) for r in double.received]
(out / "sent.json").write_text(json.dumps(sent))
gateway.stop_thread()
double.stop_thread()
store.close()
"""


def _probe(out: Path, *args: str) -> list[EpisodeRecord]:
    """16 concurrent mixed episodes (4 tasks x 4) through a real gateway, in a subprocess (the
    example attaches its adapters on import)."""
    (out / "routed_reward.py").write_text(ROUTED_REWARD)
    (out / "probe.py").write_text(PROBE)
    done = subprocess.run(
        [sys.executable, str(out / "probe.py"), str(out), *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(out)])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open_store(out / "episodes.db") as store:
        return store.records(json.loads((out / "episodes.json").read_text()))


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mixed")


@pytest.fixture(scope="module")
def mixed(probe_dir: Path) -> list[EpisodeRecord]:
    """The probe's episodes, with a policy per agent (routing changes where calls go, not what
    is recorded about them: the checks below hold with or without it)."""
    return _probe(probe_dir, "policies")


def test_with_policies_each_agents_calls_reach_its_adapter(
    mixed: list[EpisodeRecord], probe_dir: Path
) -> None:
    """The gateway knows each call's agent when it arrives (the example's clients send
    ``X-Fulmen-Agent``) and sends it to that agent's adapter; every recorded call names its
    policy, and the framework adapters' annotations name the same agent."""
    transitions = {t.request_id: t for r in mixed for t in r.transitions}
    sent = json.loads((probe_dir / "sent.json").read_text())
    assert len(sent) == len(transitions) >= 32
    for request_id, model in sent:
        t = transitions[request_id]
        assert model == t.agent == t.metadata["policy"]
        assert t.metadata["params"]["model"] == "policy"  # what the agent asked for
    assert {t.agent for t in transitions.values()} == {"planner", "solver"}


def test_every_call_carries_its_agent_and_framework(mixed: list[EpisodeRecord]) -> None:
    assert len(mixed) == 16
    for record in mixed:
        assert record.episode.status is EpisodeStatus.SUCCEEDED, record.episode.error
        question = str(record.episode.task.data["question"])
        planner, *solver = record.transitions
        assert (planner.agent, planner.metadata["framework"]) == ("planner", "langchain")
        assert planner.metadata["node"] == "plan"
        assert planner.metadata["path"][:2] == ["planner", "plan"]
        assert solver and all(
            (t.agent, t.metadata["framework"]) == ("solver", "autogen") for t in solver
        )
        for t in record.transitions:  # concurrent episodes never mix
            assert t.trainable and question in str(t.request_messages)
        (result,) = solver[0].metadata["tool_results"]  # the calculator ran for the solver
        assert result["name"] == "calculator"
        assert result["tool_call_id"] == solver[0].tool_calls[0]["id"]


def test_rewards_are_routed_per_agent(mixed: list[EpisodeRecord]) -> None:
    for record in mixed:
        assert sorted(str(r.agent) for r in record.rewards) == ["planner", "solver"]


def test_selection_masks_exactly_the_other_agents(mixed: list[EpisodeRecord]) -> None:
    groups = group_records(mixed)
    everyone = build_batch(groups, GRPOAssigner())
    solver_only = build_batch(groups, GRPOAssigner(agents=["solver"]))
    assert {r.agent for r in everyone.rows} == {"planner", "solver"}
    assert {r.agent for r in solver_only.rows} == {"solver"}
    planner_calls = sum(t.agent == "planner" for rec in mixed for t in rec.transitions)
    assert solver_only.stats["agent_not_selected_transitions"] == planner_calls
    # the solver's rows are exactly the same with or without the planner in training
    solver_rows = [r for r in everyone.rows if r.agent == "solver"]
    assert [(r.episode_id, r.seqs) for r in solver_only.rows] == [
        (r.episode_id, r.seqs) for r in solver_rows
    ]


@pytest.mark.slow
def test_training_run_trains_only_the_solver(tmp_path: Path) -> None:
    (tmp_path / "routed_reward.py").write_text(textwrap.dedent(ROUTED_REWARD))
    run = run_smoke(
        "multi_agent",
        tmp_path,
        overrides={"agent": {"reward": "routed_reward:reward"}, "train": {"learning_rate": 1e-2}},
        python_path=(tmp_path,),
    )
    assert [r["step"] for r in run.train] == [1, 2]
    for row in run.train:
        assert row["failed_episodes"] == 0
        # one planner call per episode, all masked; the solver's calls made the rows
        assert row["batch/agent_not_selected_transitions"] == row["episodes"]
    assert any(r["rows"] > 0 for r in run.train), "no step had signal: nothing was trained"
    frameworks = {(t.agent, t.metadata.get("framework")) for t in run.transitions}
    assert frameworks == {("planner", "langchain"), ("solver", "autogen")}


@pytest.mark.slow
def test_training_run_trains_each_agents_own_policy(tmp_path: Path) -> None:
    """``smoke_policies.toml``: the planner's and the solver's calls reach their own adapters,
    each policy trains on its own agent's rows, and the checkpoint holds both adapters."""
    (tmp_path / "routed_reward.py").write_text(textwrap.dedent(ROUTED_REWARD))
    run = run_smoke(
        "multi_agent", tmp_path, config_name="smoke_policies.toml",
        overrides={"agent": {"reward": "routed_reward:reward"}}, python_path=(tmp_path,),
    )  # fmt: skip
    assert [r["step"] for r in run.train] == [1, 2]
    for row in run.train:
        assert row["failed_episodes"] == 0
        assert row["policy/planner/llm_calls"] == row["episodes"]  # one plan per episode
        assert row["batch/agent_not_selected_transitions"] == 0  # every agent has a policy
        assert row["rows"] == row["policy/planner/rows"] + row["policy/solver/rows"]
    assert any(r.get("policy/planner/num_tokens", 0) > 0 for r in run.train)
    assert any(r.get("policy/solver/num_tokens", 0) > 0 for r in run.train)
    assert {(t.agent, t.metadata["policy"], t.metadata["model"]) for t in run.transitions} == {
        ("planner", "planner", "planner"), ("solver", "solver", "solver"),
    }
    latest = run.out / "checkpoints" / (run.out / "checkpoints" / "latest").read_text().strip()
    assert (latest / "planner" / "adapter_config.json").is_file()
    assert (latest / "solver" / "adapter_config.json").is_file()
    assert json.loads((latest / "policies.json").read_text()).keys() == {"planner", "solver"}


@pytest.mark.parametrize(
    ("plan", "score"),
    [
        ("Use the calculator on 37*48.", 1.0),  # the right sub-step, handed on
        ("Multiply 48 by 37 with the calculator.", 1.0),  # in words, either order
        ('<tool_call>{"name": "calculator", "arguments": {"expression": "37*48"}}</tool_call>', 1.0),
        ("Multiply 37 by 48 = 1776.", 2 / 3),  # asserts a result: the planner computes nothing
        ("Add 37 and 48.", 2 / 3),  # the wrong operation
        ("Use the calculator on 37*58.", 1 / 3),  # a wrong operand (and a foreign number)
        ("The answer is 1776.", 0.0),  # the base model's usual plan: a guess, format-clean
        ("", 0.0),
    ],
)
def test_the_planners_score_checks_the_plan_against_the_task(plan: str, score: float) -> None:
    if str(REPO) not in sys.path:  # ``examples`` is a top-level package of the repository
        sys.path.insert(0, str(REPO))
    from examples.multi_agent.plan import plan_quality, plan_score  # attaches no adapter

    assert plan_quality(plan, "37*48") == pytest.approx(score)
    if plan.startswith("The answer"):
        assert plan_score(plan) == 1.0  # the old format-only score could not tell
    if not plan:
        with pytest.raises(ValueError, match="expected an expression like"):
            plan_quality(plan, "what is it")
