"""The text-to-SQL question set: templated questions with gold SQL, three difficulty levels.

Each :class:`Template` has three phrasings, a gold query and a *plausible mistake* (a wrong
column, a flipped comparison, a bad join key) that the warm start's bad demonstrations use.
A template *instance* is a template with its slots filled (a year, a department, a city, a
threshold); every instance is asked in all three phrasings.

Levels: ``easy`` (one table, one filter), ``medium`` (aggregates, ``ORDER BY ... LIMIT``),
``hard`` (joins). The split is by instance, per template and seeded: about a quarter of each
template's instances are held out, so a held-out question never shares its template *instance*
(nor any phrasing of it) with training, while every template is seen in training.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Literal, TypedDict

from examples.text_to_sql.make_db import CITIES, DEPARTMENTS, YEARS

__all__ = [
    "TEMPLATES",
    "Level",
    "Question",
    "Template",
    "instances",
    "make_splits",
]

Level = Literal["easy", "medium", "hard"]

_SLOTS: dict[str, tuple[object, ...]] = {
    "y": YEARS,
    "dept": DEPARTMENTS,
    "city": CITIES,
    "k": tuple(range(2, 10)),
    "s": tuple(range(40_000, 120_001, 5_000)),
    "b": tuple(range(100, 901, 50)),
}
"""Values each slot takes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Template:
    """One question template."""

    name: str
    """Stable name (part of question ids)."""
    level: Level
    """Difficulty."""
    phrasings: tuple[str, ...]
    """Question texts with ``{slot}`` fields."""
    gold: str
    """The gold query, with the same fields."""
    wrong: str
    """A plausible wrong query (same fields), for bad demonstrations."""

    @property
    def slots(self) -> tuple[str, ...]:
        """The slot names the template uses, in a fixed order."""
        return tuple(s for s in _SLOTS if "{" + s + "}" in self.gold)


_JOIN_EMP = "FROM emp JOIN dept ON dept_id=dept.id WHERE dept.name='{dept}'"
_BAD_JOIN_EMP = "FROM emp JOIN dept ON emp.id=dept.id WHERE dept.name='{dept}'"

TEMPLATES: tuple[Template, ...] = (
    Template(
        name="orders_in_year",
        level="easy",
        phrasings=("How many orders were placed in {y}?", "Count the orders from {y}.",
                   "Number of orders in {y}?"),
        gold="SELECT COUNT(*) FROM orders WHERE year={y}",
        wrong="SELECT COUNT(*) FROM orders WHERE amount={y}",
    ),
    Template(
        name="hired_in_year",
        level="easy",
        phrasings=("List employees hired in {y}.", "Who was hired in {y}?",
                   "Names of staff hired in {y}?"),
        gold="SELECT name FROM emp WHERE hired={y}",
        wrong="SELECT name FROM emp WHERE hired>{y}",
    ),
    Template(
        name="projects_over_budget",
        level="easy",
        phrasings=("Which projects have a budget over {b}?", "List projects with budget above {b}.",
                   "Projects budgeted over {b}?"),
        gold="SELECT name FROM proj WHERE budget>{b}",
        wrong="SELECT name FROM proj WHERE budget<{b}",
    ),
    Template(
        name="depts_in_city",
        level="easy",
        phrasings=("Which departments are in {city}?", "List departments located in {city}.",
                   "Departments based in {city}?"),
        gold="SELECT name FROM dept WHERE city='{city}'",
        wrong="SELECT name FROM dept WHERE name='{city}'",
    ),
    Template(
        name="top_paid",
        level="medium",
        phrasings=("Who are the {k} best paid employees?", "Top {k} employees by salary?",
                   "Name the {k} highest earners."),
        gold="SELECT name FROM emp ORDER BY salary DESC LIMIT {k}",
        wrong="SELECT name FROM emp ORDER BY salary LIMIT {k}",
    ),
    Template(
        name="order_total_year",
        level="medium",
        phrasings=("What was the total order amount in {y}?", "Sum of order amounts for {y}?",
                   "Total value of {y} orders?"),
        gold="SELECT SUM(amount) FROM orders WHERE year={y}",
        wrong="SELECT COUNT(amount) FROM orders WHERE year={y}",
    ),
    Template(
        name="count_salary_over",
        level="medium",
        phrasings=("How many employees earn more than {s}?", "Count staff with salary above {s}.",
                   "Number of employees paid over {s}?"),
        gold="SELECT COUNT(*) FROM emp WHERE salary>{s}",
        wrong="SELECT COUNT(*) FROM emp WHERE salary<{s}",
    ),
    Template(
        name="max_order_year",
        level="medium",
        phrasings=("What was the largest order in {y}?", "Biggest order amount of {y}?",
                   "Maximum order value in {y}?"),
        gold="SELECT MAX(amount) FROM orders WHERE year={y}",
        wrong="SELECT MAX(id) FROM orders WHERE year={y}",
    ),
    Template(
        name="headcount_dept",
        level="hard",
        phrasings=("How many employees work in {dept}?", "Headcount of the {dept} department?",
                   "Count the staff of {dept}."),
        gold="SELECT COUNT(*) " + _JOIN_EMP,
        wrong="SELECT COUNT(*) " + _BAD_JOIN_EMP,
    ),
    Template(
        name="avg_salary_dept",
        level="hard",
        phrasings=("What is the average salary in {dept}?", "Mean pay of {dept} staff?",
                   "Average {dept} salary?"),
        gold="SELECT AVG(salary) " + _JOIN_EMP,
        wrong="SELECT AVG(salary) " + _BAD_JOIN_EMP,
    ),
    Template(
        name="projects_of_dept",
        level="hard",
        phrasings=("List the projects of {dept}.", "Which projects does {dept} run?",
                   "Projects owned by {dept}?"),
        gold="SELECT proj.name FROM proj JOIN dept ON dept_id=dept.id WHERE dept.name='{dept}'",
        wrong="SELECT dept.name FROM proj JOIN dept ON dept_id=dept.id WHERE dept.name='{dept}'",
    ),
    Template(
        name="hires_dept_year",
        level="hard",
        phrasings=("How many {dept} employees were hired in {y}?", "Count {dept} hires in {y}.",
                   "Number of people {dept} hired in {y}?"),
        gold="SELECT COUNT(*) " + _JOIN_EMP + " AND hired={y}",
        wrong="SELECT COUNT(*) " + _JOIN_EMP + " AND hired>{y}",
    ),
)
"""Every template, easy to hard."""


