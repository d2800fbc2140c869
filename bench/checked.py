"""Dataclasses built from YAML mappings, checked key by key, and YAML read strictly.

An unknown key, a duplicate key or a value of the wrong type is an error
that names it; every config dataclass may add a ``validate`` method.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from bench.errors import DrbenchError


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin in (tuple, list):
        (item_type, *_rest) = typing.get_args(annotation) or (Any,)
        return isinstance(value, (list, tuple)) and all(_type_ok(v, item_type) for v in value)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def build_config(cls, values: dict | None, where: str):
    """Instantiate dataclass ``cls`` from a mapping, naming any bad key or value."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise DrbenchError(f"unknown key(s) {', '.join(unknown)} in {where}; valid keys: {', '.join(sorted(fields))}")
    for name, value in values.items():
        if not _type_ok(value, hints[name]):
            raise DrbenchError(
                f"{where}.{name} must be of type {_type_name(hints[name])}, got {value!r} ({type(value).__name__})"
            )
        if isinstance(value, list):
            values[name] = tuple(value)
        elif hints[name] is float and isinstance(value, int):
            values[name] = float(value)
    config = cls(**values)
    validate = getattr(config, "validate", None)
    if validate is not None:
        try:
            validate()
        except DrbenchError as error:
            raise DrbenchError(f"{where}: {error}") from None
    return config


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys instead of silently keeping the last."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise DrbenchError(f"duplicate key '{key}' in {node.start_mark.name}, line {key_node.start_mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_problem(error: yaml.YAMLError, path: Path) -> str:
    """'line N, column M: <problem>' on one line, with a hint for tab indentation."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = " ".join(str(getattr(error, "problem", None) or error).split())
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    line = ""
    if mark is not None:
        try:
            line = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()[mark.line]
        except (OSError, IndexError):
            pass
    if "\\t" in problem or "\t" in line[: mark.column + 1 if mark is not None else 0]:  # yaml writes a tab as \t
        problem += " (YAML does not allow tabs for indentation; use spaces)"
    return where + problem


def load_yaml(path: Path, what: str = "suite file") -> dict:
    """A YAML mapping read strictly; ``what`` names the kind of file in errors."""
    try:
        with open(path, encoding="utf-8") as handle:
            loaded = yaml.load(handle, Loader=_StrictLoader)
    except yaml.YAMLError as error:
        raise DrbenchError(f"{what} {path} is not valid YAML: {_yaml_problem(error, path)}") from None
    if not isinstance(loaded, dict):
        raise DrbenchError(f"{what} {path} must contain a mapping at the top level")
    return loaded
