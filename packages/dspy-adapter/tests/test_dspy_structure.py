"""What the DSPy adapter records beyond the kit: predictor names, module paths, dspy.Parallel,
the cache, attach/detach misuse. Real DSPy programs call the real gateway over loopback."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path
from weakref import WeakSet

import dspy
import pytest
import tqdm
from _dspy_sample import react_responder
from dspy.lm15 import Message, Request
from fulmen import EpisodeContext, Task
from fulmen.adapters import MODEL_TIMEOUT_S, AdapterError
from fulmen.protocol import EpisodeStatus, Transition
from fulmen_dspy import DSPyAdapter
from fulmen_testkit import MODEL, TOOL_NAME, TOOL_REWARD, KitStack, kit_task


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[KitStack]:
    with KitStack(tmp_path, responder=react_responder) as running:
        yield running


@pytest.fixture
def adapter() -> Iterator[DSPyAdapter]:
    with DSPyAdapter() as attached:
        yield attached


def _calls(stack: KitStack, task: Task, program: dspy.Module) -> list[Transition]:
    """Run ``program`` on the task's question in one episode; its transitions."""

    def solve(task: Task, ctx: EpisodeContext) -> str:
        with dspy.context(lm=DSPyAdapter.model_for(ctx, MODEL)):
            return str(program(question=task.data["question"]).answer)

    result = stack.run(solve, [task])[0]
    assert result.episode.status is EpisodeStatus.SUCCEEDED, result.episode.error
    return stack.store.transitions(result.episode.id)


