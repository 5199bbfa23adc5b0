"""The standard tests every fulmen framework adapter passes.

An adapter's test module subclasses :class:`AdapterConformanceTests` and fills in what only it
knows; it never re-implements a standard test::

    from fulmen_testkit import AdapterConformanceTests

    class TestLangChainConformance(AdapterConformanceTests):
        adapter_class = LangChainAdapter
        expected_agents = frozenset({"agent"})

        def make_agent(self, *, stream: bool = False, use_async: bool = False) -> AgentFn:
            ...  # the framework's sample agent, its model from LangChainAdapter.model_for(ctx)

        def call_model(self, model: Any) -> object:
            return model.invoke("Say hi.")  # one call with what model_for returned

The sample agent (see :mod:`fulmen_testkit.tasks`) answers ``task.data["question"]`` with the
model :data:`~fulmen_testkit.tasks.MODEL` and one tool named ``lookup`` (one string argument,
``query``) whose body is :func:`fulmen_testkit.lookup`. The test upstream (a double of vLLM's
wire format) answers a user turn that offers tools with a call to the first tool, and a tool
result with ``"The answer is <result>."``; an adapter whose framework needs another output
format overrides :meth:`AdapterConformanceTests.make_responder`.

Beyond capture, the kit checks what the :class:`~fulmen.adapters.Adapter` base promises of
every adapter: ``model_for(ctx, model="policy", **kwargs)`` returns the framework's model
pointed at the episode (and the sample agent gets its model from it); a second instance cannot
attach while one is (exclusive attach); importing the adapter's package without its framework
fails with the package's ``pip install`` / ``uv add`` line.

Capability flags (class attributes with defaults) skip what a framework cannot do; a standard
test may only be overridden with ``@pytest.mark.xfail(reason=...)``, which
``test_no_overrides_DO_NOT_OVERRIDE`` enforces.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fulmen import Task
from fulmen.adapters import DEFAULT_MODEL, Adapter, AdapterError
from fulmen.context import EpisodeContext
from fulmen.protocol import EpisodeStatus, Transition
from fulmen.runner import AgentFn, EpisodeResult

from fulmen_testkit._hidden_import import import_error_without
from fulmen_testkit.stack import KitStack
from fulmen_testkit.tasks import MODEL, TOOL_NAME, TOOL_REWARD, kit_task
from fulmen_testkit.vllm_double.generation import Responder

__all__ = ["AdapterConformanceTests"]


class AdapterConformanceTests:
    """Base class of an adapter's conformance tests. See the module docstring.

    Attributes to set (class attributes or properties):
        adapter_class: the :class:`~fulmen.adapters.Adapter` subclass under test.
        expected_agents: agent names the sample agent's calls are annotated with.
    """

    adapter_class: ClassVar[type[Adapter]]
    """The adapter under test (required)."""
    expected_agents: ClassVar[frozenset[str]]
    """Agent names the sample agent's LLM calls must carry (required)."""
    adapter_kwargs: ClassVar[Mapping[str, Any]] = {}
    """Keyword arguments for ``adapter_class``."""
    calls_per_episode: ClassVar[int] = 2
    """LLM calls one sample episode makes (tool call, then answer)."""

    supports_streaming: ClassVar[bool] = True
    """The sample agent can stream (``make_agent(stream=True)``)."""
    supports_tools: ClassVar[bool] = True
    """The sample agent calls ``lookup`` (tool results and tool rewards are checked)."""
    supports_async: ClassVar[bool] = True
    """The sample agent has an async form (``make_agent(use_async=True)``)."""
    supports_multi_agent: ClassVar[bool] = False
    """The sample agent's calls come from more than one agent (``expected_agents``)."""
    has_nodes: ClassVar[bool] = True
    """Annotations carry a node / span name."""

    # ----------------------------------------------------------------- what adapters fill in

    def make_agent(self, *, stream: bool = False, use_async: bool = False) -> AgentFn:
        """The sample agent as a runner agent ``(task, ctx) -> answer``, calling the model
        ``adapter_class.model_for(ctx, MODEL)`` through the framework. Required."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_agent()")

    def call_model(self, model: Any) -> object:
        """Make one LLM call (any short prompt) with ``model``, what
        ``adapter_class.model_for(ctx, MODEL)`` returned, and return its answer; blocking (run
        an async framework's call with ``asyncio.run``). Required."""
        raise NotImplementedError(f"{type(self).__name__} must implement call_model()")

    def make_responder(self) -> Responder | None:
        """Scripted upstream text, for frameworks that need their own output format. Default:
        None (the double's default responder, described in the module docstring)."""
        return None

    def framework_state(self) -> object:
        """A comparable snapshot of the framework's global hook state (handlers, processors,
        patched attributes). ``test_detach_restores_framework`` checks attach changes nothing
        that detach does not restore. Default: None (only behaviour is checked)."""
        return None

    def new_adapter(self) -> Adapter:
        """A fresh, unattached adapter."""
        return self.adapter_class(**self.adapter_kwargs)

    # ----------------------------------------------------------------- fixtures and helpers

    @pytest.fixture
    def stack(self, tmp_path: Path) -> Any:
        """A running double → gateway → store stack."""
        with KitStack(tmp_path, responder=self.make_responder()) as running:
            yield running

    @pytest.fixture
    def adapter(self) -> Any:
        """The adapter, attached for the test and detached after it."""
        adapter = self.new_adapter()
        adapter.attach()
        try:
            yield adapter
        finally:
            adapter.detach()

    def _framework_transitions(self, stack: KitStack, result: EpisodeResult) -> list[Transition]:
        transitions = stack.store.transitions(result.episode.id)
        assert len(transitions) == stack.requests_of(result.episode.id), (
            "every LLM call that reached the upstream must be exactly one transition"
        )
        return transitions

    def _check_episode(self, stack: KitStack, result: EpisodeResult, adapter: Adapter) -> None:
        """The structure checks shared by the standard tests."""
        assert result.episode.status is EpisodeStatus.SUCCEEDED, result.episode.error
        transitions = self._framework_transitions(stack, result)
        assert len(transitions) == self.calls_per_episode, (
            f"expected {self.calls_per_episode} LLM calls, got {len(transitions)}"
        )
        marker = str(result.episode.task.data["marker"])
        for t in transitions:
            assert t.trainable, f"call {t.request_id} has no exact token ids"
            assert t.response_logprobs is not None
            assert len(t.response_logprobs) == len(t.response_token_ids)
            assert t.prompt_token_ids, f"call {t.request_id} has no prompt ids"
            assert marker in str(t.request_messages), "a call carries another episode's prompt"
            assert t.metadata.get("framework") == adapter.framework, (
                f"call {t.request_id} was not annotated by the adapter: {dict(t.metadata)}"
            )
            assert t.agent in self.expected_agents, (
                f"call {t.request_id} has agent {t.agent!r}, expected one of "
                f"{sorted(self.expected_agents)}"
            )
            if self.has_nodes:
                assert t.metadata.get("node"), f"call {t.request_id} has no node"
            for item in t.metadata.get("tool_results", ()):
                assert marker in str(item), "a tool result of another episode was joined here"
        if self.supports_tools:
            results = _tool_results(transitions)
            assert results, "no transition carries the lookup tool's result"
            seq, item = results[0]
            assert item.get("name") == TOOL_NAME
            assert f"code-of-{marker}" in str(item.get("output")), item
            callers = [t for t in transitions if t.seq == seq]
            assert callers and callers[0].seq < transitions[-1].seq, (
                "the tool result must sit on the call that asked for the tool"
            )

    # ----------------------------------------------------------------- the standard tests

    def test_attach_is_one_line_and_idempotent(self, stack: KitStack) -> None:
        """``Adapter().attach()`` is the one line; attaching twice records nothing twice.

        Troubleshooting: make ``_attach`` install hooks only through ``Adapter.attach``'s
        state; global registries (callback lists, trace processors) must not get duplicates.
        """
        once = self.new_adapter().attach()
        try:
            first = stack.run(self.make_agent(), [kit_task(0)])[0]
            notes_once = len(stack.store.annotations(first.episode.id))
        finally:
            once.detach()
        twice = self.new_adapter()
        assert twice.attach() is twice
        twice.attach()
        try:
            second = stack.run(self.make_agent(), [kit_task(1)])[0]
        finally:
            twice.detach()
        self._check_episode(stack, second, twice)
        assert len(stack.store.annotations(second.episode.id)) == notes_once

    def test_detach_restores_framework(self, stack: KitStack) -> None:
        """After ``detach()`` the framework's hook state is as before and nothing is annotated.

        Troubleshooting: ``_detach`` must remove exactly what ``_attach`` added (restore a
        patched attribute to the original object, remove a processor from the list).
        """
        before = self.framework_state()
        adapter = self.new_adapter().attach()
        adapter.detach()
        adapter.detach()  # idempotent
        assert self.framework_state() == before
        result = stack.run(self.make_agent(), [kit_task(0)])[0]
        assert result.episode.status is EpisodeStatus.SUCCEEDED, result.episode.error
        assert stack.store.annotations(result.episode.id) == []
        assert all(
            "framework" not in t.metadata for t in stack.store.transitions(result.episode.id)
        )

    def test_calls_become_transitions_with_structure(
        self, stack: KitStack, adapter: Adapter
    ) -> None:
        """Every LLM call is exactly one transition with exact tokens and the adapter's
        structure (agent, node, tool results on the call that asked for the tool).

        Troubleshooting: join on the response id the framework saw (``chatcmpl-{request}``)
        with ``Adapter.annotate``; never on "the current episode".
        """
        result = stack.run(self.make_agent(), [kit_task(0)])[0]
        self._check_episode(stack, result, adapter)

    def test_streaming_calls_are_captured(self, stack: KitStack, adapter: Adapter) -> None:
        """A streaming sample agent is captured like a non-streaming one."""
        if not self.supports_streaming:
            pytest.skip("the framework's sample agent does not stream")
        result = stack.run(self.make_agent(stream=True), [kit_task(0)])[0]
        self._check_episode(stack, result, adapter)
        assert all("stream" in t.flags for t in stack.store.transitions(result.episode.id))

    def test_async_agent_is_captured(self, stack: KitStack, adapter: Adapter) -> None:
        """The async form of the sample agent is captured like the sync one."""
        if not self.supports_async:
            pytest.skip("the framework has no async form")
        result = stack.run(self.make_agent(use_async=True), [kit_task(0)])[0]
        self._check_episode(stack, result, adapter)

    def test_multi_agent_names(self, stack: KitStack, adapter: Adapter) -> None:
        """A multi-agent sample run carries every expected agent name."""
        if not self.supports_multi_agent:
            pytest.skip("the sample agent is a single agent")
        result = stack.run(self.make_agent(), [kit_task(0)])[0]
        self._check_episode(stack, result, adapter)
        seen = {t.agent for t in stack.store.transitions(result.episode.id)}
        assert seen == set(self.expected_agents)

    def test_concurrent_episodes_never_mix(self, stack: KitStack, adapter: Adapter) -> None:
        """16 concurrent episodes (threads, or tasks for async agents): each one's calls,
        annotations, tool results and rewards stay its own.

        Troubleshooting: never keep "the current run" in adapter-global state; key per-run
        state by the framework's run id and the episode by the response id.
        """
        agent = self.make_agent(use_async=self.supports_async)
        mode = "reward" if self.supports_tools else "ok"
        results = stack.run(agent, [kit_task(i, mode) for i in range(16)], concurrency=16)
        for result in results:
            self._check_episode(stack, result, adapter)
            if self.supports_tools:
                self._check_tool_reward(stack, result)

    def test_reward_inside_tool_lands_on_episode_and_step(
        self, stack: KitStack, adapter: Adapter
    ) -> None:
        """``fulmen.reward(..., step="current")`` inside the tool lands on the episode, at the
        call that asked for the tool.

        Troubleshooting: annotate each call when it ends (before its tools run), so the
        call is known; or wrap tool runs in ``fulmen.step_scope``.
        """
        if not self.supports_tools:
            pytest.skip("the sample agent has no tool")
        result = stack.run(self.make_agent(), [kit_task(0, "reward")])[0]
        self._check_episode(stack, result, adapter)
        self._check_tool_reward(stack, result)

    def _check_tool_reward(self, stack: KitStack, result: EpisodeResult) -> None:
        rewards = [r for r in stack.store.rewards(result.episode.id) if r.name == "tool"]
        assert len(rewards) == 1, f"expected one tool reward, got {rewards}"
        (seq, _), *_ = _tool_results(stack.store.transitions(result.episode.id))
        assert rewards[0].value == TOOL_REWARD
        assert rewards[0].step == seq, (
            f"the tool reward is on step {rewards[0].step}; the call that asked for the tool "
            f"is {seq}"
        )

    def test_user_errors_reach_the_user_unchanged(self, stack: KitStack) -> None:
        """A failing tool gives the same outcome (answer, or exception type and message) with
        and without the adapter.

        Troubleshooting: never catch, wrap or swallow exceptions raised by user code or the
        framework; observe them in callbacks only.
        """
        if not self.supports_tools:
            pytest.skip("the sample agent has no tool")
        bare = stack.run(self.make_agent(), [kit_task(0, "tool_error")])[0]
        with self.new_adapter():
            hooked = stack.run(self.make_agent(), [kit_task(0, "tool_error")])[0]
        assert _outcome(hooked) == _outcome(bare)

    def test_adapter_failure_never_breaks_the_agent(
        self, stack: KitStack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """When recording fails inside the adapter, the agent's run goes on and succeeds; the
        failure is logged on ``fulmen.adapters.<framework>``.

        Troubleshooting: run every hook body under ``Adapter.guard``.
        """

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("injected adapter failure")

        bare = stack.run(self.make_agent(), [kit_task(0)])[0]
        monkeypatch.setattr(EpisodeContext, "annotate", broken)
        adapter = self.new_adapter().attach()
        try:
            with caplog.at_level(logging.ERROR, logger=f"fulmen.adapters.{adapter.framework}"):
                result = stack.run(self.make_agent(), [kit_task(0)])[0]
        finally:
            adapter.detach()
        assert result.episode.status is EpisodeStatus.SUCCEEDED, result.episode.error
        assert result.output == bare.output
        assert adapter.failures >= 1
        assert any("injected adapter failure" in (r.exc_text or "") for r in caplog.records), (
            "the adapter's failure was not logged with its traceback"
        )

    def test_model_for_points_at_the_episode(
        self, stack: KitStack, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``adapter_class.model_for(ctx, model="policy", **kwargs)`` returns the framework's
        model pointed at the episode: one call made with it is one transition of that episode.
        It refuses a ``base_url`` of the caller's, and the sample agent gets its model from it.

        Troubleshooting: build the model with ``ctx.base_url`` and ``ctx.api_key``, check
        ``kwargs`` with ``Adapter._refuse_episode_settings``, and build the sample agent's
        model with ``model_for``.
        """
        cls = self.adapter_class
        parameters = list(inspect.signature(cls.model_for).parameters.values())
        assert [p.name for p in parameters[:2]] == ["ctx", "model"], parameters
        assert parameters[1].default == DEFAULT_MODEL

        def probe(task: Task, ctx: EpisodeContext) -> object:
            return self.call_model(cls.model_for(ctx, MODEL))

        result = stack.run(probe, [kit_task(0)])[0]
        assert result.episode.status is EpisodeStatus.SUCCEEDED, result.episode.error
        (call,) = self._framework_transitions(stack, result)
        assert call.trainable, "the call through model_for has no exact token ids"
        elsewhere = EpisodeContext(episode_id="kit-elsewhere", gateway_url="http://127.0.0.1:9")
        with pytest.raises(AdapterError, match="base_url"):
            cls.model_for(elsewhere, MODEL, base_url="http://127.0.0.1:9/v1")

        built_for: list[str] = []
        original = cls.model_for

        def spy(_cls: type[Adapter], ctx: EpisodeContext, *args: Any, **kwargs: Any) -> object:
            built_for.append(ctx.episode_id)
            return original(ctx, *args, **kwargs)

        monkeypatch.setattr(cls, "model_for", classmethod(spy))
        sample = stack.run(self.make_agent(), [kit_task(1)])[0]
        assert sample.episode.status is EpisodeStatus.SUCCEEDED, sample.episode.error
        assert built_for and set(built_for) == {sample.episode.id}, (
            "the sample agent must get its model from model_for(ctx) of its own episode"
        )

    def test_one_attached_instance_per_framework(self, stack: KitStack) -> None:
        """While one instance is attached, attaching a second raises ``AdapterError`` and
        changes nothing (the first keeps recording, once per call); after the first detaches,
        the second attaches.

        Troubleshooting: keep no "one adapter" rule of your own; ``Adapter.attach`` enforces
        it per ``framework`` before ``_attach`` runs.
        """
        first = self.new_adapter().attach()
        second = self.new_adapter()
        try:
            state = self.framework_state()
            with pytest.raises(AdapterError, match=f"another {type(first).__name__} is attached"):
                second.attach()
            assert not second.attached
            second.detach()  # not attached: changes nothing
            assert self.framework_state() == state
            result = stack.run(self.make_agent(), [kit_task(0)])[0]
            self._check_episode(stack, result, first)
        finally:
            first.detach()
        with second:
            result = stack.run(self.make_agent(), [kit_task(1)])[0]
            self._check_episode(stack, result, second)

    def test_missing_framework_names_the_install_line(self) -> None:
        """Importing the adapter's package where its framework is missing raises an
        ``ImportError`` whose message has the exact ``pip install`` / ``uv add`` line.

        Troubleshooting: set ``requirement`` on the adapter class and call
        ``requirement.check()`` in the package's ``__init__`` before any framework import.
        """
        requirement = self.adapter_class.requirement
        requirement.check()  # the framework is installed here
        package = self.adapter_class.__module__.partition(".")[0]
        message = import_error_without(package, requirement.modules)
        for line in (f"pip install {requirement.package}", f"uv add {requirement.package}"):
            assert line in message, f"the ImportError does not say {line!r}: {message}"

    def test_no_overrides_DO_NOT_OVERRIDE(self) -> None:
        """No standard test is deleted, or overridden without ``pytest.mark.xfail(reason=...)``."""
        for name, base in vars(AdapterConformanceTests).items():
            if not name.startswith("test_"):
                continue
            mine = getattr(type(self), name, None)
            assert mine is not None, f"standard test {name} was deleted"
            if mine is base:
                continue
            marks = getattr(mine, "pytestmark", [])
            reasons = [m.kwargs.get("reason") for m in marks if m.name == "xfail"]
            assert any(reasons), (
                f"standard test {name} is overridden without @pytest.mark.xfail(reason=...)"
            )


def _tool_results(transitions: Sequence[Transition]) -> list[tuple[int, Mapping[str, Any]]]:
    """``(seq, result)`` of every lookup tool result, in call order."""
    return [
        (t.seq, item)
        for t in transitions
        for item in t.metadata.get("tool_results", ())
        if item.get("name") == TOOL_NAME
    ]


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _outcome(result: EpisodeResult) -> tuple[object, ...]:
    """What the user sees of a run: the answer, or the error's type and message. UUIDs in
    the error are masked: frameworks add per-run ids to it (LangGraph notes "During task with
    name 'tools' and id '<uuid>'"), which differ between any two runs."""
    episode = result.episode
    error = _UUID.sub("<uuid>", episode.error) if episode.error is not None else None
    return (episode.status, episode.termination, error, result.output)
