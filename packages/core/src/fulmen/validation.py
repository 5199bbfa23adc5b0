"""One typed-validation layer: raw tables (TOML, JSON) checked against typed dataclasses.

Config sections (:mod:`fulmen.config`), backend sections (``[local]``, ``[verl]``), credit
assigner options (:mod:`fulmen.credit.config`) and protocol records (:mod:`fulmen.protocol`)
are frozen dataclasses; :func:`build` turns a raw table into one. msgspec does the typed
conversion (``convert(..., strict=True)``: no ``"3"`` for an int, no ``1`` for a bool, a list
becomes a tuple, ``1`` becomes ``1.0``); this module adds what every caller needs on top:

* an unknown key is an error with a did-you-mean among the class's fields;
* a missing required key names the field and what it expects;
* every typed ``float``, inside containers too, must be finite (NaN and infinities are refused;
  values typed ``Any``, free-form metadata, are not inspected);
* nested dataclasses (``[local] lora``, ``Episode.task``) are built the same way, recursively;
* a union member that is a callable (``agents``: names or a predicate) is skipped, since a data
  file cannot hold a function;
* the class's own checks (``__post_init__`` raising :class:`ValueError`) run last.

Every error is one line, ``WHERE: expected WHAT, got VALUE (TYPE)``, raised as the caller's
:class:`~fulmen.errors.FulmenError` class (:class:`~fulmen.errors.ConfigError` by default,
:class:`~fulmen.protocol.ProtocolError` for records). ``WHERE`` is the caller's prefix, then
the field path: ``x.toml: [train] steps``, ``Transition.prompt_token_ids[3]``.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Collection, Iterable, Mapping
from enum import Enum
from functools import cache
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import msgspec

from fulmen.errors import ConfigError, FulmenError

__all__ = ["build", "convert", "describe", "did_you_mean", "field_types", "unknown_key"]

T = TypeVar("T")

_UNIONS = (typing.Union, types.UnionType)
_SEQUENCES = (tuple, list, collections.abc.Sequence)
_MAPPINGS = (dict, collections.abc.Mapping)
_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def build(
    cls: type[T],
    table: Mapping[str, Any],
    *,
    where: str,
    error: type[FulmenError] = ConfigError,
    sep: str = " ",
    ignore: Collection[str] = (),
) -> T:
    """Validate ``table`` against the dataclass ``cls`` and construct it.

    Args:
        cls: a dataclass; its field annotations are the schema.
        table: the raw keys and values (parsed TOML or JSON).
        where: prefix of every message (``"x.toml: [train]"``, ``"Transition"``).
        error: the exception class raised.
        sep: between ``where`` and a field name (nested fields always use ``.``).
        ignore: keys accepted and dropped at every level (the protocol's ``schema``).

    Raises:
        error: ``table`` is not a table, has an unknown key (did-you-mean) or lacks a required
            one, a value has the wrong type or is not finite, or ``cls`` rejects a value.
    """
    if not isinstance(table, Mapping):  # pyright: ignore[reportUnnecessaryIsInstance] - raw data
        raise error(f"{where}: expected a table, got {got(table)}")
    spec = field_types(cls)
    for key in table:
        if key not in spec and key not in ignore:
            raise error(unknown_key(f"{where}{sep}{key}", key, spec))
    kwargs: dict[str, Any] = {}
    for name, (tp, required) in spec.items():
        path = f"{where}{sep}{name}"
        if name not in table:
            if required:
                raise error(f"{path}: missing required key ({describe(tp)})")
            continue
        kwargs[name] = convert(table[name], tp, where=path, error=error, ignore=ignore)
    try:
        return cls(**kwargs)
    except error:
        raise
    except (ValueError, TypeError) as exc:  # the class's own checks (__post_init__)
        raise error(f"{where}{' ' if sep == ' ' else ': '}{exc}") from None


def convert(
    value: Any,
    tp: Any,
    *,
    where: str,
    error: type[FulmenError] = ConfigError,
    ignore: Collection[str] = (),
) -> Any:
    """``value`` checked against the annotation ``tp`` and converted (lists to tuples, ints to
    floats, strings to enums, tables to dataclasses). See the module docstring.

    Raises:
        error: the value does not fit ``tp`` or holds a non-finite float.
    """
    target = _data_type(tp)
    cls = _dataclass_of(target)
    if cls is not None and isinstance(value, Mapping):
        return build(cls, value, where=where, error=error, sep=".", ignore=ignore)
    try:
        out = msgspec.convert(value, target, strict=True)
    except msgspec.ValidationError:
        path, part_tp, part = _locate(value, target, where)
        raise error(f"{path}: expected {describe(part_tp)}, got {got(part)}") from None
    if _has_float(target) and not _all_finite(out):
        path, bad = _first_nonfinite(out, where)
        raise error(f"{path}: expected a finite number, got {bad!r}")
    return out


@cache
def field_types(cls: type) -> dict[str, tuple[Any, bool]]:
    """``{field name: (annotation, required)}`` of the dataclass ``cls``, in field order."""
    hints = get_type_hints(cls)
    missing = dataclasses.MISSING
    return {
        f.name: (hints[f.name], f.default is missing and f.default_factory is missing)
        for f in dataclasses.fields(cls)
        if f.init
    }


def did_you_mean(key: str, allowed: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the closest of ``allowed`` by spelling, else the one name
    ``key`` abbreviates (``std`` → ``std_normalize``); empty when none is close."""
    names = list(allowed)
    close = difflib.get_close_matches(key, names, n=1)
    if not close and len(key) >= 3:
        close = [n for n in names if n.startswith(key)]
    return f" Did you mean {close[0]!r}?" if len(close) == 1 else ""


def unknown_key(path: str, key: str, allowed: Iterable[str]) -> str:
    """The message for an unknown ``key`` at ``path``: did-you-mean, then the allowed keys."""
    names = sorted(allowed)
    return f"{path}: unknown key.{did_you_mean(key, names)} Allowed: {', '.join(names)}."


def describe(tp: Any) -> str:
    """What a value of annotation ``tp`` looks like, in words (``"a list of integers"``)."""
    tp = _data_type(tp)
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return "any value"
    if origin is Literal:
        words = ", ".join(map(repr, args))
        return " or ".join(map(repr, args)) if len(args) <= 2 else f"one of {words}"
    if origin in _UNIONS:
        return " or ".join(describe(a) for a in args if a is not type(None))
    if isinstance(tp, type) and issubclass(tp, Enum):
        return "one of " + ", ".join(str(m.value) for m in tp)
    if tp in _NAMES:
        return _NAMES[tp]
    if tp in _SEQUENCES or origin in _SEQUENCES:
        return f"a list of {_plural(args[0])}" if args else "a list"
    if tp in _MAPPINGS or origin in _MAPPINGS:
        return "a table" if len(args) < 2 or args[1] is Any else f"a table of {_plural(args[1])}"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return getattr(tp, "__name__", str(tp))


def got(value: object) -> str:
    """A short description of a bad value: ``'ten' (str)``, ``a list``, ``a table``."""
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _plural(tp: Any) -> str:
    """Items of a list or table: ``integers``, ``'a' or 'b'``, ``tables``."""
    if tp in _PLURALS:
        return _PLURALS[tp]
    if get_origin(tp) is Literal or (isinstance(tp, type) and issubclass(tp, Enum)):
        return describe(tp)
    if tp in _MAPPINGS or get_origin(tp) in _MAPPINGS or dataclasses.is_dataclass(tp):
        return "tables"
    return f"values that are each {describe(tp)}"


@cache
def _data_type(tp: Any) -> Any:
    """``tp`` without the union members a data file cannot hold (callables)."""
    if get_origin(tp) not in _UNIONS:
        return tp
    kept = [a for a in get_args(tp) if not _is_callable(a)]
    if len(kept) == len(get_args(tp)):
        return tp
    return kept[0] if len(kept) == 1 else typing.Union[tuple(kept)]  # noqa: UP007 - from a list


def _is_callable(tp: Any) -> bool:
    return tp is collections.abc.Callable or get_origin(tp) is collections.abc.Callable


@cache
def _dataclass_of(tp: Any) -> type | None:
    """The dataclass of ``tp`` when it is one, or one or None."""
    members = [tp]
    if get_origin(tp) in _UNIONS:
        members = [a for a in get_args(tp) if a is not type(None)]
    if len(members) == 1 and isinstance(members[0], type) and dataclasses.is_dataclass(members[0]):
        return members[0]
    return None


@cache
def _has_float(tp: Any) -> bool:
    if tp is float:
        return True
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return any(_has_float(t) for t, _ in field_types(tp).values())
    return any(_has_float(a) for a in get_args(tp) if a is not Ellipsis)


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, tuple | list):
        try:
            return all(map(math.isfinite, value))  # flat numbers: one C loop
        except TypeError:
            return all(_all_finite(v) for v in value)
    if isinstance(value, Mapping):
        return all(_all_finite(v) for v in value.values())
    if dataclasses.is_dataclass(value):
        return all(_all_finite(getattr(value, f.name)) for f in dataclasses.fields(value))
    return True


