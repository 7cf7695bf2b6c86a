"""Load YAML into typed pydantic models; every problem becomes one precise line.

Each problem line reads ``FILE:LINE: field.path[2].name: message``: the line where the
field (or, for a missing field, its parent) was written, the field path as written in
the file, and what is allowed: ``unknown key 'foo' (allowed: a, b, c)``,
``must be >= 0 W (got '-3 kW')``, ``missing required field``, the `UnitError` text for a
bad quantity, ``must be one of 'A' or 'B' (got 'C')``. All problems come at once, sorted
by line. Unknown keys are always refused (``extra='forbid'`` at validation).
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Callable, Mapping, Sequence, Set
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from rig.config.yamlsafe import load_yaml
from twin.errors import ConfigError
from twin.units import Quantity, format_quantity

M = TypeVar("M", bound=BaseModel)
FieldPath = tuple[str | int, ...]
Locate = Callable[[FieldPath], tuple[int, int]]

_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"),
           "less_than_equal": ("le", "<="), "less_than": ("lt", "<")}
_EXPECTED = {
    "model_type": "a mapping of keys to values", "model_attributes_type": "a mapping",
    "dict_type": "a mapping of keys to values", "mapping_type": "a mapping",
    "list_type": "a list", "tuple_type": "a list", "set_type": "a list",
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "a text string",
}
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


def load_model(path: str | Path, model_cls: type[M], *, section: str | None = None) -> M:
    """Load ``path`` with `rig.config.yamlsafe.load_yaml` and validate it as ``model_cls``.

    With ``section``, only that top-level key is validated (paths in messages keep the
    section name). Raises `ConfigError` listing every problem.
    """
    loaded = load_yaml(path)
    data = loaded.data
    prefix: FieldPath = ()
    if section is not None:
        if not isinstance(data, dict) or section not in data:
            found = ", ".join(data) if isinstance(data, dict) and data else "nothing"
            raise ConfigError([f"{loaded.where(())}: missing section '{section}' "
                               f"(found: {found})"])
        data = data[section]
        prefix = (section,)
    elif data is None:
        raise ConfigError([f"{loaded.source}:1: the file is empty; expected a mapping"])
    return validate_data(data, model_cls, source=loaded.source, locate=loaded.locate,
                         path_prefix=prefix)


def validate_data(
    data: Any,
    model_cls: type[M],
    *,
    source: str = "<string>",
    locate: Locate | None = None,
    path_prefix: Sequence[str | int] = (),
) -> M:
    """Validate plain ``data`` as ``model_cls``, raising one `ConfigError` for all problems.

    ``locate(path)`` gives the 1-based (line, column) of a field path counted from the
    document root (``path_prefix`` plus the path inside ``data``); without it, problem
    lines read ``SOURCE: field.path: message`` (no line). ``path_prefix`` is where
    ``data`` sits in the document, shown in front of every field path.
    """
    if not (isinstance(model_cls, type) and issubclass(model_cls, BaseModel)):
        raise TypeError(f"model_cls must be a pydantic model class, got {model_cls!r}")
    try:
        return model_cls.model_validate(data, extra="forbid")
    except ValidationError as exc:
        prefix = tuple(path_prefix)
        problems = [_problem(error, data, model_cls, source, locate, prefix)
                    for error in exc.errors(include_url=False)]
    ordered = sorted(enumerate(problems), key=lambda item: (item[1][0], item[1][1], item[0]))
    lines = list(dict.fromkeys(text for _, (_, _, text) in ordered))
    raise ConfigError(lines)


# ----------------------------------------------------------------------------- one problem


def _problem(error: Any, data: Any, model_cls: type[BaseModel], source: str,
             locate: Locate | None, prefix: FieldPath) -> tuple[int, int, str]:
    loc = tuple(error["loc"])
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        key = str((error.get("ctx") or {}).get("discriminator", "")).strip("'\"")
        loc = (*loc, key) if key else loc  # the problem is in the field that picks the kind
    data_path, shown_path, found, raw = _walk(data, loc, model_cls)
    message = _message(error, model_cls, data_path, shown_path, found, raw)
    field_path = _format_path(prefix + shown_path)
    body = f"{field_path}: {message}" if field_path else message
    if locate is None:
        return 0, 0, f"{source}: {body}"
    line, column = locate(prefix + data_path)
    return line, column, f"{source}:{line}: {body}"


def _walk(data: Any, loc: FieldPath,
          model_cls: type[BaseModel]) -> tuple[FieldPath, FieldPath, bool, Any]:
    """Follow ``loc`` through ``data``: (path in data, path to show, found, value there).

    Elements that do not index the data (union member labels) are skipped, except a
    final field of the model there (a missing field): shown, but not in the data path.
    """
    current = data
    data_path: list[str | int] = []
    shown: list[str | int] = []
    found = True
    for index, element in enumerate(loc):
        in_mapping = isinstance(current, Mapping) and element in current
        in_list = (isinstance(current, list) and isinstance(element, int)
                   and not isinstance(element, bool) and 0 <= element < len(current))
        if not (in_mapping or in_list):
            if index == len(loc) - 1 and isinstance(current, Mapping) and any(
                _step(tp, element) for tp, _ in _slots(model_cls, tuple(data_path))
            ):
                shown.append(element)
                found = False
            continue
        current = current[element]
        data_path.append(element)
        shown.append(element)
    return tuple(data_path), tuple(shown), found, current


def _message(error: Any, model_cls: type[BaseModel], data_path: FieldPath,
             shown_path: FieldPath, found: bool, raw: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = raw if found else error.get("input")
    got = f" (got {_shown(value)})"
    if kind in ("missing", "union_tag_not_found"):
        return "missing required field"
    if kind == "union_tag_invalid":
        tags = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
        close = difflib.get_close_matches(str(ctx.get("tag")), tags, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown kind {_shown(ctx.get('tag'))} (allowed: {', '.join(tags)}{hint})"
    if kind == "extra_forbidden":
        return _unknown_key(model_cls, data_path[:-1], shown_path[-1] if shown_path else "?")
    if kind in _BOUNDS:
        name, op = _BOUNDS[kind]
        dimension = _dimension(model_cls, data_path)
        bound: Any = ctx.get(name)  # pydantic gives the bound of every bound error
        if dimension is None:
            return f"must be {op} {_number(bound)}{got}"
        got_text = _shown(value)
        si = error.get("input")
        if isinstance(value, str) and isinstance(si, int | float):
            si_text = format_quantity(float(si), dimension)
            if si_text != value.strip():
                got_text = f"{got_text} = {si_text}"
        return f"must be {op} {format_quantity(float(bound), dimension)} (got {got_text})"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind in ("literal_error", "enum"):
        return f"must be one of {ctx.get('expected', '?')}{got}"
    if kind == "string_pattern_mismatch":
        return f"must match the pattern {ctx.get('pattern')!s}{got}"
    if kind in ("string_too_short", "string_too_long"):
        word = "at least" if kind.endswith("short") else "at most"
        limit = ctx.get("min_length" if kind.endswith("short") else "max_length")
        return f"must have {word} {limit} character(s){got}"
    if kind in ("too_short", "too_long"):
        word = "at least" if kind == "too_short" else "at most"
        limit = ctx.get("min_length" if kind == "too_short" else "max_length")
        return f"must have {word} {limit} item(s) (got {ctx.get('actual_length', '?')})"
    if kind == "multiple_of":
        return f"must be a multiple of {_number(ctx.get('multiple_of'))}{got}"
    if kind == "finite_number":
        return f"must be a finite number{got}"
    if kind in _EXPECTED:
        hint = ""
        if isinstance(value, bool) and kind == "string_type":
            hint = "; YAML reads yes/no/on/off/true/false as booleans, quote the text"
        return f"expected {_EXPECTED[kind]}{got}{hint}"
    return f"{error['msg']}{got}"


def _unknown_key(model_cls: type[BaseModel], parent: FieldPath, key: str | int) -> str:
    models = [tp for tp, _ in _slots(model_cls, parent)
              if isinstance(tp, type) and issubclass(tp, BaseModel)]
    if not models:
        return f"unknown key '{key}'"
    allowed = _field_keys(models[0])
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown key '{key}' (allowed: {', '.join(allowed)}{hint})"


def _dimension(model_cls: type[BaseModel], path: FieldPath) -> str | None:
    for _, metadata in _slots(model_cls, path):
        for item in metadata:
            if isinstance(item, Quantity):
                return item.dimension
    return None


# ----------------------------------------------------------------------------- model walk

Slot = tuple[Any, tuple[Any, ...]]  # a type and the Annotated metadata that came with it


def _field_keys(model: type[BaseModel]) -> list[str]:
    keys = []
    for name, info in model.model_fields.items():
        alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
        keys.append(alias or name)
    return keys


def _unwrap(tp: Any, metadata: tuple[Any, ...]) -> list[Slot]:
    origin = get_origin(tp)
    if origin is Annotated:
        inner, *extra = get_args(tp)
        return _unwrap(inner, metadata + tuple(extra))
    if origin is Union or origin is types.UnionType:
        return [slot for arg in get_args(tp) if arg is not type(None)
                for slot in _unwrap(arg, metadata)]
    return [(tp, metadata)]


def _step(tp: Any, key: str | int) -> list[Slot]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, info in tp.model_fields.items():
            if key in (name, info.alias, info.validation_alias):
                return _unwrap(info.annotation, tuple(info.metadata))
        return []
    origin, args = get_origin(tp), get_args(tp)
    if not (isinstance(origin, type) and args):
        return []
    if issubclass(origin, Mapping) and len(args) == 2:
        return _unwrap(args[1], ())
    if isinstance(key, int) and issubclass(origin, Sequence | Set) and origin is not str:
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return _unwrap(args[key], ()) if 0 <= key < len(args) else []
        return _unwrap(args[0], ())
    return []


def _slots(model_cls: type[BaseModel], path: FieldPath) -> list[Slot]:
    """The possible (type, metadata) of the field at ``path`` inside ``model_cls``."""
    slots: list[Slot] = [(model_cls, ())]
    for key in path:
        slots = [slot for tp, _ in slots for slot in _step(tp, key)]
        if not slots:
            break
    return slots


# ----------------------------------------------------------------------------- formatting


def _format_path(path: FieldPath) -> str:
    text = ""
    for element in path:
        if isinstance(element, int):
            text += f"[{element}]"
        elif _KEY.fullmatch(element):
            text += f".{element}" if text else element
        else:
            text += f"[{element!r}]"
    return text


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    text = _number(value)
    return text if len(text) <= 60 else text[:57] + "..."
