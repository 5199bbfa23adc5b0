"""Running model-written SQL safely, and execution accuracy.

Every query runs on a read-only connection (``mode=ro`` URI: nothing the model writes can change
the database), under an instruction budget (``set_progress_handler``: a runaway cross join is
interrupted, not waited for) and a row limit. Nothing here raises on bad SQL: a failure is a
:class:`QueryResult` with ``error`` set, which the agent shows the model as an observation.

Execution accuracy (:func:`execution_match`): the predicted query's rows equal the gold query's
rows, as lists when the gold query has ``ORDER BY`` and as multisets (duplicates count, order
does not) otherwise. Floats are compared rounded to 6 decimals.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "MAX_ROWS",
    "QueryResult",
    "execution_match",
    "extract_sql",
    "format_result",
    "has_order_by",
    "run_query",
]

MAX_ROWS = 1000
"""A query returning more rows than this is an error (no gold answer is that large)."""
MAX_INSTRUCTIONS = 20_000_000
"""SQLite virtual-machine steps per query, at most (about a second of work)."""
MAX_SECONDS = 2.0
"""Wall-clock limit per query, checked alongside the instruction budget."""
MAX_SQL_CHARS = 1000
"""Longer query text is refused before it reaches SQLite."""
_PROGRESS_EVERY = 1000

Row = tuple[object, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryResult:
    """What running one query gave."""

    rows: tuple[Row, ...] = ()
    """Result rows (empty on error)."""
    error: str | None = None
    """``None`` on success, else a one-line message starting with ``error:``."""
    columns: tuple[str, ...] = field(default=())
    """Result column names."""

    @property
    def ok(self) -> bool:
        """True when the query ran."""
        return self.error is None


def _normalise(value: object) -> object:
    if isinstance(value, float):
        rounded = round(value, 6)
        return int(rounded) if rounded.is_integer() else rounded
    return value


def run_query(
    db_path: str | Path,
    sql: str,
    *,
    max_rows: int = MAX_ROWS,
    max_instructions: int = MAX_INSTRUCTIONS,
    max_seconds: float = MAX_SECONDS,
) -> QueryResult:
    """Run ``sql`` read-only on the database at ``db_path``; never raises.

    Returns:
        The rows (floats rounded to 6 decimals, integral floats as ints), or an ``error:``
        message for: empty or too long text, SQL errors (syntax, unknown table or column,
        several statements, writes on the read-only connection), a query interrupted by the
        instruction or time budget, more than ``max_rows`` rows, or a missing database.
    """
    text = sql.strip() if isinstance(sql, str) else ""  # pyright: ignore[reportUnnecessaryIsInstance]
    if not text:
        return QueryResult(error="error: empty query")
    if len(text) > MAX_SQL_CHARS:
        return QueryResult(error=f"error: query longer than {MAX_SQL_CHARS} characters")
    uri = Path(db_path).resolve().as_uri() + "?mode=ro"
    steps = 0
    deadline = time.monotonic() + max_seconds

    def progress() -> int:
        nonlocal steps
        steps += _PROGRESS_EVERY
        return int(steps > max_instructions or time.monotonic() > deadline)

    try:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    except sqlite3.Error as exc:
        return QueryResult(error=f"error: cannot open the database ({exc})")
    try:
        conn.set_progress_handler(progress, _PROGRESS_EVERY)
        cursor = conn.execute(text)
        fetched = cursor.fetchmany(max_rows + 1)
        if len(fetched) > max_rows:
            return QueryResult(error=f"error: more than {max_rows} rows")
        columns = tuple(d[0] for d in cursor.description or ())
        rows = tuple(tuple(_normalise(v) for v in r) for r in fetched)
        return QueryResult(rows=rows, columns=columns)
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            return QueryResult(error="error: query took too long (interrupted)")
        return QueryResult(error=f"error: {exc}")
    # A model writes anything: sqlite3.Warning ("one statement at a time"), ProgrammingError,
    # OverflowError on huge integers... all of it is an observation, never a crash.
    except Exception as exc:
        return QueryResult(error=f"error: {exc}")
    finally:
        conn.close()


_ORDER_BY_RE = re.compile(r"\border\s+by\b", re.IGNORECASE)


def has_order_by(sql: str) -> bool:
    """True when ``sql`` contains ``ORDER BY`` (then row order is part of the answer)."""
    return bool(_ORDER_BY_RE.search(sql))


def _key(row: Row) -> tuple[str, ...]:
    return tuple(repr(v) for v in row)


def execution_match(gold: QueryResult, predicted: QueryResult, *, ordered: bool) -> bool:
    """True when ``predicted`` ran and returned the same rows as ``gold``.

    Args:
        ordered: compare as lists (the gold query has ``ORDER BY``); otherwise as multisets.
    """
    if not gold.ok or not predicted.ok:
        return False
    if ordered:
        return list(gold.rows) == list(predicted.rows)
    return Counter(map(_key, gold.rows)) == Counter(map(_key, predicted.rows))


_FENCE_RE = re.compile(r"```(?:sql)?\s*(.*?)```", re.IGNORECASE | re.DOTALL)
_SELECT_RE = re.compile(r"\b(select|with)\b", re.IGNORECASE)


def extract_sql(text: str | None) -> str | None:
    """The SQL in a final answer: a fenced block's content, else the text from the first
    ``SELECT``/``WITH`` on; ``None`` when there is none."""
    if not text:
        return None
    fenced = _FENCE_RE.search(text)
    if fenced:
        return fenced.group(1).strip() or None
    match = _SELECT_RE.search(text)
    return text[match.start() :].strip() if match else None


def format_result(result: QueryResult, *, max_chars: int = 60) -> str:
    """Compact text of a result for the model: ``error: ...``, or the rows as ``a,b;c,d``
    (at most ``max_chars`` characters, cut with ``...``)."""
    if result.error is not None:
        return result.error[:max_chars]
    if not result.rows:
        return "(no rows)"
    text = ";".join(",".join(str(v) for v in row) for row in result.rows)
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."

