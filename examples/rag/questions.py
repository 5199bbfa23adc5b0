"""Questions about the world of :mod:`examples.rag.corpus`, with answers and the searches that
find them.

Single-hop questions are answered by the document of the entity they name ("Where is Vorna
Kell from?": search ``Vorna Kell``). Multi-hop questions need a second search for the entity
the first document names ("In which region is the hometown of Vorna Kell?": search ``Vorna
Kell``, read ``Duskmoor``, search ``Duskmoor``, read the region). Every template has three
phrasings; each question uses one of them, chosen by a seeded draw.

The split is by *root entity* (the entity a question names): a seeded fifth of the people,
towns and guilds are held out, and every question about them is held-out; no training question
names a held-out entity (the corpus itself is shared: it is what the agent searches).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypedDict

from examples.rag.corpus import Guild, Person, Town, World, default_world

__all__ = ["TEMPLATES", "Level", "Question", "Template", "make_questions", "make_splits"]

Level = Literal["single", "multi"]
Root = Literal["person", "town", "guild"]
Entity = Person | Town | Guild


@dataclass(frozen=True, slots=True)
class Template:
    """A question template over one kind of root entity."""

    name: str
    level: Level
    root: Root
    phrasings: tuple[str, str, str]
    """``{e}`` is the root entity's name."""
    hops: Callable[[World, Entity], tuple[str, ...]]
    """The queries that find the answer, in order (the root's name, then the bridge's)."""
    answer: Callable[[World, Entity], str]


def _p(e: Entity) -> Person:
    if not isinstance(e, Person):
        raise TypeError(f"expected a person, got {e!r}")
    return e


def _t(e: Entity) -> Town:
    if not isinstance(e, Town):
        raise TypeError(f"expected a town, got {e!r}")
    return e


def _g(e: Entity) -> Guild:
    if not isinstance(e, Guild):
        raise TypeError(f"expected a guild, got {e!r}")
    return e


def _one(w: World, e: Entity) -> tuple[str, ...]:
    return (e.name,)


TEMPLATES: tuple[Template, ...] = (
    Template("hometown", "single", "person",
             ("Where is {e} from?", "Which town is {e} from?", "What is the hometown of {e}?"),
             _one, lambda w, e: _p(e).hometown),
    Template("occupation", "single", "person",
             ("What does {e} do?", "What is the job of {e}?", "What is {e}'s trade?"),
             _one, lambda w, e: _p(e).occupation),
    Template("guild", "single", "person",
             ("Which guild is {e} in?", "What guild does {e} belong to?",
              "Name the guild of {e}."),
             _one, lambda w, e: _p(e).guild),
    Template("region", "single", "town",
             ("In which region is {e}?", "What region is {e} in?", "Where does {e} lie?"),
             _one, lambda w, e: _t(e).region),
    Template("founded", "single", "town",
             ("When was {e} founded?", "In what year was {e} founded?",
              "What year did {e} begin?"),
             _one, lambda w, e: str(_t(e).founded)),
    Template("seat", "single", "guild",
             ("Where is the {e} seated?", "In which town is the {e}?",
              "What town hosts the {e}?"),
             _one, lambda w, e: _g(e).seat),
    Template("founder", "single", "guild",
             ("Who founded the {e}?", "Who started the {e}?", "Name the founder of the {e}."),
             _one, lambda w, e: _g(e).founder),
    Template("home_region", "multi", "person",
             ("In which region is the hometown of {e}?", "What region is {e}'s hometown in?",
              "{e} is from a town in which region?"),
             lambda w, e: (e.name, _p(e).hometown),
             lambda w, e: w.town(_p(e).hometown).region),
    Template("home_founded", "multi", "person",
             ("When was the hometown of {e} founded?", "In what year was {e}'s town founded?",
              "{e} is from a town founded in which year?"),
             lambda w, e: (e.name, _p(e).hometown),
             lambda w, e: str(w.town(_p(e).hometown).founded)),
    Template("guild_seat", "multi", "person",
             ("Where is the guild of {e} seated?", "In which town is {e}'s guild?",
              "{e}'s guild is seated in which town?"),
             lambda w, e: (e.name, _p(e).guild),
             lambda w, e: w.guild(_p(e).guild).seat),
    Template("guild_founder", "multi", "person",
             ("Who founded the guild of {e}?", "Who started {e}'s guild?",
              "Name the founder of {e}'s guild."),
             lambda w, e: (e.name, _p(e).guild),
             lambda w, e: w.guild(_p(e).guild).founder),
)
"""Every template: seven single-hop, four multi-hop."""


class Question(TypedDict):
    """One question (a task's data)."""

    id: str
    """Stable id: ``rag-{template}-{root entity}``."""
    question: str
    answer: str
    level: Level
    template: str
    root: str
    """The name of the entity the question is about (what the split is by)."""
    hops: list[str]
    """The queries that find the answer, in order."""
    kind: Root
    """What kind of entity the answer's template starts from."""


def _roots(world: World, root: Root) -> tuple[Entity, ...]:
    return {"person": world.people, "town": world.towns, "guild": world.guilds}[root]


def make_questions(world: World, *, seed: int = 0) -> list[Question]:
    """Every template over every root entity of its kind, one seeded phrasing each."""
    rng = random.Random(f"rag-questions:{seed}")
    out: list[Question] = []
    for template in TEMPLATES:
        for entity in _roots(world, template.root):
            text = rng.choice(template.phrasings).format(e=entity.name)
            out.append(Question(
                id=f"rag-{template.name}-{entity.name.replace(' ', '_')}",
                question=text,
                answer=template.answer(world, entity),
                level=template.level,
                template=template.name,
                root=entity.name,
                hops=list(template.hops(world, entity)),
                kind=template.root,
            ))
    return out


def held_out_roots(world: World, *, seed: int = 0, fraction: float = 0.2) -> set[str]:
    """The names of the held-out root entities: a seeded ``fraction`` of each kind."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    held: set[str] = set()
    for root in ("person", "town", "guild"):
        names = [e.name for e in _roots(world, root)]
        random.Random(f"rag-split:{seed}:{root}").shuffle(names)
        held.update(names[: math.ceil(fraction * len(names))])
    return held


def make_splits(
    world: World | None = None, *, seed: int = 0, fraction: float = 0.2
) -> tuple[list[Question], list[Question]]:
    """``(train, held_out)``: every question, split by root entity (see the module docstring).

    Deterministic given ``seed``.
    """
    world = world or default_world()
    held = held_out_roots(world, seed=seed, fraction=fraction)
    questions = make_questions(world, seed=seed)
    return ([q for q in questions if q["root"] not in held],
            [q for q in questions if q["root"] in held])
