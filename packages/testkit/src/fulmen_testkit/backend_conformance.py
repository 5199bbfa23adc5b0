"""The standard tests every fulmen training backend's :class:`~fulmen.train.Policy` passes.

A backend's test module subclasses :class:`BackendConformanceTests` and says how to build its
policy; it never re-implements a standard test::

    from fulmen_testkit import BackendConformanceTests

    class TestMyBackendConformance(BackendConformanceTests):
        def make_policy(self, directory: Path) -> Policy:
            return MyPolicy.build(TINY_MODEL, workdir=directory, lr=1e-2)

``make_policy`` returns a policy that serves version 0 of the **same** initial weights on every
call (the tests compare two policies), small enough to train in seconds. A learning rate large
enough to move greedy logprobs in one step (1e-2 for a tiny random model) makes the
save/load checks sharp.

The tests drive the policy as the step driver does (:mod:`fulmen.train.driver`): episodes run
through the real gateway and store (the sample agent is a plain HTTP client of its episode's
URL), their recorded calls become training rows (advantage +1 and -1 alternately), and the
policy's server is asked for greedy completions with logprobs to see what it serves.

Capability flags: ``reports_version`` (the server sends ``X-Fulmen-Policy-Version``, as the
embedded server does and vLLM does not). A standard test may only be overridden with
``@pytest.mark.xfail(reason=...)``, which ``test_no_overrides_DO_NOT_OVERRIDE`` enforces.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fulmen import Task
from fulmen.context import EpisodeContext
from fulmen.gateway import Gateway
from fulmen.protocol import Transition
from fulmen.rows import TrainingRow
from fulmen.runner import Runner
from fulmen.store import open_store
from fulmen.train import Policy, RolloutSampling
from fulmen.train.schema import UPDATE_KEYS, UPDATE_REQUIRED

__all__ = ["BackendConformanceTests"]

_TIMEOUT_S = 60.0
_PROMPT = [{"role": "user", "content": "What is 3 plus 4?"}]


def _post(url: str, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
        return json.loads(response.read()), dict(response.headers.items())


class BackendConformanceTests:
    """Base class of a backend's conformance tests. See the module docstring."""

    model_name: ClassVar[str] = "policy"
    """The model name the policy's server answers to."""
    max_tokens: ClassVar[int] = 8
    """Tokens per generated answer (keep it small: the tests generate a few dozen)."""
    reports_version: ClassVar[bool] = True
    """The server sends ``X-Fulmen-Policy-Version`` (the gateway records it on every call)."""

    # ----------------------------------------------------------------- what backends fill in

    def make_policy(self, directory: Path) -> Policy:
        """A fresh policy serving version 0 of the same initial weights on every call;
        ``directory`` is an empty scratch directory of its own. Required."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_policy()")

    # ----------------------------------------------------------------- fixtures and helpers

    @pytest.fixture
    def policy(self, tmp_path: Path) -> Iterator[Policy]:
        """A fresh policy, closed after the test."""
        made = self.make_policy(tmp_path / "policy")
        try:
            yield made
        finally:
            made.close()

    def _chat(self, policy: Policy, **extra: Any) -> tuple[dict[str, Any], dict[str, str]]:
        body = {"model": self.model_name, "messages": _PROMPT, "max_tokens": self.max_tokens, **extra}
        return _post(f"{policy.upstream_url}/v1/chat/completions", body)

    def _greedy_logprobs(self, policy: Policy) -> list[float]:
        """Logprobs of the greedy answer to the kit's prompt: what the policy serves."""
        body, _ = self._chat(policy, temperature=0.0, logprobs=True, seed=0)
        content = body["choices"][0]["logprobs"]["content"]
        return [float(item["logprob"]) for item in content]

    def _transitions(self, policy: Policy, directory: Path, tasks: int = 4) -> list[Transition]:
        """Run ``tasks`` x 2 episodes through a real gateway and store; their recorded calls."""
        model, max_tokens = self.model_name, self.max_tokens

        def agent(task: Task, ctx: EpisodeContext) -> str:
            messages = [{"role": "user", "content": str(task.data["question"])}]
            body = {"model": model, "messages": messages, "max_tokens": max_tokens}
            reply, _ = _post(f"{ctx.base_url}/chat/completions", body)
            return str(reply["choices"][0]["message"]["content"])

        directory.mkdir(parents=True, exist_ok=True)
        store = open_store(directory / "kit.db")
        gateway = Gateway(store, policy.upstream_url)
        gateway.start_in_thread()
        try:
            runner = Runner(gateway, concurrency=8, timeout_s=_TIMEOUT_S, max_attempts=1)
            tasks_ = [Task(id=f"kit-{i}", data={"question": f"What is {i} plus {i + 1}?"}) for i in range(tasks)]
            results = runner.run(
                agent, tasks_, group_size=2, group_prefix="kit",
                episode_metadata=RolloutSampling(temperature=1.0, seed=0, step_index=0),
            )
            assert all(r.ok for r in results), [r.episode.error for r in results if not r.ok]
            return [t for r in results for t in store.transitions(r.episode.id)]
        finally:
            gateway.stop_thread()
            store.close()

    @staticmethod
    def _rows(transitions: Sequence[Transition]) -> list[TrainingRow]:
        """One row per call with a response, advantage +1 and -1 alternately."""
        rows: list[TrainingRow] = []
        for t in transitions:
            n = len(t.response_token_ids)
            if n == 0 or t.response_logprobs is None:
                continue
            sign = 1.0 if len(rows) % 2 == 0 else -1.0
            rows.append(
                TrainingRow(
                    prompt_ids=t.prompt_token_ids, response_ids=t.response_token_ids,
                    response_mask=(1,) * n, rollout_logprobs=t.response_logprobs,
                    advantages=(sign,) * n, group_id="kit", episode_id=t.episode_id, seqs=(t.seq,),
                )
            )
        assert len(rows) >= 2, "the policy generated empty answers only: no row to train on"
        return rows

    # ----------------------------------------------------------------- the standard tests

    def test_served_url_answers_chat_completions_in_vllm_wire_format(self, policy: Policy) -> None:
        """``{upstream_url}/v1/chat/completions`` answers like vLLM: ids, usage, token ids
        (``return_token_ids``) and per-token logprobs.

        Troubleshooting: the gateway forwards requests unchanged and records what this returns;
        compare the body with vLLM's OpenAI-compatible server (``prompt_token_ids`` at the top,
        ``token_ids`` per choice)."""
        body, _ = self._chat(policy, temperature=0.0, logprobs=True, return_token_ids=True)
        assert str(body["id"]).startswith("chatcmpl-") and body["object"] == "chat.completion"
        assert body["model"] == self.model_name
        [choice] = body["choices"]
        assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
        assert choice["finish_reason"] in ("stop", "length")
        usage = body["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert 0 < usage["completion_tokens"] <= self.max_tokens
        assert len(body["prompt_token_ids"]) == usage["prompt_tokens"]
        assert len(choice["token_ids"]) == usage["completion_tokens"]
        logprobs = [item["logprob"] for item in choice["logprobs"]["content"]]
        assert len(logprobs) == usage["completion_tokens"]
        assert all(math.isfinite(v) and v <= 0.0 for v in logprobs)

    def test_episodes_through_the_gateway_record_tokens_and_logprobs(
        self, policy: Policy, tmp_path: Path
    ) -> None:
        """Every call an episode makes through the gateway is recorded with the exact prompt
        and response token ids and one logprob per response token: what training rows need.

        Troubleshooting: the server must honour ``return_token_ids`` and ``logprobs`` that the
        gateway adds to each request."""
        transitions = self._transitions(policy, tmp_path / "episodes", tasks=2)
        assert len(transitions) == 4
        for t in transitions:
            assert t.prompt_token_ids and t.response_token_ids
            assert t.response_logprobs is not None
            assert len(t.response_logprobs) == len(t.response_token_ids)

    def test_publish_bumps_the_served_version(self, policy: Policy, tmp_path: Path) -> None:
        """``version`` is 0 until the first ``publish(v)``, then ``v``; the server reports it.

        Troubleshooting: ``publish`` must return only once the new version is being served."""
        assert policy.version == 0
        policy.publish(1)
        assert policy.version == 1
        policy.publish(2)
        assert policy.version == 2
        if self.reports_version:
            _, headers = self._chat(policy, temperature=0.0)
            assert headers.get("X-Fulmen-Policy-Version") == "2"
            [t, *_] = self._transitions(policy, tmp_path / "episodes", tasks=1)
            assert t.policy_version == 2

    def test_update_returns_the_schema_keys(self, policy: Policy, tmp_path: Path) -> None:
        """``update(rows)`` returns finite numbers under the metrics schema's names: every
        required key, and nothing un-namespaced outside the schema.

        Troubleshooting: rename the backend's own names to :mod:`fulmen.train.schema`'s in the
        backend (never in core); put metrics the schema lacks under ``<backend>/``."""
        metrics = policy.update(self._rows(self._transitions(policy, tmp_path / "episodes")))
        missing = [k for k in UPDATE_REQUIRED if k not in metrics]
        assert not missing, f"update() lacks {missing}"
        strays = sorted(k for k in metrics if "/" not in k and k not in UPDATE_KEYS)
        assert not strays, f"update() returned keys outside the schema: {strays}"
        assert not [k for k in metrics if k.startswith("batch/")], "batch/ is the driver's"
        assert all(math.isfinite(float(v)) for v in metrics.values())
        assert metrics["num_tokens"] > 0

    def test_update_is_served_only_after_publish(self, policy: Policy, tmp_path: Path) -> None:
        """An update changes nothing served until ``publish``; then the new weights are served.

        Troubleshooting: the server must generate from its own copy of the weights (never a
        half-updated model), and ``publish`` must copy every trained weight into it."""
        rows = self._rows(self._transitions(policy, tmp_path / "episodes"))
        before = self._greedy_logprobs(policy)
        policy.update(rows)
        assert self._greedy_logprobs(policy) == before
        policy.publish(1)
        assert self._greedy_logprobs(policy) != before

    def test_save_then_load_serves_the_same_policy(self, policy: Policy, tmp_path: Path) -> None:
        """A fresh policy that loads a saved one serves what it served.

        Troubleshooting: ``save`` must write every trained weight (the adapters, for LoRA);
        ``load`` must put them where ``publish`` reads them."""
        policy.update(self._rows(self._transitions(policy, tmp_path / "episodes")))
        policy.publish(1)
        served = self._greedy_logprobs(policy)
        saved = tmp_path / "checkpoint"
        saved.mkdir()
        policy.save(saved)
        other = self.make_policy(tmp_path / "other")
        try:
            other.load(saved)
            other.publish(1)
            assert other.version == 1
            assert self._greedy_logprobs(other) == pytest.approx(served, rel=1e-4, abs=1e-5)
        finally:
            other.close()

    def test_an_update_after_load_continues_the_run(self, policy: Policy, tmp_path: Path) -> None:
        """Update, save, update again: a fresh policy that loads the save and makes the same
        second update ends where the first did (optimizer and random state round-trip too).

        Troubleshooting: ``save`` must include the optimizer's state (Adam's moments) and
        ``load`` restore it; a fresh optimizer takes a different second step."""
        rows = self._rows(self._transitions(policy, tmp_path / "episodes"))
        first, second = rows[: len(rows) // 2], rows[len(rows) // 2 :]
        policy.update(first)
        saved = tmp_path / "checkpoint"
        saved.mkdir()
        policy.save(saved)
        straight = policy.update(second)
        policy.publish(2)
        expected = self._greedy_logprobs(policy)
        other = self.make_policy(tmp_path / "other")
        try:
            other.load(saved)
            resumed = other.update(second)
            other.publish(2)
            assert resumed["loss"] == pytest.approx(straight["loss"], rel=1e-4, abs=1e-6)
            assert self._greedy_logprobs(other) == pytest.approx(expected, rel=1e-4, abs=1e-5)
        finally:
            other.close()

    def test_close_stops_serving(self, tmp_path: Path) -> None:
        """After ``close`` the upstream URL no longer answers; closing twice is harmless.

        Troubleshooting: ``close`` must stop the server (and its threads) it started."""
        policy = self.make_policy(tmp_path / "policy")
        url = policy.upstream_url
        policy.close()
        policy.close()
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            _post(f"{url}/v1/chat/completions", {"model": self.model_name, "messages": _PROMPT})

    def test_no_overrides_DO_NOT_OVERRIDE(self) -> None:
        """No standard test is deleted, or overridden without ``pytest.mark.xfail(reason=...)``."""
        for name, base in vars(BackendConformanceTests).items():
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
