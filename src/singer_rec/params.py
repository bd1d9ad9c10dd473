"""Typed parameter blocks: a dataclass per stage, built from its ``params:<stage>`` mapping.

``from_params(IngestParams, values, "ingest")`` rejects unknown keys (naming them and listing the
allowed ones), wrong types and out-of-range values, each error naming the full dotted key
(``ingest.synthetic.n_users``). Ranges and choices are declared on the fields:

    n_users: int = field(default=400, metadata=rule(ge=2))
    protocol: str = field(default="chronological", metadata=rule(choices=("chronological", "leave_last_out")))

Nested dataclass fields are built recursively. A class may add cross-field checks in a
``check(self, where)`` method, and list keys it no longer has in a ``RENAMED_KEYS`` class
attribute (old name -> new name): an old key then fails with "sft.train.lr was renamed to
learning_rate". Fields the code sets itself (e.g. the global seed) are named in an
``INTERNAL_FIELDS`` class attribute: a block that sets one fails as with an unknown key. Which
block has which class is the project's business, not this module's: the pipeline registry names
them (``PARAMETER_SCHEMAS``) and checks a run's blocks before any node reads data.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")

def rule(*, ge: float | None = None, gt: float | None = None, le: float | None = None,
         lt: float | None = None, choices: tuple | None = None, min_items: int | None = None) -> dict[str, Any]:
    """Field metadata: bounds (``ge``/``gt``/``le``/``lt``), allowed ``choices``, and for a list its
    fewest entries (``min_items``)."""
    return {key: value for key, value in {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices,
                                          "min_items": min_items}.items() if value is not None}


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def _union_args(kind: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return typing.get_args(kind)
    return None


def _convert(value: Any, kind: Any, where: str) -> Any:
    """``value`` as ``kind`` (int, float, bool, str, list[...], dict[str, ...], X | None, a dataclass)."""
    members = _union_args(kind)
    if members is not None:
        if value is None:
            if type(None) in members:
                return None
            raise ValueError(f"{where} must not be null")
        errors = []
        for member in (m for m in members if m is not type(None)):
            try:
                return _convert(value, member, where)
            except ValueError as error:
                errors.append(str(error))
        raise ValueError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of "
                         f"{[_type_name(m) for m in members]}")
    if kind is Any:  # anything, null included (e.g. the values of an overrides mapping)
        return value
    if value is None:
        raise ValueError(f"{where} must not be null (expected {_type_name(kind)})")
    if dataclasses.is_dataclass(kind):
        return from_params(kind, value, where)
    origin = typing.get_origin(kind)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list, got {value!r}")
        (element,) = typing.get_args(kind) or (Any,)
        return [_convert(v, element, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be a mapping, got {value!r}")
        _, element = typing.get_args(kind) or (str, Any)
        return {str(k): _convert(v, element, f"{where}.{k}") for k, v in value.items()}
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported field type {kind!r}")


def _check_rule(value: Any, metadata: Mapping[str, Any], where: str) -> None:
    if value is None:
        return
    if "min_items" in metadata and len(value) < metadata["min_items"]:
        raise ValueError(f"{where} must list at least {metadata['min_items']} value(s), got {value!r}")
    choices = metadata.get("choices")
    if choices is not None and value not in choices:
        raise ValueError(f"{where} must be one of {list(choices)}, got {value!r}")
    for key, test, words in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                             ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        if key in metadata and not test(value, metadata[key]):
            raise ValueError(f"{where} must be {words} {metadata[key]}, got {value!r}")


def check_fields(instance: Any, where: str) -> Any:
    """The field rules and the ``check`` of a dataclass built directly (``from_params`` runs them as it
    builds); returns ``instance``."""
    for spec in dataclasses.fields(instance):
        _check_rule(getattr(instance, spec.name), spec.metadata, f"{where}.{spec.name}")
    check = getattr(instance, "check", None)
    if callable(check):
        check(where)
    return instance


def nested_defaults(values: Any, key: str, **defaults: Any) -> Any:
    """A block's mapping with ``defaults`` under its ``key`` block where that block leaves them out
    (e.g. the global seed of ``rl.settings``); a block built already is returned as it is."""
    values = {} if values is None else values
    if not isinstance(values, Mapping) or not isinstance(values.get(key), Mapping | None):
        return values  # built already: its fields are explicit
    return {**values, key: {**defaults, **(values.get(key) or {})}}


def from_params(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """An instance of the dataclass ``cls`` from ``values``; ``where`` is the dotted key of the block."""
    if values is None:
        values = {}
    if dataclasses.is_dataclass(values) and isinstance(values, cls):
        return values
    if not isinstance(values, Mapping):
        raise ValueError(f"{where} must be a mapping of parameters, got {values!r}")
    hints = typing.get_type_hints(cls)
    internal = getattr(cls, "INTERNAL_FIELDS", ())
    known = {f.name: f for f in dataclasses.fields(cls) if f.name not in internal}
    renamed = getattr(cls, "RENAMED_KEYS", {})
    old_names = sorted(str(k) for k in values if k in renamed and k not in known)
    if old_names:
        raise ValueError("; ".join(f"{where}.{k} was renamed to {renamed[k]}" for k in old_names))
    unknown = sorted(str(k) for k in values if k not in known)
    if unknown:
        raise ValueError(f"unknown parameter(s) {[f'{where}.{k}' for k in unknown]}; "
                         f"allowed keys of {where}: {sorted(known)}")
    converted = {}
    for name, value in values.items():
        key = f"{where}.{name}"
        converted[name] = _convert(value, hints[name], key)
        _check_rule(converted[name], known[name].metadata, key)
    instance = cls(**converted)
    check = getattr(instance, "check", None)
    if callable(check):
        check(where)
    return instance
