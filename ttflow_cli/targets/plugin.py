"""Load a target class from a Python file named by a spec (``plugin: path.py:ClassName``).

A plugin file runs with the full rights of the user, like any Python script, and is
imported only when a spec names it. The class must subclass
:class:`ttflow_cli.targets.base.Target`; the spec's other target keys become keyword
arguments of its constructor.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from ttflow_cli.errors import ConfigError
from ttflow_cli.targets.base import Target

_REFERENCE_HINT = "expected 'path/to/file.py:ClassName'"


def parse_plugin_reference(reference: object, spec_dir: Path) -> tuple[Path, str]:
    """Split ``'path/to/file.py:ClassName'`` into an absolute path and a class name.

    A relative path is taken relative to ``spec_dir``. The last colon separates the
    class name, so Windows drive letters survive.

    Raises:
        ConfigError: when the reference is not of that form.
    """
    if not isinstance(reference, str) or ":" not in reference:
        raise ConfigError(f"target.plugin: {_REFERENCE_HINT}; got {reference!r}")
    file_part, class_name = reference.rsplit(":", 1)
    if not file_part or not class_name.isidentifier():
        raise ConfigError(f"target.plugin: {_REFERENCE_HINT}; got {reference!r}")
    path = Path(file_part).expanduser()
    if not path.is_absolute():
        path = spec_dir / path
    return path.resolve(), class_name


def _module_name(path: Path) -> str:
    # Unique per file, so that two plugins with the same file name do not collide.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    stem = re.sub(r"\W", "_", path.stem)
    return f"ttflow_plugin_{stem}_{digest}"


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise ConfigError(f"target.plugin: plugin file not found: {path}; check the path in the spec")
    name = _module_name(path)
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"target.plugin: cannot import {path}; a plugin must be a .py file")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before running so that dataclasses and pickling inside the plugin work.
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the plugin is user code and may fail in any way
        del sys.modules[name]
        raise ConfigError(
            f"target.plugin: importing {path} failed with {type(exc).__name__}: {exc}"
        ) from exc
    return module


def load_plugin_class(path: Path, class_name: str) -> type[Target]:
    """Import ``path`` and return its class ``class_name``, checked to subclass ``Target``.

    Raises:
        ConfigError: when the file is missing or fails to import, or the class is
            missing or is not a ``Target`` subclass.
    """
    module = _import_file(path)
    candidate = getattr(module, class_name, None)
    if candidate is None:
        found = sorted(
            name
            for name, value in vars(module).items()
            if inspect.isclass(value) and issubclass(value, Target) and value is not Target
        )
        listing = ", ".join(found) if found else "none"
        raise ConfigError(
            f"target.plugin: class '{class_name}' not found in {path}; Target subclasses there: {listing}"
        )
    if not (inspect.isclass(candidate) and issubclass(candidate, Target)):
        raise ConfigError(
            f"target.plugin: '{class_name}' in {path} must be a subclass of "
            f"ttflow_cli.targets.base.Target; got {candidate!r}"
        )
    return candidate


def instantiate_plugin(cls: type[Target], params: dict[str, Any], reference: str) -> Target:
    """Construct ``cls(**params)`` and check that it has a positive integer ``dim``.

    Args:
        cls: a class returned by :func:`load_plugin_class`.
        params: the spec's target keys other than ``plugin``.
        reference: the plugin as the spec names it, for messages.

    Raises:
        ConfigError: when the constructor raises ``TypeError`` or ``ValueError`` (bad
            or missing arguments), or ``dim`` is not a positive integer.
    """
    try:
        target = cls(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"target: plugin {reference} rejected its parameters: {exc}; "
            f"the constructor takes {inspect.signature(cls)}"
        ) from exc
    dim = getattr(target, "dim", None)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(
            f"target: plugin {reference} must set 'dim' to a positive integer; got {dim!r}"
        )
    return target
