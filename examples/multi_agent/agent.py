"""Two frameworks, one episode: a LangGraph planner hands the sub-task to an AutoGen solver.

The graph ``planner`` (LangGraph) has two nodes. ``plan`` asks the model, through LangChain's
``ChatOpenAI``, for a one-line plan; ``solve`` hands the question to ``solver``, an AutoGen
``AssistantAgent`` with the calculator tool (the same system prompt and tool schema as
``examples/calculator``, which the tiny model was warm-started on). Both adapters are attached,
so every recorded call carries its agent (``planner`` or ``solver``) and its framework
(``langchain`` or ``autogen``).

Rewards are routed per agent: the solver's answer scores ``agent="solver"`` (the episode's main
outcome), the plan gets its own reward ``name="plan", agent="planner"``: its decomposition
score against the task's ground truth (:func:`plan_quality`).
``train.toml`` sets ``[credit] agents = ["solver"]``: one policy, only the solver learns; the
planner's calls are recorded but masked out of every batch. ``train_policies.toml`` gives each
agent its own policy (``[[policy]]``): two LoRA adapters on one base, the planner's trained on
its plan reward, the solver's on its answers.

Each model client sends ``X-Fulmen-Agent`` (``default_headers``), so the gateway knows the
agent of a call when it arrives and, with ``[[policy]]``, sends it to that agent's adapter.
"""

from __future__ import annotations

from typing import Any, TypedDict

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import TextMessage
from fulmen import EpisodeContext, Task
from fulmen_langchain import LangChainAdapter
from fulmen_tasks.calculator import SYSTEM_PROMPT, check_answer
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph

from examples.autogen_calculator.agent import ADAPTER as AUTOGEN_ADAPTER
from examples.autogen_calculator.agent import CalculatorTool
from examples.calculator.agent import eval_tasks, train_tasks
from examples.multi_agent.plan import plan_quality, plan_score

PLANNER = "planner"
"""The LangGraph graph's name: the agent name of the planner's calls."""
SOLVER = "solver"
"""The AutoGen agent's name."""
MODEL = "policy"
"""The model name the trainer serves (``[model] name``)."""
PLANNER_PROMPT = "You are a planner. Say in one short line how to answer the question."
AGENT_HEADER = "X-Fulmen-Agent"
"""The request header that names a call's agent to the gateway (routing to its policy)."""

LANGCHAIN_ADAPTER = LangChainAdapter().attach()
"""fulmen's one line per framework (the AutoGen calculator example, whose tool the solver
uses, attaches the AutoGen adapter when it is imported); each adapter's ``model_for`` is its
framework's model pointed at the episode."""
ADAPTERS = (LANGCHAIN_ADAPTER, AUTOGEN_ADAPTER)


class State(TypedDict):
    """The graph's state."""

    question: str
    plan: str
    answer: str | None


def build_graph(ctx: EpisodeContext) -> Any:
    """``plan`` (LangChain model call) → ``solve`` (AutoGen agent with the calculator tool)."""
    planner_model = LANGCHAIN_ADAPTER.model_for(
        ctx, MODEL, max_completion_tokens=24, default_headers={AGENT_HEADER: PLANNER}
    )

    async def plan(state: State) -> dict[str, str]:
        reply = await planner_model.ainvoke(
            [SystemMessage(PLANNER_PROMPT), HumanMessage(state["question"])]
        )
        return {"plan": reply.text}

    async def solve(state: State) -> dict[str, str | None]:
        solver = AssistantAgent(
            SOLVER,
            model_client=AUTOGEN_ADAPTER.model_for(
                ctx, MODEL, agent=SOLVER, max_tokens=96, default_headers={AGENT_HEADER: SOLVER}
            ),
            tools=[CalculatorTool()],
            system_message=SYSTEM_PROMPT,
            reflect_on_tool_use=False,
            max_tool_iterations=3,
        )
        result = await solver.run(task=state["question"])
        last = result.messages[-1]
        return {"answer": last.content if isinstance(last, TextMessage) else None}

    builder = StateGraph(State)
    builder.add_node("plan", plan)
    builder.add_node("solve", solve)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "solve")
    builder.add_edge("solve", END)
    return builder.compile(name=PLANNER)


async def run(task: Task, ctx: EpisodeContext) -> dict[str, str | None]:
    """One episode: returns ``{"plan": ..., "answer": ...}``."""
    state: State = {"question": str(task.data["question"]), "plan": "", "answer": None}
    final = await build_graph(ctx).ainvoke(state)
    return {"plan": final["plan"], "answer": final["answer"]}


def reward(task: Task, output: dict[str, str | None], ctx: EpisodeContext) -> None:
    """Per-agent rewards: the solver's exact answer (the outcome); the plan's decomposition
    score :func:`~examples.multi_agent.plan.plan_quality` (``name="plan"``, the planner's
    trained reward) and its format check :func:`~examples.multi_agent.plan.plan_score`
    (``name="plan_format"``: recorded, no weight in the configs)."""
    correct = check_answer(output["answer"], task.data["answer"])
    ctx.reward(1.0 if correct else 0.0, agent=SOLVER)
    plan = output["plan"]
    ctx.reward(plan_quality(plan, str(task.data["expression"])), name="plan", agent=PLANNER)
    ctx.reward(plan_score(plan), name="plan_format", agent=PLANNER)


__all__ = ["eval_tasks", "plan_quality", "plan_score", "reward", "run", "train_tasks"]
