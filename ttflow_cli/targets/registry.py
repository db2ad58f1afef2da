"""The built-in targets by name, and construction of a target from a spec's ``target`` section.

A section names either a built-in or a plugin file, and the other keys are parameters::

    target: {name: ginzburg_landau_1d, sites: 50, beta: 0.125}
    target: {plugin: phi4_lattice.py:Phi4Lattice, sites: 4, kappa: 0.25, lam: 0.5}

Errors are :class:`ConfigError` messages that start with the key path, for example
``target.sites: must be a positive integer; got -3``. The spec loader prefixes the file.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ttflow_cli.errors import ConfigError
from ttflow_cli.targets.banana import Banana, BananaParams
from ttflow_cli.targets.base import Target
from ttflow_cli.targets.gaussian_mixture import GaussianMixture, GaussianMixtureParams
from ttflow_cli.targets.ginzburg_landau import (
    GinzburgLandau1D,
    GinzburgLandau1DParams,
    GinzburgLandau2D,
    GinzburgLandau2DParams,
)
from ttflow_cli.targets.many_well import ManyWell, ManyWellParams
from ttflow_cli.targets.params import format_validation_error, show_value
from ttflow_cli.targets.plugin import instantiate_plugin, load_plugin_class, parse_plugin_reference

BUILTIN_TARGETS: dict[str, tuple[type[BaseModel], type[Target]]] = {
    "ginzburg_landau_1d": (GinzburgLandau1DParams, GinzburgLandau1D),
    "ginzburg_landau_2d": (GinzburgLandau2DParams, GinzburgLandau2D),
    "many_well": (ManyWellParams, ManyWell),
    "gaussian_mixture": (GaussianMixtureParams, GaussianMixture),
    "banana": (BananaParams, Banana),
}
"""Built-in target name -> (parameter model, target class)."""

_SECTION_HINT = "give either 'name: <built-in target>' or 'plugin: path/to/file.py:ClassName'"


def _split_section(section: object) -> tuple[str, str, dict[str, Any]]:
    """Return ``('name' or 'plugin', its value, the other keys)``."""
    if not isinstance(section, Mapping):
        raise ConfigError(f"target: must be a mapping; {_SECTION_HINT}; got {show_value(section)}")
    keys = [key for key in ("name", "plugin") if key in section]
    if len(keys) != 1:
        problem = "both 'name' and 'plugin' are set" if keys else "neither 'name' nor 'plugin' is set"
        raise ConfigError(f"target: {problem}; {_SECTION_HINT}")
    kind = keys[0]
    params = {str(key): value for key, value in section.items() if key != kind}
    return kind, section[kind], params


def _builtin_entry(name: object) -> tuple[type[BaseModel], type[Target]]:
    if isinstance(name, str) and name in BUILTIN_TARGETS:
        return BUILTIN_TARGETS[name]
    names = sorted(BUILTIN_TARGETS)
    close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError(
        f"target.name: unknown built-in target {show_value(name)}; {hint}"
        f"built-ins: {', '.join(names)}; a Python file is named with 'plugin:' instead"
    )


def validate_builtin_params(name: str, params: Mapping[str, Any]) -> BaseModel:
    """Validate the parameters of built-in target ``name`` against its model.

    Raises:
        ConfigError: naming the key path, e.g. ``target.sites: must be a positive integer; got -3``.
    """
    model, _ = _builtin_entry(name)
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model, prefix="target")) from exc


def resolve_target_section(section: Mapping[str, Any], spec_dir: Path) -> dict[str, Any]:
    """Validate a ``target`` section and return it with every default filled.

    A built-in's parameters are validated and completed from its model. A plugin's
    path is made absolute, relative to ``spec_dir``, so that the section still works
    when stored in a run file. Its parameters pass through unchanged, because only the
    plugin's constructor validates them.

    Raises:
        ConfigError: naming the key path of the first problem.
    """
    kind, value, params = _split_section(section)
    if kind == "plugin":
        path, class_name = parse_plugin_reference(value, spec_dir)
        return {"plugin": f"{path}:{class_name}", **params}
    validated = validate_builtin_params(value, params)
    return {"name": value, **validated.model_dump(exclude_none=True)}


def build_target(section: Mapping[str, Any], spec_dir: Path) -> Target:
    """Build the target that a spec's ``target`` section describes.

    Args:
        section: ``{'name': <built-in>, **params}`` or ``{'plugin': 'file.py:Class', **params}``.
        spec_dir: directory against which a relative plugin path is resolved.

    Returns:
        The constructed target.

    Raises:
        ConfigError: for an unknown name, invalid parameters, or a plugin that cannot
            be found, imported or constructed. The message starts with the key path.
    """
    kind, value, params = _split_section(section)
    if kind == "plugin":
        path, class_name = parse_plugin_reference(value, spec_dir)
        cls = load_plugin_class(path, class_name)
        return instantiate_plugin(cls, params, reference=str(value))
    validated = validate_builtin_params(value, params)
    _, cls = _builtin_entry(value)
    return cls(**validated.model_dump())