class Question(TypedDict):
    """One question (a task's data)."""

    id: str
    """Stable id: ``sql-{template}-{slot values}-p{phrasing}``."""
    question: str
    """The user's question."""
    gold: str
    """The gold query."""
    wrong: str
    """The template's plausible mistake, filled in (bad demonstrations only)."""
    level: Level
    """Difficulty."""
    template: str
    """Template name."""
    instance: str
    """Template instance key (``{template}:{slot values}``), shared by its phrasings."""
    values: list[str]
    """The slot values as they appear in the question and the query (``["Sales", "2014"]``)."""


def instances(template: Template) -> list[dict[str, object]]:
    """Every slot filling of ``template``, in a fixed order."""
    names = template.slots
    return [dict(zip(names, values, strict=True))
            for values in itertools.product(*(_SLOTS[n] for n in names))]


def _questions(template: Template, slots: dict[str, object]) -> list[Question]:
    key = "-".join(str(slots[n]) for n in template.slots)
    return [
        Question(
            id=f"sql-{template.name}-{key}-p{i}",
            question=text.format(**slots),
            gold=template.gold.format(**slots),
            wrong=template.wrong.format(**slots),
            level=template.level,
            template=template.name,
            instance=f"{template.name}:{key}",
            values=[str(slots[n]) for n in template.slots],
        )
        for i, text in enumerate(template.phrasings)
    ]


def make_splits(
    *, seed: int = 0, held_out_fraction: float = 0.25
) -> tuple[list[Question], list[Question]]:
    """Return ``(train, held_out)``: every phrasing of every instance, split by instance.

    Per template, ``ceil(held_out_fraction * instances)`` instances (seeded) are held out; the
    rest train. Deterministic given ``seed``.

    Raises:
        ValueError: ``held_out_fraction`` not in (0, 1).
    """
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction}")
    train: list[Question] = []
    held_out: list[Question] = []
    for template in TEMPLATES:
        filled = instances(template)
        random.Random(f"{seed}:{template.name}").shuffle(filled)
        n_held = math.ceil(held_out_fraction * len(filled))
        for i, slots in enumerate(filled):
            (held_out if i < n_held else train).extend(_questions(template, slots))
    return train, held_out
