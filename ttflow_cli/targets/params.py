"""Pydantic building blocks for parameter models, and one-line validation messages.

Spec sections and target parameters are pydantic models. Their validation errors reach
the user as a single line such as ``target.sites: must be a positive integer; got -3``,
which :func:`format_validation_error` derives from the error and the model's field
constraints.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Annotated, Any, Literal, Union

import annotated_types
from pydantic import BaseModel, BeforeValidator, ConfigDict, Strict, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError


def _reject_bool(value: Any) -> Any:
    # pydantic turns true/false into 1.0/0.0 for float fields; YAML users meant a number.
    if isinstance(value, bool):
        raise PydanticCustomError("float_type", "Input should be a number, not true or false")
    return value


Real = Annotated[float, BeforeValidator(_reject_bool)]
"""A float field that also parses numeric strings such as ``'1e-3'`` and rejects booleans.

PyYAML reads ``1e-3`` (no dot) as a string, so accepting numeric strings matters.
"""

Count = Annotated[int, Strict()]
"""An int field that rejects booleans, floats and strings."""


class ParamsModel(BaseModel):
    """Base of every parameter and spec-section model: unknown keys and inf/nan are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


_GENERIC_MESSAGES = {
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "finite_number": "must be a finite number",
}

# Error kinds for which the field's own description ("a positive integer") is clearer.
_FIELD_KINDS = (set(_GENERIC_MESSAGES) - {"list_type", "tuple_type", "dict_type", "model_type"}) | {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "literal_error",
}


def _bounds(field: FieldInfo) -> dict[str, float]:
    bounds: dict[str, float] = {}
    for item in field.metadata:
        for name in ("gt", "ge", "lt", "le"):
            if isinstance(item, getattr(annotated_types, name.capitalize())):
                bounds[name] = getattr(item, name)
    return bounds


def _base_type(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``| None`` from a field annotation."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _describe_int(bounds: dict[str, float]) -> str:
    low = bounds.get("ge", bounds["gt"] + 1 if "gt" in bounds else None)
    high = bounds.get("le", bounds["lt"] - 1 if "lt" in bounds else None)
    if low is not None and high is not None:
        return f"an integer from {low:g} to {high:g}"
    if low == 1:
        return "a positive integer"
    if low == 0:
        return "a non-negative integer"
    if low is not None:
        return f"an integer >= {low:g}"
    return "an integer"


def _describe_real(bounds: dict[str, float]) -> str:
    lower = upper = None  # (operator, bound)
    if "ge" in bounds:
        lower = (">=", bounds["ge"])
    elif "gt" in bounds:
        lower = (">", bounds["gt"])
    if "le" in bounds:
        upper = ("<=", bounds["le"])
    elif "lt" in bounds:
        upper = ("<", bounds["lt"])

    if lower and upper:
        opening = "[" if lower[0] == ">=" else "("
        closing = "]" if upper[0] == "<=" else ")"
        return f"a number in {opening}{lower[1]:g}, {upper[1]:g}{closing}"
    if lower == (">", 0):
        return "a positive number"
    if lower == (">=", 0):
        return "a non-negative number"
    if lower:
        return f"a number {lower[0]} {lower[1]:g}"
    if upper:
        return f"a number {upper[0]} {upper[1]:g}"
    return "a finite number"


def describe_field(field: FieldInfo) -> str | None:
    """Describe the values a field accepts, e.g. ``'a positive integer'``; None if unknown."""
    base = _base_type(field.annotation)
    optional = " or null" if field.default is None and not field.is_required() else ""
    if base is bool:
        return "true or false"
    if base is int:
        return _describe_int(_bounds(field)) + optional
    if base is float:
        return _describe_real(_bounds(field)) + optional
    if base is str:
        return "a string" + optional
    if typing.get_origin(base) is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(base)) + optional
    return None


def _submodel(annotation: Any) -> type[BaseModel] | None:
    base = _base_type(annotation)
    if isinstance(base, type) and issubclass(base, BaseModel):
        return base
    return None


def _locate(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """Find the model that owns the last named key in ``loc`` and that key's field."""
    owner: type[BaseModel] | None = model
    field: FieldInfo | None = None
    for part in loc:
        if not isinstance(part, str) or owner is None or part not in owner.model_fields:
            continue
        field = owner.model_fields[part]
        if part == loc[-1]:
            break
        owner = _submodel(field.annotation) or owner
    return owner, field


def suggest_key(key: str, known: list[str]) -> str:
    """Return a hint for an unknown key: the closest known key, else the full list."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return "expected one of: " + ", ".join(known)


def format_path(prefix: str, loc: tuple[Any, ...]) -> str:
    """Join a key path: ``('means', 2, 1)`` under ``'target'`` gives ``'target.means[2][1]'``."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path or "(top level)"


def show_value(value: Any, limit: int = 60) -> str:
    """``repr`` of a user value, shortened to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _explain(detail: dict[str, Any], model: type[BaseModel]) -> str:
    kind = detail["type"]
    loc = tuple(detail["loc"])
    owner, field = _locate(model, loc)
    if kind == "missing":
        return "missing required key"
    if kind == "extra_forbidden":
        known = list(owner.model_fields) if owner is not None else []
        return f"unknown key; {suggest_key(str(loc[-1]), known)}"
    if kind == "value_error":
        # A validator message reads "what is wrong[; hint]"; the value goes after the first part.
        text = str(detail["ctx"]["error"])
        if "; got " in text:
            return text
        problem, _, hint = text.partition("; ")
        got = f"{problem}; got {show_value(detail.get('input'))}"
        return f"{got}; {hint}" if hint else got

    described = describe_field(field) if field is not None and loc and isinstance(loc[-1], str) else None
    if described is not None and kind in _FIELD_KINDS:
        text = f"must be {described}"
    elif kind in _GENERIC_MESSAGES:
        text = _GENERIC_MESSAGES[kind]
    else:
        text = detail["msg"].replace("Input should be", "must be")
    return f"{text}; got {show_value(detail.get('input'))}"


def format_validation_error(error: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """Turn a pydantic ``ValidationError`` into one line naming the key path.

    Args:
        error: the error raised while validating ``model``.
        model: the model class that was validated, used to describe fields.
        prefix: key path of the model's data inside the spec, e.g. ``'target'``.

    Returns:
        ``'<key.path>: <what is wrong>; got <value>'`` for the first problem, plus a count
        of the others.
    """
    details = error.errors()
    # An unknown key is often a misspelt required one, which then shows up as missing too.
    first = min(details, key=lambda detail: detail["type"] != "extra_forbidden")
    line = f"{format_path(prefix, tuple(first['loc']))}: {_explain(first, model)}"
    if len(details) > 1:
        line += f" (and {len(details) - 1} more problem{'s' if len(details) > 2 else ''})"
    return line
