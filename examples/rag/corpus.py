"""The retrieval-augmented QA example's corpus: a fictional world, generated from a seed.

The world has regions, towns, guilds and people. Each town, guild and person is one short
document (the reference model reads characters and has a 512-token context, so a document is
one line of 30-60 characters)::

    Vorna Kell: painter from Duskmoor, Lantern Guild.
    Duskmoor: town in Vell, founded 1204.
    Lantern Guild: seated in Duskmoor, founded by Ilsa Brenn.

People point at towns and guilds, guilds at towns and people, so a question can need one
search ("Where is Vorna Kell from?") or two ("In which region is the hometown of Vorna Kell?").
Names are built from syllables; every name is unique, and no name is a word of another.

:class:`SearchIndex` ranks the documents with BM25 (``bm25s``). A document's title is indexed
three times (a plain field boost), so a search for a name finds that name's own document ahead
of the documents that merely mention it.

``python -m examples.rag.corpus`` prints the corpus.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from functools import cache
from typing import Literal

import bm25s

__all__ = [
    "OCCUPATIONS",
    "Document",
    "Guild",
    "Kind",
    "Person",
    "SearchIndex",
    "Town",
    "World",
    "build_world",
    "default_index",
    "default_world",
    "search",
]

Kind = Literal["person", "town", "guild"]

OCCUPATIONS: tuple[str, ...] = (
    "painter", "smith", "miller", "weaver", "potter", "baker", "mason", "tanner",
    "scribe", "healer", "sailor", "brewer",
)
"""What a person does (one word each)."""

_GUILD_WORDS: tuple[str, ...] = (
    "Lantern", "Anvil", "Thistle", "Raven", "Copper", "Willow", "Ember", "Harbor",
    "Falcon", "Granite", "Amber", "Hollow", "Silver", "Bramble", "Tide", "Ivory",
    "Cinder", "Marsh", "Oaken", "Quill", "Saffron", "Tallow", "Velvet", "Wren",
    "Juniper", "Flint", "Heron", "Lark", "Onyx", "Pewter", "Rowan", "Sable",
)

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
           "gr", "kr", "st", "th", "sh", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou")
_CODAS = ("", "", "n", "r", "l", "s", "th", "m", "k", "d")


@dataclass(frozen=True, slots=True)
class Town:
    """A town: ``{name}: town in {region}, founded {founded}.``"""

    name: str
    region: str
    founded: int


@dataclass(frozen=True, slots=True)
class Guild:
    """A guild: ``{name}: seated in {seat}, founded by {founder}.``"""

    name: str
    seat: str
    """The town it is seated in."""
    founder: str
    """A person's full name."""


@dataclass(frozen=True, slots=True)
class Person:
    """A person: ``{name}: {occupation} from {hometown}, {guild}.``"""

    name: str
    occupation: str
    hometown: str
    guild: str


@dataclass(frozen=True, slots=True)
class Document:
    """One document of the corpus."""

    id: str
    """``{kind}-{index}``, stable for a seed."""
    kind: Kind
    title: str
    """The entity's name (what the document is about)."""
    text: str
    """The whole document, title first, as the search tool shows it."""


@dataclass(frozen=True, slots=True)
class World:
    """A generated world and its documents."""

    regions: tuple[str, ...]
    towns: tuple[Town, ...]
    guilds: tuple[Guild, ...]
    people: tuple[Person, ...]

    @property
    def documents(self) -> tuple[Document, ...]:
        """Every document: towns, then guilds, then people."""
        docs = [Document(f"town-{i}", "town", t.name,
                         f"{t.name}: town in {t.region}, founded {t.founded}.")
                for i, t in enumerate(self.towns)]
        docs += [Document(f"guild-{i}", "guild", g.name,
                          f"{g.name}: seated in {g.seat}, founded by {g.founder}.")
                 for i, g in enumerate(self.guilds)]
        docs += [Document(f"person-{i}", "person", p.name,
                          f"{p.name}: {p.occupation} from {p.hometown}, {p.guild}.")
                 for i, p in enumerate(self.people)]
        return tuple(docs)

    def town(self, name: str) -> Town:
        """The town called ``name``."""
        return next(t for t in self.towns if t.name == name)

    def guild(self, name: str) -> Guild:
        """The guild called ``name``."""
        return next(g for g in self.guilds if g.name == name)


