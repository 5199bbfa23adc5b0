"""fulmen-verl's :class:`~fulmen_verl.policy.VerlPolicy` passes the backend conformance kit
(``fulmen_testkit.BackendConformanceTests``) with real parts: verl 0.9.1's FSDP2 actor over
gloo and vLLM's CPU build, on the session's one started job (``conftest.verl_session``);
every policy starts from the same initial checkpoint, loaded through verl's own load path."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from fulmen.train import Policy
from fulmen_testkit import BackendConformanceTests

pytestmark = pytest.mark.slow


class TestVerlPolicyConformance(BackendConformanceTests):
    reports_version: ClassVar[bool] = False  # vLLM sends no X-Fulmen-Policy-Version

    @pytest.fixture(autouse=True)
    def _session(self, verl_session: Any) -> None:
        self.session = verl_session

    def make_policy(self, directory: Path) -> Policy:
        return self.session.policy()