class Pipeline(dspy.Module):
    """A user program: a Predict, then a ChainOfThought."""

    def __init__(self) -> None:
        super().__init__()
        self.draft = dspy.Predict("question -> answer")
        self.refine = dspy.ChainOfThought("question, draft -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        draft = self.draft(question=question).answer
        return self.refine(question=question, draft=draft)


def test_predict_alone_is_its_own_agent_and_node(stack: KitStack, adapter: DSPyAdapter) -> None:
    (call,) = _calls(stack, kit_task(0), dspy.Predict("question -> answer"))
    assert call.agent == "Predict"
    assert call.metadata["node"] == "Predict"
    assert call.metadata["path"] == ["Predict"]
    assert call.metadata["framework"] == "dspy"
    assert call.metadata["module"] == "Predict"


def test_chain_of_thought_node_is_its_predictor(stack: KitStack, adapter: DSPyAdapter) -> None:
    (call,) = _calls(stack, kit_task(0), dspy.ChainOfThought("question -> answer"))
    assert (call.agent, call.metadata["node"]) == ("ChainOfThought", "predict")
    assert call.metadata["path"] == ["ChainOfThought", "predict"]


def test_program_nodes_are_named_predictors(stack: KitStack, adapter: DSPyAdapter) -> None:
    program = Pipeline()
    calls = _calls(stack, kit_task(0), program)
    assert [c.metadata["node"] for c in calls] == ["draft", "refine.predict"]
    assert [name for name, _ in program.named_predictors()] == ["draft", "refine.predict"]
    assert [c.metadata["path"] for c in calls] == [
        ["Pipeline", "draft"],
        ["Pipeline", "refine", "predict"],
    ]
    assert {c.agent for c in calls} == {"Pipeline"}


def test_agent_name_given_by_the_user(stack: KitStack) -> None:
    with DSPyAdapter(agent="writer"):
        calls = _calls(stack, kit_task(0), Pipeline())
    assert {c.agent for c in calls} == {"writer"}
    assert calls[1].metadata["path"] == ["writer", "refine", "predict"]


class Fanout(dspy.Module):
    """Runs a ReAct agent and a Predict side by side with ``dspy.Parallel``."""

    def __init__(self, tool: dspy.Tool) -> None:
        super().__init__()
        self.agent = dspy.ReAct("question -> answer", tools=[tool], max_iters=3)  # pyright: ignore[reportArgumentType]
        self.summary = dspy.Predict("question -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        branches = dspy.Parallel(num_threads=2, disable_progress_bar=True)(
            [(self.agent, {"question": question}), (self.summary, {"question": question})]
        )
        return dspy.Prediction(answer=f"{branches[0].answer} / {branches[1].answer}")


def test_parallel_inside_16_concurrent_episodes_never_mixes(
    stack: KitStack, adapter: DSPyAdapter
) -> None:
    """``dspy.context(lm=DSPyAdapter.model_for(ctx))`` reaches dspy.Parallel's worker threads (DSPy copies
    its settings there), and so does the adapter's run tree. fulmen's own context variable
    does not: a tool in a worker rewards through the ``ctx`` it closes over, and
    ``step="current"`` still finds the call that asked for the tool."""

    def solve(task: Task, ctx: EpisodeContext) -> str:
        marker = str(task.data["marker"])

        def lookup(query: str) -> str:
            ctx.reward(TOOL_REWARD, name="tool", step="current")
            return f"code-of-{marker}"

        program = Fanout(dspy.Tool(lookup, name=TOOL_NAME))
        with dspy.context(lm=DSPyAdapter.model_for(ctx, MODEL)):
            return str(program(question=task.data["question"]).answer)

    results = stack.run(solve, [kit_task(i) for i in range(16)], concurrency=16)
    expected_nodes = {name for name, _ in Fanout(dspy.Tool(str)).named_predictors()}
    for result in results:
        assert result.episode.status is EpisodeStatus.SUCCEEDED, result.episode.error
        marker = str(result.episode.task.data["marker"])
        assert f"code-of-{marker}" in str(result.output)
        calls = stack.store.transitions(result.episode.id)
        assert len(calls) == stack.requests_of(result.episode.id) == 4
        for call in calls:
            assert marker in str(call.request_messages)
            assert call.agent == "Fanout"
            assert call.metadata["framework"] == "dspy"
        assert {c.metadata["node"] for c in calls} == expected_nodes
        (asker,) = [c for c in calls if c.metadata.get("tool_results")]
        assert asker.metadata["node"] == "agent.react"
        assert asker.metadata["tool_results"] == [
            {
                "tool_call_id": None,
                "name": TOOL_NAME,
                "arguments": {"query": marker},
                "output": f"code-of-{marker}",
            }
        ]
        (reward,) = [r for r in stack.store.rewards(result.episode.id) if r.name == "tool"]
        assert reward.step == asker.seq


def test_cache_is_off_same_prompt_twice_calls_twice(stack: KitStack, adapter: DSPyAdapter) -> None:
    def solve(task: Task, ctx: EpisodeContext) -> list[str]:
        predict = dspy.Predict("question -> answer")
        with dspy.context(lm=DSPyAdapter.model_for(ctx, MODEL)):
            return [str(predict(question="same prompt").answer) for _ in range(2)]

    result = stack.run(solve, [kit_task(0)])[0]
    assert result.episode.status is EpisodeStatus.SUCCEEDED, result.episode.error
    calls = stack.store.transitions(result.episode.id)
    assert stack.requests_of(result.episode.id) == len(calls) == 2
    assert all(c.metadata["framework"] == "dspy" for c in calls)


def test_module_calling_its_lm_directly_is_the_node(stack: KitStack, adapter: DSPyAdapter) -> None:
    """A module that calls its LM itself (a typed lm15 request, then a plain prompt)."""

    class Direct(dspy.Module):
        def forward(self, question: str) -> dspy.Prediction:
            lm = dspy.settings.lm
            assert lm is not None
            request = Request(model=lm.model, messages=(Message.user(question),))
            first = lm(request).text
            second = lm(f"{question} {first}")[0]
            return dspy.Prediction(answer=str(second))

    calls = _calls(stack, kit_task(0), Direct())
    assert len(calls) == 2
    for call in calls:
        assert (call.agent, call.metadata["node"], call.metadata["path"]) == (
            "Direct",
            "Direct",
            ["Direct"],
        )


def test_no_history_means_no_annotation_and_a_warning(
    stack: KitStack, adapter: DSPyAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    def solve(task: Task, ctx: EpisodeContext) -> str:
        with dspy.context(lm=DSPyAdapter.model_for(ctx, MODEL), disable_history=True):
            return str(dspy.Predict("question -> answer")(question="q").answer)

    with caplog.at_level(logging.WARNING, logger="fulmen.adapters.dspy"):
        result = stack.run(solve, [kit_task(0)])[0]
    assert result.episode.status is EpisodeStatus.SUCCEEDED, result.episode.error
    assert stack.store.annotations(result.episode.id) == []
    assert any("disable_history" in r.getMessage() for r in caplog.records)
    assert adapter.failures == 0


def test_detach_keeps_callbacks_added_after_attach() -> None:
    class Other(dspy.utils.callback.BaseCallback):
        pass

    before: list[object] = list(dspy.settings.get("callbacks") or [])
    adapter = DSPyAdapter().attach()
    other = Other()
    dspy.configure(callbacks=[*(dspy.settings.get("callbacks") or []), other])
    adapter.detach()
    assert dspy.settings.get("callbacks") == [*before, other]
    dspy.configure(callbacks=before)


def test_model_for_points_at_the_episode_with_cache_and_retries_off() -> None:
    ctx = EpisodeContext(episode_id="ep-1", gateway_url="http://127.0.0.1:9")
    lm = DSPyAdapter.model_for(ctx, temperature=1.0)
    assert (lm.model, lm.cache, lm.kwargs["temperature"]) == ("openai/policy", False, 1.0)
    assert (lm.kwargs["api_base"], lm.kwargs["api_key"]) == (ctx.base_url, ctx.api_key)
    assert (lm.num_retries, lm.kwargs["timeout"]) == (0, MODEL_TIMEOUT_S)
    assert DSPyAdapter.model_for(ctx, "openai/policy").model == "openai/policy"
    custom = DSPyAdapter.model_for(ctx, num_retries=2, timeout=5.0)
    assert (custom.num_retries, custom.kwargs["timeout"]) == (2, 5.0)
    with pytest.raises(AdapterError, match="cache"):
        DSPyAdapter.model_for(ctx, "policy", cache=True)


@pytest.mark.slow  # importing LiteLLM takes seconds
def test_litellm_engine_is_captured(stack: KitStack, adapter: DSPyAdapter) -> None:
    """``engine="litellm"`` (or any ``extra_body``) switches DSPy to LiteLLM: same capture."""

    def solve(task: Task, ctx: EpisodeContext) -> str:
        with dspy.context(lm=DSPyAdapter.model_for(ctx, MODEL, engine="litellm")):
            return str(dspy.ChainOfThought("question -> answer")(question="q").answer)

    result = stack.run(solve, [kit_task(0)])[0]
    assert result.episode.status is EpisodeStatus.SUCCEEDED, result.episode.error
    (call,) = stack.store.transitions(result.episode.id)
    assert (call.agent, call.metadata["node"]) == ("ChainOfThought", "predict")


def _bars() -> WeakSet[object]:
    """tqdm's (private) set of live progress bars."""
    return getattr(tqdm.tqdm, "_instances")  # noqa: B009


def _bar_created_across_a_clear() -> None:
    """The interleaving two concurrent ``dspy.Parallel`` calls can produce: a disabled tqdm
    bar is added to tqdm's instance set (``__new__``), another thread's
    ``ParallelExecutor.execute`` clears the set, then the bar's ``__init__`` removes itself."""
    bar = tqdm.tqdm.__new__(tqdm.tqdm)
    _bars().clear()  # what DSPy's ParallelExecutor.execute does
    bar.__init__(total=1, disable=True)


def test_parallel_progress_bar_race_is_closed_while_attached() -> None:
    """DSPy clears tqdm's instance set without tqdm's lock; without the adapter the interleaving
    raises inside the user's program, with it the bar is created, and detach restores tqdm."""
    original_type = type(_bars())
    with pytest.raises(KeyError):
        _bar_created_across_a_clear()
    with DSPyAdapter():
        _bar_created_across_a_clear()
        live = tqdm.tqdm(total=1, disable=False, file=io.StringIO())
        assert live in _bars()
        live.close()
        assert live not in _bars()
    assert type(_bars()) is original_type
    with pytest.raises(KeyError):
        _bar_created_across_a_clear()