def _word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


def _unique_words(rng: random.Random, count: int, syllables: tuple[int, ...],
                  taken: set[str]) -> list[str]:
    words: list[str] = []
    while len(words) < count:
        word = _word(rng, rng.choice(syllables))
        if len(word) >= 3 and word.lower() not in taken:
            taken.add(word.lower())
            words.append(word)
    return words


def build_world(
    *, seed: int = 0, regions: int = 6, towns: int = 30, guilds: int = 30, people: int = 240
) -> World:
    """Generate a world, deterministically from ``seed``.

    Regions, towns, first names and surnames are distinct syllable words (no word is used
    twice, so a search term names one thing); each person's full name is unique.

    Raises:
        ValueError: more guilds than guild words, or a count below 1.
    """
    if min(regions, towns, guilds, people) < 1 or guilds > len(_GUILD_WORDS):
        raise ValueError(f"need 1 <= counts and guilds <= {len(_GUILD_WORDS)}")
    rng = random.Random(f"rag-world:{seed}")
    taken = {w.lower() for w in _GUILD_WORDS} | {"guild", "town", "member", "founded"}
    region_names = _unique_words(rng, regions, (1, 2), taken)
    town_names = _unique_words(rng, towns, (2,), taken)
    first_names = _unique_words(rng, max(8, people // 8), (2,), taken)
    surnames = _unique_words(rng, max(8, people // 6), (1, 2), taken)
    pairs = [f"{f} {s}" for f in first_names for s in surnames]
    rng.shuffle(pairs)
    if len(pairs) < people + guilds:
        raise ValueError("not enough distinct names")
    town_list = tuple(
        Town(name, rng.choice(region_names), rng.randint(1100, 1899)) for name in town_names
    )
    guild_names = [f"{w} Guild" for w in rng.sample(_GUILD_WORDS, guilds)]
    person_names, founders = pairs[:people], pairs[people : people + guilds]
    guild_list = tuple(
        Guild(name, rng.choice(town_names), founder)
        for name, founder in zip(guild_names, founders, strict=True)
    )
    person_list = tuple(
        Person(name, rng.choice(OCCUPATIONS), rng.choice(town_names), rng.choice(guild_names))
        for name in person_names
    )
    return World(tuple(region_names), town_list, guild_list, person_list)


class SearchIndex:
    """BM25 over a corpus; :meth:`search` returns the best documents' texts.

    Thread-safe (one lock around retrieval: episodes run their tools concurrently).
    """

    def __init__(self, documents: tuple[Document, ...]) -> None:
        """Index ``documents`` (title boosted: indexed three times, then the text)."""
        self.documents = documents
        indexed = [f"{d.title} {d.title} {d.text}" for d in documents]
        self._retriever = bm25s.BM25()
        self._retriever.index(bm25s.tokenize(indexed, show_progress=False), show_progress=False)
        self._vocab = set(self._retriever.vocab_dict)
        self._lock = threading.Lock()

    def ranked(self, query: str, k: int = 1) -> list[Document]:
        """The ``k`` best documents for ``query`` (fewer when fewer match any term; none for a
        query with no indexed term)."""
        terms = bm25s.tokenize([query], return_ids=False, show_progress=False)
        tokens = [t for t in terms[0] if t in self._vocab] if terms else []
        if not tokens:
            return []
        with self._lock:
            ids, scores = self._retriever.retrieve(
                [tokens], k=min(k, len(self.documents)), show_progress=False, n_threads=1
            )
        return [self.documents[int(i)] for i, s in zip(ids[0], scores[0], strict=True) if s > 0]

    def search(self, query: str, k: int = 1) -> str:
        """What the search tool returns: the best documents' texts, one a line, or
        ``no results``."""
        found = self.ranked(query, k)
        return "\n".join(d.text for d in found) if found else "no results"


@cache
def default_world() -> World:
    """The example's world (seed 0)."""
    return build_world(seed=0)


@cache
def default_index() -> SearchIndex:
    """The example's search index (built once per process)."""
    return SearchIndex(default_world().documents)


def search(query: str) -> str:
    """Search the example's corpus: the best document's text, or ``no results``."""
    return default_index().search(query, k=1)


if __name__ == "__main__":
    for doc in default_world().documents:
        print(doc.text)
