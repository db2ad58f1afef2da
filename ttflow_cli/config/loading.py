"""Read, override, validate and write run specs.

Every failure is a :class:`ConfigError` with one line of the form
``<file>: <key.path>: <what is wrong>; got <value>``, plus a hint where one helps:

    gl1d.yaml: tt.max_rnk: unknown key; did you mean 'max_rank'?
    gl1d.yaml: train.steps: must be a non-negative integer; got 'many'
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ttflow_cli.config.spec import NAME_PATTERN, Interval, Spec
from ttflow_cli.errors import ConfigError
from ttflow_cli.targets.base import Target
from ttflow_cli.targets.params import format_validation_error, show_value, suggest_key
from ttflow_cli.targets.registry import build_target, resolve_target_section

_TARGET_EXAMPLE = "add e.g. 'target: {name: ginzburg_landau_1d, sites: 16, beta: 1.0}'"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: spec file not found; check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; expected a YAML spec file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the spec file: {exc}") from exc


def _parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).replace("\n", " ")
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from exc
    if data is None:
        raise ConfigError(f"{source}: the spec is empty; {_TARGET_EXAMPLE}")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping of sections "
            f"(name, target, box, tt, flow, train, evaluate, seed); got {show_value(data)}"
        )
    return data


def _section_model(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    annotation = model.model_fields[key].annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _check_override_path(parts: list[str], override: str, source: str) -> None:
    """Raise unless ``parts`` names a key of the schema; keys under ``target`` pass."""
    model: type[BaseModel] | None = Spec
    for depth, part in enumerate(parts):
        prefix = ".".join(parts[:depth])
        path = ".".join(parts[: depth + 1])
        if model is None:
            raise ConfigError(f"{source}: {path}: '{prefix}' has no sub-keys; check the override '{override}'")
        if part not in model.model_fields:
            known = [f"{prefix}.{name}" if prefix else name for name in model.model_fields]
            raise ConfigError(
                f"{source}: {path}: unknown key in the override '{override}'; {suggest_key(path, known)}"
            )
        if depth == 0 and part == "target":
            return  # target parameters depend on the target; the registry checks them
        model = _section_model(model, part)


def _set_key(data: dict[str, Any], parts: list[str], value: Any, override: str, source: str) -> None:
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            path = ".".join(parts[: depth + 1])
            raise ConfigError(
                f"{source}: {path}: the override '{override}' needs a mapping here; got {show_value(child)}"
            )
        node = child
    node[parts[-1]] = value


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str], source: str) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``'dotted.key=value'`` override applied.

    The value is parsed with ``yaml.safe_load``, so ``box=[-3,3]`` gives a list and
    ``train.steps=200`` an integer. A key may be absent from the file, but it must
    exist in the schema. Keys under ``target`` are checked later, with the target's
    parameters.

    Raises:
        ConfigError: for a malformed override, an unknown key, or a value that is not YAML.
    """
    result = copy.deepcopy(dict(data))
    for override in overrides:
        key, separator, raw = override.partition("=")
        parts = key.strip().split(".")
        if not separator or not all(parts):
            raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. train.steps=200")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"override {override!r}: the value is not valid YAML: {problem}") from exc
        _check_override_path(parts, override, source)
        _set_key(result, parts, value, override, source)
    return result


def _check_intervals(box: Sequence[Any], dim: int) -> list[Interval]:
    intervals = [(float(low), float(high)) for low, high in box]
    if len(intervals) != dim:
        raise ValueError(f"expected {dim} intervals, one per coordinate; got {len(intervals)}")
    for index, (low, high) in enumerate(intervals):
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"entry {index} must be finite with low < high; got [{low}, {high}]")
    return intervals


def resolve_box(spec: Spec, target: Target) -> list[tuple[float, float]]:
    """Return the ``d`` intervals of the TT box: the spec's box, else the target's default.

    Raises:
        ConfigError: when the spec's list of intervals or the target's default box does
            not have one finite interval with ``low < high`` per coordinate.
    """
    if spec.box is None:
        try:
            return _check_intervals(target.default_box(), target.dim)
        except ValueError as exc:
            raise ConfigError(
                f"target: invalid default_box() of {type(target).__name__}: {exc}; set 'box' in the spec"
            ) from exc
    if isinstance(spec.box, tuple):
        return [spec.box] * target.dim
    try:
        return _check_intervals(spec.box, target.dim)
    except ValueError as exc:
        raise ConfigError(f"box: {exc}; a single [low, high] applies to every coordinate") from exc


def _validate(data: dict[str, Any], source: str, spec_dir: Path, default_name: str) -> tuple[Spec, Target]:
    if "target" not in data:
        raise ConfigError(f"{source}: target: missing required section; {_TARGET_EXAMPLE}")
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {format_validation_error(exc, Spec)}") from exc

    name = spec.name if spec.name is not None else default_name
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"{source}: name: the file name {name!r} is not a safe run name; "
            "set 'name:' to letters, digits, '-', '_' and '.'"
        )
    try:
        section = resolve_target_section(spec.target, spec_dir)
        target = build_target(section, spec_dir)
        spec = spec.model_copy(update={"name": name, "target": section})
        resolve_box(spec, target)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    return spec, target


def load_spec(path: Path, overrides: Sequence[str] = ()) -> tuple[Spec, Target]:
    """Read a YAML spec, apply overrides, validate it and build its target.

    Args:
        path: the spec file. Relative plugin paths in it are taken from its directory.
        overrides: ``'dotted.key=value'`` strings, applied in order (see :func:`apply_overrides`).

    Returns:
        The validated spec, with ``name`` filled from the file name when omitted and the
        target section completed (see :func:`ttflow_cli.targets.registry.resolve_target_section`),
        and the target.

    Raises:
        ConfigError: one line naming the file and the key path of the first problem.
    """
    path = Path(path)
    data = _parse_yaml(_read_text(path), str(path))
    data = apply_overrides(data, overrides, str(path))
    return _validate(data, str(path), path.resolve().parent, default_name=path.stem)


def spec_from_text(text: str, source: str, spec_dir: Path) -> tuple[Spec, Target]:
    """Validate a spec given as YAML text, e.g. the resolved spec stored in a run file.

    Args:
        text: the YAML.
        source: what error messages call the text, e.g. ``'run.h5:/config'``.
        spec_dir: directory for relative plugin paths (a resolved spec has none).

    Raises:
        ConfigError: as for :func:`load_spec`.
    """
    data = _parse_yaml(text, source)
    return _validate(data, source, Path(spec_dir), default_name=Path(source).stem)


class _SpecDumper(yaml.SafeDumper):
    """Block style for sections, flow style (``[a, b]``) for lists of plain values."""


def _represent_list(dumper: yaml.SafeDumper, items: list[Any]) -> yaml.SequenceNode:
    flat = all(not isinstance(item, (list, dict)) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flat)


_SpecDumper.add_representer(list, _represent_list)


def spec_to_yaml(spec: Spec) -> str:
    """Write the resolved spec as YAML, every default filled; :func:`spec_from_text` reads it back."""
    data = spec.model_dump(mode="json")
    return yaml.dump(data, Dumper=_SpecDumper, sort_keys=False, default_flow_style=False, width=100)
