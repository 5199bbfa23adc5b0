"""The text-to-SQL example: a deterministic database, a leak-free question split, execution
accuracy that never raises on bad SQL, and the LangGraph agent against the test upstream
(bad SQL is an observation; a rewrite is scored on its final SQL)."""

from __future__ import annotations

import json
import sqlite3
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from _smoke import REPO, run_smoke
from fulmen import Task
from fulmen_testkit import MODEL, KitStack
from fulmen_testkit.vllm_double.generation import RequestParams

if str(REPO) not in sys.path:  # ``examples`` is a top-level package of the repository
    sys.path.insert(0, str(REPO))

from examples.text_to_sql import agent as example
from examples.text_to_sql.make_db import build_db
from examples.text_to_sql.questions import TEMPLATES, make_splits
from examples.text_to_sql.sql import (
    QueryResult,
    execution_match,
    extract_sql,
    has_order_by,
    run_query,
)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_db(tmp_path_factory.mktemp("sql") / "company.db", seed=0)


@pytest.fixture
def example_db(db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Points the example's ``ensure_db`` at the test database."""
    monkeypatch.setenv("FULMEN_SQL_DB", str(db))
    return db


def _dump(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


# -- database ------------------------------------------------------------------------------


def test_db_is_deterministic_from_its_seed(db: Path, tmp_path: Path) -> None:
    again = build_db(tmp_path / "again.db", seed=0)
    other = build_db(tmp_path / "other.db", seed=1)
    assert _dump(again) == _dump(db)
    assert _dump(other) != _dump(db)
    counts = {t: run_query(db, f"SELECT COUNT(*) FROM {t}").rows[0][0]
              for t in ("dept", "emp", "proj", "orders")}
    assert counts == {"dept": 8, "emp": 600, "proj": 90, "orders": 3000}
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write leaves no temporary file


# -- questions -----------------------------------------------------------------------------


def test_split_is_deterministic_and_shares_no_template_instance() -> None:
    train, held_out = make_splits(seed=0)
    assert (train, held_out) == make_splits(seed=0)
    assert held_out != make_splits(seed=1)[1]
    assert not {q["instance"] for q in train} & {q["instance"] for q in held_out}
    assert not {q["question"] for q in train} & {q["question"] for q in held_out}
    ids = [q["id"] for q in train + held_out]
    assert len(ids) == len(set(ids))
    # every template trains, every level is evaluated, every phrasing is asked
    assert {q["template"] for q in train} == {t.name for t in TEMPLATES}
    assert {q["level"] for q in held_out} == {"easy", "medium", "hard"}
    per_instance = Counter(q["instance"] for q in held_out)
    assert set(per_instance.values()) == {3}
    assert 0.2 < len(held_out) / (len(train) + len(held_out)) < 0.35


def test_every_gold_query_runs_and_every_mistake_differs_somewhere(db: Path) -> None:
    train, held_out = make_splits(seed=0)
    differs: Counter[str] = Counter()
    for q in train + held_out:
        gold = run_query(db, q["gold"])
        assert gold.ok, (q["id"], gold.error)
        wrong = run_query(db, q["wrong"])
        if not execution_match(gold, wrong, ordered=has_order_by(q["gold"])):
            differs[q["template"]] += 1
    assert set(differs) == {t.name for t in TEMPLATES}


# -- execution accuracy --------------------------------------------------------------------


def test_order_matters_only_with_order_by(db: Path) -> None:
    asc = run_query(db, "SELECT id FROM dept ORDER BY id")
    desc = run_query(db, "SELECT id FROM dept ORDER BY id DESC")
    assert asc.ok and desc.ok and asc.rows != desc.rows
    assert not execution_match(asc, desc, ordered=True)
    assert execution_match(asc, desc, ordered=False)
    assert has_order_by("select id from dept order  by id") and not has_order_by("SELECT 1")


def test_duplicates_count(db: Path) -> None:
    distinct = run_query(db, "SELECT DISTINCT city FROM dept")
    every = run_query(db, "SELECT city FROM dept")
    assert len(every.rows) > len(distinct.rows)
    assert not execution_match(every, distinct, ordered=False)
    assert execution_match(every, run_query(db, "SELECT city FROM dept ORDER BY name"),
                           ordered=False)


def test_floats_compare_rounded_and_integral_floats_as_ints(db: Path) -> None:
    assert run_query(db, "SELECT 2.0, 1.0/3").rows == ((2, 0.333333),)
    assert execution_match(run_query(db, "SELECT 2"), run_query(db, "SELECT 2.0"), ordered=False)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELEC name FROM emp", "syntax error"),
        ("SELECT nope FROM emp", "no such column"),
        ("SELECT 1 FROM nowhere", "no such table"),
        ("DELETE FROM emp", "readonly"),
        ("DROP TABLE emp", "readonly"),
        ("SELECT 1; SELECT 2", "one statement"),
        ("", "empty query"),
        ("SELECT '" + "x" * 2000 + "'", "longer than"),
    ],
)
def test_bad_sql_is_an_error_string_never_an_exception(db: Path, sql: str, message: str) -> None:
    result = run_query(db, sql)
    assert not result.ok and result.rows == ()
    assert result.error is not None and result.error.startswith("error:")
    assert message in result.error
    assert run_query(db, "SELECT COUNT(*) FROM emp").rows == ((600,),)  # nothing was written


