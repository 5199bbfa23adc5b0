"""Builds the text-to-SQL example's database: a small company in SQLite, deterministic from a seed.

Four tables (short names: the reference model reads characters, and every character of the
schema is in every prompt)::

    dept(id, name, city)                    8 departments
    emp(id, name, dept_id, salary, hired)   600 employees (salary in dollars, hired a year)
    proj(id, name, dept_id, budget)         90 projects (budget in thousands)
    orders(id, emp_id, amount, year)        3000 orders

The file is never committed: :func:`ensure_db` builds it on first use under ``runs/`` (atomically,
so concurrent episodes may all ask for it) and reuses it afterwards.

CLI: ``python -m examples.text_to_sql.make_db [OUT] [--seed N]``
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import tempfile
import threading
from pathlib import Path

__all__ = [
    "CITIES",
    "DEPARTMENTS",
    "SCHEMA",
    "YEARS",
    "build_db",
    "default_db_path",
    "ensure_db",
    "main",
]

SCHEMA = (
    "dept(id,name,city) emp(id,name,dept_id,salary,hired) "
    "proj(id,name,dept_id,budget) orders(id,emp_id,amount,year)"
)
"""The compact schema the agent shows the model (one line)."""

DEPARTMENTS: tuple[str, ...] = (
    "Sales",
    "Legal",
    "Support",
    "Research",
    "Finance",
    "Design",
    "Ops",
    "IT",
)
"""Department names, in id order (ids start at 1)."""
CITIES: tuple[str, ...] = ("Paris", "Berlin", "Austin", "Oslo", "Lima", "Tokyo")
"""Cities departments sit in (every city has at least one department)."""
YEARS: tuple[int, ...] = tuple(range(2012, 2025))
"""Hiring and order years."""

_N_EMPLOYEES = 600
_N_PROJECTS = 90
_N_ORDERS = 3000
_FIRST = ("Ana", "Ben", "Cleo", "Dan", "Eva", "Finn", "Gia", "Hugo", "Ines", "Jon", "Kai", "Lea")
_LAST = ("Kim", "Ortiz", "Novak", "Berg", "Sato", "Diaz", "Moreau", "Silva", "Okafor", "Lund")
_PROJECT_WORDS = ("Atlas", "Beacon", "Comet", "Delta", "Ember", "Falcon", "Granite", "Harbor", "Iris")

_DDL = """
CREATE TABLE dept (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT NOT NULL);
CREATE TABLE emp (id INTEGER PRIMARY KEY, name TEXT NOT NULL, dept_id INTEGER NOT NULL
    REFERENCES dept(id), salary INTEGER NOT NULL, hired INTEGER NOT NULL);
CREATE TABLE proj (id INTEGER PRIMARY KEY, name TEXT NOT NULL, dept_id INTEGER NOT NULL
    REFERENCES dept(id), budget INTEGER NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, emp_id INTEGER NOT NULL REFERENCES emp(id),
    amount INTEGER NOT NULL, year INTEGER NOT NULL);
"""

_BUILD_LOCK = threading.Lock()


def _rows(seed: int) -> dict[str, list[tuple[object, ...]]]:
    rng = random.Random(seed)
    cities = list(CITIES) + [rng.choice(CITIES) for _ in range(len(DEPARTMENTS) - len(CITIES))]
    rng.shuffle(cities)
    dept = [(i + 1, name, cities[i]) for i, name in enumerate(DEPARTMENTS)]
    emp: list[tuple[object, ...]] = []
    for i in range(_N_EMPLOYEES):
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)} {i + 1}"
        salary = rng.randrange(30_000, 150_001, 500)
        emp.append((i + 1, name, rng.randint(1, len(DEPARTMENTS)), salary, rng.choice(YEARS)))
    proj: list[tuple[object, ...]] = []
    for i in range(_N_PROJECTS):
        name = f"{rng.choice(_PROJECT_WORDS)} {i + 1}"
        proj.append((i + 1, name, rng.randint(1, len(DEPARTMENTS)), rng.randrange(20, 1001, 5)))
    orders: list[tuple[object, ...]] = [
        (i + 1, rng.randint(1, _N_EMPLOYEES), rng.randrange(10, 5001), rng.choice(YEARS))
        for i in range(_N_ORDERS)
    ]
    return {"dept": list(dept), "emp": emp, "proj": proj, "orders": orders}


def build_db(path: str | Path, *, seed: int = 0) -> Path:
    """Write the company database to ``path`` (replaced if it exists), deterministically.

    The same seed gives the same rows (same ``iterdump()``). The file is written under a
    temporary name and renamed into place, so a reader never sees a half-built database.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        with sqlite3.connect(tmp_name) as conn:
            conn.executescript(_DDL)
            for table, rows in _rows(seed).items():
                marks = ",".join("?" * len(rows[0]))
                conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        conn.close()
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def default_db_path(seed: int = 0) -> Path:
    """Where :func:`ensure_db` keeps the database: ``runs/text_to_sql/company-{seed}.db`` under
    the repository root (``FULMEN_SQL_DB`` overrides it)."""
    override = os.environ.get("FULMEN_SQL_DB")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "runs" / "text_to_sql" / f"company-{seed}.db"


def ensure_db(path: str | Path | None = None, *, seed: int = 0) -> Path:
    """The database at ``path`` (default :func:`default_db_path`), built first if missing.

    Thread-safe: concurrent first calls build it once.
    """
    target = Path(path) if path is not None else default_db_path(seed)
    if target.is_file():
        return target
    with _BUILD_LOCK:
        if not target.is_file():
            build_db(target, seed=seed)
    return target


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: build the database (``--help`` lists the options)."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.text_to_sql.make_db", description="Build the company database."
    )
    parser.add_argument("out", type=Path, nargs="?", default=None, help="database file to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = build_db(args.out or default_db_path(args.seed), seed=args.seed)
    with sqlite3.connect(out) as conn:
        counts = {
            t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("dept", "emp", "proj", "orders")
        }
    conn.close()
    print(f"{out}: {counts}")


if __name__ == "__main__":
    main()