def _first_nonfinite(value: Any, path: str) -> tuple[str, Any]:
    """Path and value of the first non-finite float in ``value`` (which holds one)."""
    items: Iterable[tuple[str, Any]] = ()
    if isinstance(value, tuple | list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    elif isinstance(value, Mapping):
        items = ((f"{path}.{k}", v) for k, v in value.items())
    elif dataclasses.is_dataclass(value):
        items = ((f"{path}.{f.name}", getattr(value, f.name)) for f in dataclasses.fields(value))
    for sub, v in items:
        if not _all_finite(v):
            return _first_nonfinite(v, sub)
    return path, value


def _fits(value: Any, tp: Any) -> bool:
    try:
        msgspec.convert(value, tp, strict=True)
    except msgspec.ValidationError:
        return False
    return True


def _locate(value: Any, tp: Any, path: str) -> tuple[str, Any, Any]:
    """Path, expected annotation and value of the innermost part of ``value`` that does not
    fit ``tp`` (only called once conversion failed, to word the message)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in _UNIONS:
        members = [a for a in args if a is not type(None)]
        if value is not None and len(members) == 1:
            return _locate(value, members[0], path)
        return path, tp, value
    if origin in _SEQUENCES and isinstance(value, list | tuple) and args:
        for i, item in enumerate(value):
            if not _fits(item, args[0]):
                return _locate(item, args[0], f"{path}[{i}]")
    if origin in _MAPPINGS and isinstance(value, Mapping) and len(args) == 2:
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path}.{key}", str, key
            if not _fits(item, args[1]):
                return _locate(item, args[1], f"{path}.{key}")
    return path, tp, value