def test_runaway_query_is_interrupted(db: Path) -> None:
    forever = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT MAX(i) FROM n"
    result = run_query(db, forever, max_instructions=200_000)
    assert result.error == "error: query took too long (interrupted)"
    cross = run_query(db, "SELECT COUNT(*) FROM orders a, orders b, orders c", max_seconds=0.2)
    assert cross.error is not None and "interrupted" in cross.error


def test_row_limit(db: Path) -> None:
    assert run_query(db, "SELECT id FROM orders", max_rows=3000).ok
    over = run_query(db, "SELECT id FROM orders", max_rows=100)
    assert over.error == "error: more than 100 rows"


def test_an_error_never_matches(db: Path) -> None:
    error = QueryResult(error="error: boom")
    empty = run_query(db, "SELECT name FROM dept WHERE city='Atlantis'")
    assert empty.ok and empty.rows == ()
    assert not execution_match(empty, error, ordered=False)
    assert not execution_match(error, error, ordered=False)


def test_final_answer_sql_extraction_and_score(example_db: Path) -> None:
    gold = "SELECT COUNT(*) FROM orders WHERE year=2021"
    assert extract_sql("```sql\nSELECT 1\n```") == "SELECT 1"
    assert extract_sql("The query is: select 1") == "select 1"
    assert extract_sql("no idea") is None and extract_sql(None) is None
    assert example.score(gold, gold) == 1.0
    assert example.score(gold, "SELECT COUNT(id) FROM orders WHERE 2021=year") == 1.0
    assert example.score(gold, "SELECT COUNT(*) FROM orders WHERE year=2020") == 0.0
    assert example.score(gold, "SELECT COUNT(*) FROM ordersz") == 0.0
    assert example.score(gold, "The answer is 12.") == 0.0


# -- the agent against the test upstream -----------------------------------------------------


def _run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, responder: Any = None, *, context: int = 512
) -> tuple[Any, list[Any]]:
    question = example.eval_tasks()[0]
    monkeypatch.setattr(example, "MODEL_NAME", MODEL)
    monkeypatch.setattr(example, "CONTEXT", context)
    try:
        with KitStack(tmp_path, responder=responder) as stack:
            result = stack.run(example.solve, [Task(id=question["id"], data=question)])[0]
            transitions = stack.store.transitions(result.episode.id)
    finally:
        example.ADAPTER.detach()
    return result, transitions


def test_agent_survives_bad_sql(
    tmp_path: Path, example_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The double calls ``execute_sql`` with arithmetic ("3*4"): an SQL error the model sees,
    not a crash; its final text holds no SQL, so it scores 0."""
    result, transitions = _run(tmp_path, monkeypatch)
    assert result.ok and result.episode.error is None
    assert [(t.agent, t.metadata["node"]) for t in transitions] == [("sql-agent", "agent")] * 2
    (item,) = transitions[0].metadata["tool_results"]
    assert item["name"] == "execute_sql"
    assert item["output"].startswith("error:")
    question = example.eval_tasks()[0]
    assert example.score(question["gold"], result.output) == 0.0


def test_agent_rewrites_after_an_error_and_its_final_sql_is_scored(
    tmp_path: Path, example_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Query, error, rewrite, rows, final SQL: three model calls (a context larger than the
    tiny model's, which a rewrite of a long query would overrun)."""
    question = example.eval_tasks()[0]
    script = [f"SELECT COUNT(*) FROM order WHERE year={question['values'][0]}", question["gold"]]

    def responder(
        messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]],
        params: RequestParams,
    ) -> str:
        turn = sum(m.get("role") == "assistant" for m in messages)
        if turn < len(script):
            call = json.dumps({"name": "execute_sql", "arguments": {"query": script[turn]}})
            return f"<tool_call>\n{call}\n</tool_call>"
        return f"```sql\n{question['gold']}\n```"

    result, transitions = _run(tmp_path, monkeypatch, responder, context=2048)
    assert result.ok
    outputs = [r["output"] for t in transitions for r in t.metadata.get("tool_results", ())]
    assert len(transitions) == 3 and len(outputs) == 2
    assert outputs[0].startswith("error:") and not outputs[1].startswith("error:")
    assert example.score(question["gold"], result.output) == 1.0


def test_agent_stops_cleanly_when_the_context_runs_out(
    tmp_path: Path, example_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no room to generate, the agent asks nothing and gives no answer (reward 0)."""
    result, transitions = _run(tmp_path, monkeypatch, context=150)
    assert result.ok and result.output == ""
    assert transitions == []


@pytest.mark.slow
def test_smoke_config_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FULMEN_SQL_DB", str(tmp_path / "company.db"))
    run = run_smoke("text_to_sql", tmp_path)
    assert [r["step"] for r in run.train] == [1, 2]
    assert all(r["failed_episodes"] == 0 and r["episodes"] == 16 for r in run.train)
    assert run.evals
    assert run.transitions
    assert all(t.agent == "sql-agent" for t in run.transitions)
    assert (tmp_path / "company.db").is_file()
