"""The retrieval-augmented QA example: a deterministic corpus and question set, a split without
leakage, BM25 that finds every hop's document, F1 / exact match, the Agents SDK agent against
the real gateway (bad tool arguments are an observation; multi-hop searches twice), and the
smoke run."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from _smoke import REPO, run_smoke
from fulmen import Task
from fulmen_local.model.tokenizer import build_tokenizer
from fulmen_testkit import MODEL, KitStack
from fulmen_testkit.vllm_double.generation import RequestParams

if str(REPO) not in sys.path:  # ``examples`` is a top-level package of the repository
    sys.path.insert(0, str(REPO))

from examples.rag import agent as example
from examples.rag.corpus import SearchIndex, build_world, default_index, default_world
from examples.rag.model import render_demo
from examples.rag.questions import TEMPLATES, make_questions, make_splits
from examples.rag.scoring import answer_text, exact_match, f1

# -- corpus and questions ----------------------------------------------------------------------


def test_corpus_is_deterministic_from_its_seed() -> None:
    world = default_world()
    assert build_world(seed=0) == world
    assert build_world(seed=1).documents != world.documents
    docs = world.documents
    assert len(docs) == 300 and len({d.id for d in docs}) == 300
    assert len({d.title for d in docs}) == 300  # every entity has one name, used once
    assert max(len(d.text) for d in docs) <= 64  # short: a 512-token character model reads it
    assert make_questions(world) == make_questions(build_world(seed=0))


def test_split_is_deterministic_and_shares_no_root_entity_or_question() -> None:
    train, held_out = make_splits(seed=0)
    assert (train, held_out) == make_splits(seed=0)
    assert held_out != make_splits(seed=1)[1]
    assert not {q["root"] for q in train} & {q["root"] for q in held_out}
    assert not {q["question"] for q in train} & {q["question"] for q in held_out}
    ids = [q["id"] for q in train + held_out]
    assert len(ids) == len(set(ids))
    assert {q["template"] for q in train} == {t.name for t in TEMPLATES}
    assert {q["template"] for q in held_out} == {t.name for t in TEMPLATES}
    assert 0.15 < len(held_out) / (len(train) + len(held_out)) < 0.25
    evals = example.eval_tasks()
    assert len(evals) == example.EVAL_SIZE and evals == example.eval_tasks()
    assert {q["id"] for q in evals} <= {q["id"] for q in held_out}
    assert sum(q["level"] == "multi" for q in evals) == example.EVAL_SIZE // 2
    # varied phrasing: every template's three phrasings are asked somewhere
    for template in TEMPLATES:
        asked = {q["question"].replace(q["root"], "{e}") for q in train + held_out
                 if q["template"] == template.name}
        assert asked == set(template.phrasings), template.name


def test_bm25_finds_every_hop_and_the_answer_is_in_the_last_document() -> None:
    index = default_index()
    for q in make_splits(seed=0)[0] + make_splits(seed=0)[1]:
        found = [index.ranked(hop, k=1) for hop in q["hops"]]
        assert all(len(f) == 1 for f in found), q["id"]
        assert [f[0].title for f in found] == q["hops"], q["id"]
        assert q["answer"] in found[-1][0].text, q["id"]
        if q["level"] == "multi":  # the bridge entity is read off the first document
            assert q["hops"][1] in found[0][0].text, q["id"]


def test_search_tool_text_and_queries_without_a_match() -> None:
    world = default_world()
    person = world.people[0]
    assert example.corpus.search(person.name) == default_index().search(person.name)
    assert example.corpus.search(person.name).startswith(f"{person.name}: ")
    assert example.corpus.search(person.name.lower() + "?!").startswith(person.name)
    for nothing in ("", "   ", "zzqx", "the of"):
        assert example.corpus.search(nothing) == "no results"
    small = SearchIndex(world.documents[:3])
    assert small.ranked(world.towns[0].name, k=10)[0].title == world.towns[0].name
    assert len(small.ranked(world.towns[0].name, k=10)) <= 3


def test_demonstrations_fit_the_context() -> None:
    tokenizer = build_tokenizer()
    train, held_out = make_splits(seed=0)
    longest = max(len(render_demo(tokenizer, q).input_ids) for q in train + held_out)
    # the final answer's prompt plus its max_tokens fits the 512-token context
    assert longest + example.MAX_TOKENS - 10 < 512


# -- scoring ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "gold", "f1_score", "em"),
    [
        ("Answer: Vell", "Vell", 1.0, 1.0),
        ("answer:  the VELL.", "Vell", 1.0, 1.0),  # case, articles, punctuation
        ("Vell", "Vell", 1.0, 1.0),  # no "Answer:": the whole text
        ("Answer: Vorna Dask", "Vorna Kell", 0.5, 0.0),
        ("Answer: Kell Vorna", "Vorna Kell", 1.0, 0.0),  # same tokens, other order
        ("Answer: Vorna Kell of Vell", "Vorna Kell", 2 * (2 / 4 * 1) / (2 / 4 + 1), 0.0),
        ("Answer: 1204", "1204", 1.0, 1.0),
        ("Answer: 1205", "1204", 0.0, 0.0),
        ("I think Answer: Drum. Answer: Vell", "Vell", 1.0, 1.0),  # the last answer counts
        ("Answer:", "Vell", 0.0, 0.0),
        ("", "Vell", 0.0, 0.0),
        (None, "Vell", 0.0, 0.0),
        ("Answer: the", "the", 0.0, 0.0),  # nothing left: no answer
    ],
)
def test_f1_and_exact_match(output: str | None, gold: str, f1_score: float, em: float) -> None:
    assert f1(output, gold) == pytest.approx(f1_score)
    assert exact_match(output, gold) == em


def test_answer_text() -> None:
    assert answer_text("Answer: Vell") == "Vell"
    assert answer_text(None) == "" and answer_text("plain") == "plain"


# -- the agent against the real gateway (the vLLM test double upstream) -----------------------


def _call(query: Any) -> str:
    return "<tool_call>\n" + json.dumps({"name": "search", "arguments": query}) + "\n</tool_call>"


def _run(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, responder: Any,
         question: dict[str, Any]) -> tuple[Any, list[Any]]:
    monkeypatch.setattr(example, "MODEL_NAME", MODEL)
    try:
        with KitStack(tmp_path, responder=responder) as stack:
            result = stack.run(example.solve, [Task(id=question["id"], data=question)])[0]
            transitions = stack.store.transitions(result.episode.id)
    finally:
        example.ADAPTER.detach()
    return result, transitions


def _script(queries: Sequence[Any], answer: str) -> Any:
    def responder(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]],
                  params: RequestParams) -> str:
        turn = sum(m.get("role") == "assistant" for m in messages)
        return _call(queries[turn]) if turn < len(queries) else f"Answer: {answer}"
    return responder


def test_agent_answers_a_multi_hop_question_with_two_searches(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    question = next(q for q in example.eval_tasks() if q["level"] == "multi")
    responder = _script([{"query": h} for h in question["hops"]], question["answer"])
    result, transitions = _run(tmp_path, monkeypatch, responder, question)
    assert result.ok and result.episode.error is None
    assert [t.agent for t in transitions] == ["researcher"] * 3
    assert all(t.metadata.get("framework") == "openai-agents" for t in transitions)
    outputs = [r["output"] for t in transitions for r in t.metadata.get("tool_results", ())]
    assert outputs == [example.corpus.search(h) for h in question["hops"]]
    assert f1(result.output, question["answer"]) == 1.0
    assert transitions[0].request_messages[0] == {"role": "system",
                                                  "content": example.SYSTEM_PROMPT}


def test_malformed_tool_arguments_are_an_observation(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search with the wrong argument, then one whose query is not a string: the model sees
    a short error each time, and the episode ends normally with its answer."""
    question = example.eval_tasks()[0]
    responder = _script([{"q": "Vell"}, {"query": ["not", "text"]}], "nothing")
    result, transitions = _run(tmp_path, monkeypatch, responder, question)
    assert result.ok and result.episode.error is None
    assert result.output == "Answer: nothing"
    assert [len(t.metadata["tool_results"]) for t in transitions[:2]] == [1, 1]
    seen = [m["content"] for m in transitions[-1].request_messages if m["role"] == "tool"]
    assert seen == ["error: search needs a query"] * 2


def test_too_many_searches_or_an_unknown_tool_end_without_an_answer(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    question = example.eval_tasks()[0]
    always = _script([{"query": question["root"]}] * 5, "never")
    result, _ = _run(tmp_path, monkeypatch, always, question)
    assert result.ok and result.output is None

    def unknown(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]],
                params: RequestParams) -> str:
        return "<tool_call>\n" + json.dumps({"name": "browse", "arguments": {}}) + "\n</tool_call>"

    result, _ = _run(tmp_path / "unknown", monkeypatch, unknown, question)
    assert result.ok and result.output is None


# -- the smoke run ---------------------------------------------------------------------------


@pytest.mark.slow
def test_smoke_config_trains(tmp_path: Any) -> None:
    run = run_smoke("rag", tmp_path)
    assert [r["step"] for r in run.train] == [1, 2]
    assert all(r["failed_episodes"] == 0 and r["episodes"] == 16 for r in run.train)
    assert run.evals and all(r["episodes"] == 8 for r in run.evals)
    assert run.transitions
    assert all(t.agent == "researcher" for t in run.transitions)
    assert all(t.metadata.get("framework") == "openai-agents" for t in run.transitions)
