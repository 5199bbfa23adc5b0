"""The kit's guard: a standard test may not be deleted or overridden without an xfail reason."""

from __future__ import annotations

import pytest
from fulmen.adapters import Adapter
from fulmen_testkit import AdapterConformanceTests


class _Overrides(AdapterConformanceTests):
    adapter_class = Adapter
    expected_agents = frozenset({"a"})

    def test_calls_become_transitions_with_structure(self, stack: object, adapter: object) -> None:
        pass


class _Deletes(AdapterConformanceTests):
    adapter_class = Adapter
    expected_agents = frozenset({"a"})
    test_concurrent_episodes_never_mix = None  # type: ignore[assignment]


class _XfailWithReason(AdapterConformanceTests):
    adapter_class = Adapter
    expected_agents = frozenset({"a"})

    @pytest.mark.xfail(reason="the framework cannot stream tool calls")
    def test_streaming_calls_are_captured(self, stack: object, adapter: object) -> None:
        raise AssertionError


class _XfailWithoutReason(AdapterConformanceTests):
    adapter_class = Adapter
    expected_agents = frozenset({"a"})

    @pytest.mark.xfail
    def test_streaming_calls_are_captured(self, stack: object, adapter: object) -> None:
        raise AssertionError


def test_override_without_xfail_is_refused() -> None:
    with pytest.raises(
        AssertionError, match="test_calls_become_transitions_with_structure is overridden"
    ):
        _Overrides().test_no_overrides_DO_NOT_OVERRIDE()


def test_deleted_test_is_refused() -> None:
    with pytest.raises(AssertionError, match="test_concurrent_episodes_never_mix was deleted"):
        _Deletes().test_no_overrides_DO_NOT_OVERRIDE()


def test_xfail_needs_a_reason() -> None:
    _XfailWithReason().test_no_overrides_DO_NOT_OVERRIDE()
    with pytest.raises(AssertionError, match="without @pytest.mark.xfail"):
        _XfailWithoutReason().test_no_overrides_DO_NOT_OVERRIDE()


def test_make_agent_and_call_model_are_required() -> None:
    with pytest.raises(NotImplementedError, match="must implement make_agent"):
        _Overrides().make_agent()
    with pytest.raises(NotImplementedError, match="must implement call_model"):
        _Overrides().call_model(object())
