"""Which calls of an episode train, and why the others are masked: the episode's group credited
again with the run's credit assigner.

The store records what happened, not what the trainer did with it; this module recomputes it
the way the training loop does (:meth:`~fulmen.credit.base.CreditAssigner.assign` on the
episode's whole group), so the dashboard can show each call as trained (with its advantage) or
masked (with the :class:`~fulmen.credit.base.SkipReason`). The assigner comes from the run's
config (``fulmen dashboard --config TRAIN.TOML``: ``[credit]``, e.g. ``agents = ["solver"]``),
or is the default ``grpo`` over every agent.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fulmen.credit.base import CreditAssigner, GroupCredit, SkipReason
from fulmen.credit.config import assigner_from_config
from fulmen.protocol import Episode, EpisodeRecord
from fulmen.store.base import Store

if TYPE_CHECKING:
    from fulmen.config import TrainConfig

__all__ = ["CallCredit", "CreditReplay", "CreditSource", "EpisodeCredit"]

_EXPLAIN: Mapping[SkipReason, str] = {
    SkipReason.FAILED_EPISODE: "the episode failed: failed episodes never train (never scored 0)",
    SkipReason.AGENT_NOT_SELECTED: "its agent is not selected by [credit] agents",
    SkipReason.NO_REWARD: "no counted reward reaches this agent's calls",
    SkipReason.NO_SIGNAL: "every episode of its group scored the same: no signal, dropped",
    SkipReason.UNTRAINABLE: "no token ids were recorded for it: never trainable",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditSource:
    """The credit assigner the dashboard replays, and where it came from."""

    assigner: CreditAssigner
    """The assigner (its ``agents`` option is the selection shown)."""
    origin: str
    """Where it came from, for the page: ``[credit] of train.toml`` or the default."""

    @classmethod
    def default(cls) -> CreditSource:
        """``grpo`` over every agent: the loop's default ``[credit]``."""
        return cls(
            assigner=assigner_from_config("grpo", {}),
            origin="default [credit] (grpo, every agent; pass --config for the run's)",
        )

    @classmethod
    def from_config(cls, path: str | Path) -> CreditSource:
        """The ``[credit]`` table of a training config file.

        Raises:
            fulmen.config.ConfigError: the file cannot be read or is not a valid config.
        """
        from fulmen.config import load_config

        return cls.of(load_config(path), origin=f"[credit] of {path}")

    @classmethod
    def of(cls, config: TrainConfig, *, origin: str) -> CreditSource:
        """The ``[credit]`` of a parsed config; ``origin`` says where it came from.

        Raises:
            fulmen.config.ConfigError: an unknown assigner or option.
        """
        return cls(
            assigner=assigner_from_config(config.credit.assigner, config.credit.options),
            origin=origin,
        )

    @property
    def agents(self) -> list[str] | None:
        """The selected agent names (None: every agent, or a predicate)."""
        selected = self.assigner.agents
        return None if selected is None or callable(selected) else list(selected)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallCredit:
    """One call's fate in the batch."""

    trains: bool
    """True when the call reaches a batch (its response tokens are trained on)."""
    advantage: float | None
    """Its advantage when it trains."""
    skip_reason: str | None
    """The :class:`~fulmen.credit.base.SkipReason` value when it is masked."""
    explanation: str
    """One sentence for the page."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EpisodeCredit:
    """The credit of one episode's calls, by ``seq`` (empty with a ``note`` when none applies)."""

    calls: Mapping[int, CallCredit]
    group_key: str | None
    note: str | None = None
    """Why no call has a credit (no group, credit failed), else None."""


def _credit_of(group: GroupCredit) -> dict[str, dict[int, CallCredit]]:
    out: dict[str, dict[int, CallCredit]] = {}
    for c in group.transitions:
        if c.advantage is not None:
            credit = CallCredit(
                trains=True,
                advantage=c.advantage,
                skip_reason=None,
                explanation=f"trains with advantage {c.advantage:+.3g} (compared in {c.group_key})",
            )
        else:
            reason = c.skip_reason or SkipReason.NO_SIGNAL
            credit = CallCredit(
                trains=False, advantage=None, skip_reason=reason.value, explanation=_EXPLAIN[reason]
            )
        out.setdefault(c.episode.id, {})[c.transition.seq] = credit
    return out


class CreditReplay:
    """Credits episodes' groups again with one :class:`CreditSource` (not thread-safe).

    Credits of groups whose episodes have all finished are cached (a finished group never
    changes), the last ``cache_size`` groups.
    """

    def __init__(self, source: CreditSource, *, cache_size: int = 256) -> None:
        self.source = source
        self._size = max(int(cache_size), 1)
        self._cache: OrderedDict[tuple[str, int], dict[str, dict[int, CallCredit]]] = OrderedDict()

    def episode(self, store: Store, episode: Episode) -> EpisodeCredit:
        """Credit ``episode``'s group; its calls' credits by ``seq``.

        Episodes without a ``group_id`` (held-out evaluation, a bare gateway) are never trained
        by the loop: they get no credit and a note. An assigner error (a group the trainer
        would also refuse) becomes the note.
        """
        if episode.group_id is None:
            return EpisodeCredit(
                calls={}, group_key=None, note="not in a training group (no group id): never trained"
            )
        group = store.list_episodes(group_id=episode.group_id)
        finished = all(e.status.finished for e in group)
        key = (episode.group_id, len(group))
        credits = self._cache.get(key) if finished else None
        if credits is None:
            records: list[EpisodeRecord] = store.records([e.id for e in group])
            try:
                credits = _credit_of(self.source.assigner.assign(records))
            except ValueError as exc:
                return EpisodeCredit(calls={}, group_key=episode.group_id, note=f"no credit: {exc}")
            if finished:
                self._cache[key] = credits
                while len(self._cache) > self._size:
                    self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return EpisodeCredit(calls=credits.get(episode.id, {}), group_key=episode.group_id)
