"""The adapter base class (life cycle, failure isolation, the join) and adapter discovery."""

from __future__ import annotations

import json
import logging
from importlib.metadata import EntryPoint
from typing import Any, ClassVar

import pytest
from fulmen.adapters import (
    DEFAULT_MODEL,
    Adapter,
    AdapterError,
    CallInfo,
    FrameworkRequirement,
    discover_adapters,
    episode_for_response,
)
from fulmen.adapters import discovery as discovery_module
from fulmen.cli import main
from fulmen.context import EpisodeContext, episode_scope
from fulmen.protocol import Annotation

registry: list[object] = []
"""The global hook registry of a minimal framework, as a framework would keep one."""


class ListAdapter(Adapter):
    """Registers one hook in :data:`registry`: enough to exercise the base class."""

    framework: ClassVar[str] = "toy"
    requirement: ClassVar[FrameworkRequirement] = FrameworkRequirement(
        package="fulmen-toy", modules=("colorsys",)
    )

    def _attach(self) -> None:
        registry.append(self)

    def _detach(self) -> None:
        registry.remove(self)

    @classmethod
    def model_for(cls, ctx: EpisodeContext, model: str = DEFAULT_MODEL, **kwargs: Any) -> object:
        cls._refuse_episode_settings(kwargs, ("api_key", "base_url"))
        return {"base_url": ctx.base_url, "model": model, **kwargs}


class BrokenAdapter(ListAdapter):
    """Fails while hooking: the base must not keep it as the framework's attached adapter."""

    def _attach(self) -> None:
        raise RuntimeError("framework refused the hook")


def test_attach_is_idempotent_and_detach_restores() -> None:
    adapter = ListAdapter()
    assert adapter.attach() is adapter
    adapter.attach()
    assert registry == [adapter] and adapter.attached
    adapter.detach()
    adapter.detach()
    assert registry == [] and not adapter.attached
    with ListAdapter() as scoped:
        assert registry == [scoped]
    assert registry == []


def test_one_attached_instance_per_framework() -> None:
    first = ListAdapter().attach()
    second = ListAdapter()
    try:
        with pytest.raises(AdapterError, match="another ListAdapter is attached in this process"):
            second.attach()
        assert registry == [first] and not second.attached
        second.detach()  # not attached: changes nothing
        assert registry == [first]
    finally:
        first.detach()
    with second:
        assert registry == [second]


def test_a_failed_attach_leaves_the_framework_free() -> None:
    with pytest.raises(RuntimeError, match="refused"):
        BrokenAdapter().attach()
    with ListAdapter() as adapter:
        assert registry == [adapter]


def test_model_for_refuses_the_episode_settings() -> None:
    ctx = EpisodeContext(episode_id="ep-a", gateway_url="http://127.0.0.1:9")
    assert ListAdapter.model_for(ctx, temperature=1) == {
        "base_url": ctx.base_url,
        "model": "policy",
        "temperature": 1,
    }
    with pytest.raises(AdapterError, match=r"ListAdapter.model_for\(\) sets api_key, base_url"):
        ListAdapter.model_for(ctx, base_url="x", api_key="y")


def test_requirement_names_the_install_line() -> None:
    ListAdapter.requirement.check()  # colorsys is there
    missing = FrameworkRequirement(package="fulmen-toy", modules=("colorsys", "no_such_mod_q"))
    with pytest.raises(ImportError) as caught:
        missing.check()
    message = str(caught.value)
    assert "fulmen_toy needs no_such_mod_q" in message
    assert "pip install fulmen-toy (or: uv add fulmen-toy)" in message


def test_guard_logs_counts_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    adapter = ListAdapter()
    with caplog.at_level(logging.ERROR, logger="fulmen.adapters.toy"), adapter.guard("on_end"):
        raise KeyError("broken hook")
    assert adapter.failures == 1
    (record,) = caplog.records
    assert "on_end" in record.getMessage() and "broken hook" in (record.exc_text or "")


def _ctx(episode_id: str, notes: list[Annotation]) -> EpisodeContext:
    return EpisodeContext(
        episode_id=episode_id, gateway_url="http://127.0.0.1:9", annotation_sink=notes.append
    )


def test_join_uses_the_response_id_not_the_current_episode() -> None:
    notes_a: list[Annotation] = []
    notes_b: list[Annotation] = []
    adapter = ListAdapter()
    with episode_scope(_ctx("ep-b", notes_b)), episode_scope(_ctx("ep-a", notes_a)):
        # the current episode is ep-a, but the response belongs to ep-b
        assert adapter.annotate(CallInfo(response_id="chatcmpl-ep-b.4", agent="x", node="n"))
        assert notes_a == []
        (note,) = notes_b
        assert (note.episode_id, note.request_id, note.framework) == ("ep-b", "ep-b.4", "toy")
        # not a fulmen id, or an episode not running here: skipped, never guessed
        assert not adapter.annotate(CallInfo(response_id="chatcmpl-abc123"))
        assert not adapter.annotate(CallInfo(response_id="chatcmpl-ep-z.0"))
    assert episode_for_response("chatcmpl-ep-b.4") is None  # the scopes ended


def test_episode_for_response_falls_back_to_the_episode_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FULMEN_EPISODE_URL", "http://127.0.0.1:9/rollout/ep-remote")
    found = episode_for_response("chatcmpl-ep-remote.2")
    assert found is not None and found[0].episode_id == "ep-remote" and found[1] == "ep-remote.2"
    assert episode_for_response("chatcmpl-ep-other.2") is None


def _fake_entry_points(monkeypatch: pytest.MonkeyPatch, *eps: EntryPoint) -> None:
    monkeypatch.setattr(discovery_module, "entry_points", lambda group: list(eps))


def test_discovery_isolates_broken_adapters(monkeypatch: pytest.MonkeyPatch) -> None:
    group = "fulmen.adapters"
    _fake_entry_points(
        monkeypatch,
        EntryPoint("toy", "tests_core_missing_module:Thing", group),
        EntryPoint("notanadapter", "json:dumps", group),
        EntryPoint("base", "fulmen.adapters.base:Adapter", group),
    )
    infos = {info.name: info for info in discover_adapters()}
    assert infos["base"].ok and infos["base"].adapter is Adapter
    assert not infos["toy"].ok and "missing module 'tests_core_missing_module'" in str(
        infos["toy"].error
    )
    assert "not a fulmen.adapters.Adapter subclass" in str(infos["notanadapter"].error)


def test_adapters_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    group = "fulmen.adapters"
    _fake_entry_points(monkeypatch, EntryPoint("base", "fulmen.adapters.base:Adapter", group))
    assert main(["adapters", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["name"] == "base" and row["ok"] is True
    _fake_entry_points(monkeypatch, EntryPoint("gone", "no_such_module_x:A", group))
    assert main(["adapters"]) == 1
    assert "FAILED: missing module 'no_such_module_x'" in capsys.readouterr().out
