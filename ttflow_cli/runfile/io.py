"""Atomic reading and writing of run files and sample files (HDF5).

A run file contains one top-level group per part of a run (``config``, ``tt``, ``flow``,
``train``, ``samples``, ``results``), each written by :func:`write_tree`. Its root
attributes name the format, its version and the creation time, and record the versions
of ttflow, torch, numpy, h5py and HDF5. A sample file has the same root attributes with
the format name ``ttflow-samples`` and a single ``samples`` group.

The ``samples`` group of either file holds the datasets ``x`` of shape ``(N, d)`` and
``log_q``, ``log_p``, ``log_w`` of shape ``(N,)``, chunked along the first axis with
an unlimited first dimension so that samples can be appended.

Every write goes to a hidden temporary file in the destination directory, which then
replaces the destination with ``os.replace``. A failed write removes the temporary
file and leaves an existing destination untouched. A process killed during a write
can leave a temporary file named ``.<name>.tmp-<pid>-<hex>`` behind.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from ttflow_cli import __version__
from ttflow_cli.errors import RunFileError
from ttflow_cli.runfile.tree import check_key, read_attributes, read_tree, to_numpy, write_tree

logger = logging.getLogger(__name__)

FORMAT_NAME = "ttflow-run"
SAMPLES_FORMAT_NAME = "ttflow-samples"
FORMAT_VERSION = 1

SAMPLES_GROUP = "samples"
SAMPLE_KEYS = ("x", "log_q", "log_p", "log_w")
# HDF5 allocates whole chunks, so a small file wastes at most one chunk per dataset.
SAMPLE_CHUNK_BYTES = 64 * 1024

# Root attributes that the writer sets, so callers cannot pass them in ``attrs``.
WRITER_ATTRS = frozenset(
    {
        "format",
        "format_version",
        "created_at",
        "updated_at",
        "ttflow_version",
        "torch_version",
        "numpy_version",
        "h5py_version",
        "hdf5_version",
    }
)

# Format name -> (what the user calls the file, the command that writes it).
_FILE_KINDS = {
    FORMAT_NAME: ("run file", "ttflow fit"),
    SAMPLES_FORMAT_NAME: ("sample file", "ttflow sample"),
}


@dataclass
class RunData:
    """Contents read from a run file or sample file.

    Attributes:
        path: the file that was read.
        attrs: root attributes, such as ``format_version``, ``created_at`` and ``seed``.
        tree: top-level group name -> contents as returned by :func:`read_tree`.
    """

    path: Path
    attrs: dict[str, Any]
    tree: dict[str, Any]


def write_run(
    path: Path,
    tree: Mapping[str, Mapping[str, Any]],
    *,
    overwrite: bool = False,
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write ``tree`` to a new run file at ``path``, one top-level group per key.

    Each value of ``tree`` must be a dict. A ``samples`` entry must contain the arrays
    that :func:`write_samples` requires and is written as resizable datasets.
    ``attrs`` adds root attributes such as the command line and the seed; values must
    be int, float, bool, str or None. The parent directory is created if needed.

    Raises:
        RunFileError: ``path`` exists and ``overwrite`` is false (raised before any
            other work), ``path`` is a directory, or the file cannot be written.
        TypeError, ValueError: ``tree`` or ``attrs`` contains an unsupported key or
            value; the message names the key path. No file is changed.
    """
    path = Path(path)
    check_destination(path, FORMAT_NAME, overwrite)
    root_attrs = _root_attrs(FORMAT_NAME, attrs)
    _check_groups(tree)

    def fill(file: h5py.File) -> None:
        write_tree(file, root_attrs)
        _write_groups(file, tree)

    _write_atomically(path, FORMAT_NAME, fill)


def update_run(path: Path, updates: Mapping[str, Mapping[str, Any]]) -> None:
    """Replace or add top-level groups of the run file at ``path``, atomically.

    The root attributes and the groups not in ``updates`` are copied into a new file,
    which then replaces ``path``. The root attribute ``updated_at`` records the time.

    Raises:
        RunFileError: ``path`` is not a readable run file of a supported version, or
            the new file cannot be written.
        TypeError, ValueError: ``updates`` contains an unsupported key or value.
    """
    path = Path(path)
    _open_checked(path, (FORMAT_NAME,)).close()
    _check_groups(updates)

    def fill(file: h5py.File) -> None:
        with _open_checked(path, (FORMAT_NAME,)) as source:
            for name, value in source.attrs.items():
                file.attrs[name] = value
            existing = list(source)
            # A replaced group keeps its place in the group order.
            for name in existing:
                if name in updates:
                    _write_groups(file, {name: updates[name]})
                else:
                    source.copy(source[name], file, name=name)
        file.attrs["updated_at"] = _utc_now()
        added = {name: value for name, value in updates.items() if name not in existing}
        _write_groups(file, added)

    _write_atomically(path, FORMAT_NAME, fill)


def read_run(path: Path, groups: Iterable[str] | None = None) -> RunData:
    """Read the root attributes and the requested top-level groups (all if None) of a run file.

    Raises:
        RunFileError: the file is missing, not HDF5, of another format or a newer
            format version, lacks a requested group, or has unreadable contents.
    """
    return _read_file(Path(path), (FORMAT_NAME,), groups)


def write_samples(
    path: Path,
    samples: Mapping[str, np.ndarray | torch.Tensor],
    *,
    overwrite: bool = False,
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write a new sample file with the group ``/samples``.

    ``samples`` must contain ``x`` of shape ``(N, d)`` and ``log_q``, ``log_p``,
    ``log_w`` of shape ``(N,)``; further arrays of leading dimension N are kept too.
    ``attrs`` adds root attributes as in :func:`write_run`.

    Raises:
        RunFileError: ``path`` exists and ``overwrite`` is false, ``path`` is a
            directory, or the file cannot be written.
        TypeError, ValueError: an array is missing or has an unsupported dtype or shape.
    """
    path = Path(path)
    check_destination(path, SAMPLES_FORMAT_NAME, overwrite)
    root_attrs = _root_attrs(SAMPLES_FORMAT_NAME, attrs)
    arrays = _sample_arrays(samples, f"/{SAMPLES_GROUP}")

    def fill(file: h5py.File) -> None:
        write_tree(file, root_attrs)
        _create_sample_datasets(file.create_group(SAMPLES_GROUP, track_order=True), arrays)

    _write_atomically(path, SAMPLES_FORMAT_NAME, fill)


def read_samples(path: Path) -> RunData:
    """Read the root attributes and the ``samples`` group of a sample file or run file.

    Raises:
        RunFileError: as :func:`read_run`, including when the file has no samples.
    """
    return _read_file(Path(path), (SAMPLES_FORMAT_NAME, FORMAT_NAME), [SAMPLES_GROUP])


def append_samples(path: Path, samples: Mapping[str, np.ndarray | torch.Tensor]) -> None:
    """Append rows to the ``samples`` group of a sample file or run file, atomically.

    ``samples`` must contain the same arrays as the file, with the same trailing
    shapes. The file is copied, extended and then swapped in, so appending costs a
    copy of the whole file.

    Raises:
        RunFileError: the file is not a readable sample file or run file with samples,
            or cannot be written.
        TypeError, ValueError: the arrays do not match those in the file.
    """
    path = Path(path)
    with _open_checked(path, (SAMPLES_FORMAT_NAME, FORMAT_NAME)) as file:
        format_name = _attribute_text(file.attrs["format"])
        group = file.get(SAMPLES_GROUP)
        if not isinstance(group, h5py.Group):
            raise RunFileError(_missing_group_message(path, SAMPLES_GROUP, format_name))
        stored_shapes = {}
        for name, dataset in group.items():
            resizable = (
                isinstance(dataset, h5py.Dataset) and dataset.ndim > 0 and dataset.maxshape[0] is None
            )
            if not resizable:
                raise RunFileError(
                    f"{path}: '/{SAMPLES_GROUP}/{name}' is not a resizable dataset; "
                    "cannot append samples to it"
                )
            stored_shapes[name] = dataset.shape
    arrays = _sample_arrays(samples, f"/{SAMPLES_GROUP}")
    _check_appendable(arrays, stored_shapes)

    def extend(file: h5py.File) -> None:
        group = file[SAMPLES_GROUP]
        for name, array in arrays.items():
            dataset = group[name]
            start = dataset.shape[0]
            dataset.resize(start + array.shape[0], axis=0)
            dataset[start:] = array

    _write_atomically(path, format_name, extend, copy_existing=True)


def _write_groups(file: h5py.File, tree: Mapping[str, Mapping[str, Any]]) -> None:
    for name, value in tree.items():
        if name == SAMPLES_GROUP:
            group = file.create_group(name, track_order=True)
            _create_sample_datasets(group, _sample_arrays(value, f"/{name}"))
        else:
            write_tree(file, {name: value})


def _check_groups(tree: Mapping[str, Any]) -> None:
    for name, value in tree.items():
        if not isinstance(value, Mapping):
            raise TypeError(
                f"/{name}: a top-level entry of a run file must be a dict (written as a group); "
                f"got {type(value).__name__}"
            )


def _root_attrs(format_name: str, attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    root = {
        "format": format_name,
        "format_version": FORMAT_VERSION,
        "created_at": _utc_now(),
        "ttflow_version": __version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "h5py_version": h5py.__version__,
        "hdf5_version": h5py.version.hdf5_version,
    }
    for key, value in (attrs or {}).items():
        if key in WRITER_ATTRS:
            raise ValueError(f"root attribute {key!r} is set by the writer; choose another name")
        if value is not None and not isinstance(value, (bool, int, float, str, np.generic)):
            raise TypeError(
                f"root attribute {key!r} must be int, float, bool, str or None; "
                f"got {type(value).__name__}"
            )
        root[key] = value
    return root


def _sample_arrays(samples: Mapping[str, Any], path: str) -> dict[str, np.ndarray]:
    missing = [key for key in SAMPLE_KEYS if key not in samples]
    if missing:
        raise ValueError(
            f"{path}: missing sample arrays {missing}; expected {', '.join(SAMPLE_KEYS)}"
        )

    arrays = {}
    for name, value in samples.items():
        check_key(name, path)
        if not isinstance(value, (np.ndarray, torch.Tensor)):
            raise TypeError(
                f"{path}/{name}: expected an array or tensor; got {type(value).__name__}"
            )
        arrays[name] = to_numpy(value, f"{path}/{name}")

    x = arrays["x"]
    if x.ndim != 2:
        raise ValueError(f"{path}/x: expected shape (N, d); got {x.shape}")
    count = x.shape[0]
    for name, array in arrays.items():
        if name != "x" and name in SAMPLE_KEYS and array.shape != (count,):
            raise ValueError(
                f"{path}/{name}: expected shape ({count},) to match x; got {array.shape}"
            )
        if array.ndim == 0 or array.shape[0] != count:
            raise ValueError(
                f"{path}/{name}: expected {count} rows to match x; got shape {array.shape}"
            )
    return arrays


def _create_sample_datasets(group: h5py.Group, arrays: Mapping[str, np.ndarray]) -> None:
    for name, array in arrays.items():
        row_shape = array.shape[1:]
        row_bytes = max(1, array.itemsize * int(np.prod(row_shape)))
        chunk_rows = max(1, SAMPLE_CHUNK_BYTES // row_bytes)
        group.create_dataset(
            name,
            data=array,
            chunks=(chunk_rows, *row_shape),
            maxshape=(None, *row_shape),
        )


def _check_appendable(arrays: Mapping[str, np.ndarray], stored_shapes: Mapping[str, tuple]) -> None:
    if set(arrays) != set(stored_shapes):
        raise ValueError(
            f"/{SAMPLES_GROUP}: cannot append arrays {sorted(arrays)} "
            f"to a file containing {sorted(stored_shapes)}"
        )
    for name, array in arrays.items():
        if array.shape[1:] != stored_shapes[name][1:]:
            raise ValueError(
                f"/{SAMPLES_GROUP}/{name}: cannot append rows of shape {array.shape[1:]} "
                f"to rows of shape {stored_shapes[name][1:]}"
            )


def check_destination(path: Path, format_name: str, overwrite: bool) -> None:
    """Raise ``RunFileError`` unless a file of ``format_name`` may be written at ``path``.

    Commands call this before their work starts, so a wrong ``--out`` fails at once;
    the writers call it again before they replace anything.
    """
    kind, _ = _FILE_KINDS[format_name]
    if path.is_dir():
        raise RunFileError(f"{path}: is a directory; expected the path of a {kind}")
    existing = _existing_format(path)
    if existing is not None and existing != format_name:
        # --overwrite replaces an earlier output of the same kind, never a run file
        # under a sample file's name or an HDF5 file that ttflow did not write.
        other = _FILE_KINDS[existing][0] if existing in _FILE_KINDS else "HDF5 file not written by ttflow"
        raise RunFileError(
            f"{path}: is a {other}, not a {kind}; --overwrite does not replace it, so choose another --out"
        )
    if path.exists() and not overwrite:
        raise RunFileError(
            f"{path}: {kind} already exists; pass --overwrite to replace it or choose another --out"
        )


def _existing_format(path: Path) -> str | None:
    """Return the format attribute of an existing HDF5 file ('' when it has none), else None.

    None also covers a file that is not HDF5 at all, such as a truncated earlier
    output, which ``--overwrite`` may replace.
    """
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as file:
            value = file.attrs.get("format", "")
    except OSError:
        return None
    return str(_attribute_text(value))


def _write_atomically(
    path: Path,
    format_name: str,
    fill: Callable[[h5py.File], None],
    *,
    copy_existing: bool = False,
) -> None:
    """Run ``fill`` on a temporary HDF5 file, then move it to ``path``.

    With ``copy_existing`` the temporary file starts as a copy of ``path`` and is
    opened for modification; otherwise it starts empty.
    """
    kind, _ = _FILE_KINDS[format_name]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunFileError(f"{path}: cannot create the directory {path.parent}: {error}") from error

    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        if copy_existing:
            shutil.copyfile(path, temporary)
        with h5py.File(temporary, "r+" if copy_existing else "w-", track_order=True) as file:
            fill(file)
        _fsync(temporary)
        os.replace(temporary, path)
    except OSError as error:
        _remove_temporary(temporary)
        raise RunFileError(f"{path}: cannot write the {kind}: {error}") from error
    except BaseException:
        _remove_temporary(temporary)
        raise
    _fsync_directory(path.parent)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(directory: Path) -> None:
    """Flush the directory entry of a replaced file to disk, on POSIX systems only."""
    if os.name != "posix":
        return
    try:
        _fsync(directory)
    except OSError as error:
        # The file is already in place, so only its durability after a power loss is at stake.
        logger.warning("failed to sync directory %s after writing: %s", directory, error)


def _remove_temporary(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as error:
        logger.warning("failed to remove temporary file %s: %s", path, error)


def _read_file(path: Path, formats: tuple[str, ...], groups: Iterable[str] | None) -> RunData:
    if isinstance(groups, str):
        raise TypeError(f"groups must be an iterable of group names, not the str {groups!r}")

    with _open_checked(path, formats) as file:
        format_name = _attribute_text(file.attrs["format"])
        names = list(file) if groups is None else list(groups)
        tree = {name: _read_top_level_group(path, file, name, format_name) for name in names}
        try:
            attrs = read_attributes(file)
        except ValueError as error:
            raise RunFileError(f"{path}: cannot read the root attributes: {error}") from error
    return RunData(path=path, attrs=attrs, tree=tree)


def _read_top_level_group(path: Path, file: h5py.File, name: str, format_name: str) -> Any:
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"invalid group name {name!r}; expected a top-level name such as 'tt'")
    if name not in file:
        raise RunFileError(_missing_group_message(path, name, format_name))
    is_hard_link = isinstance(file.get(name, getlink=True), h5py.HardLink)
    if not is_hard_link or not isinstance(file[name], h5py.Group):
        raise RunFileError(f"{path}: '/{name}' is not a group; the file was not written by ttflow")

    try:
        return read_tree(file[name])
    except (ValueError, OSError) as error:
        raise RunFileError(f"{path}: cannot read group '/{name}': {error}") from error


def _missing_group_message(path: Path, name: str, format_name: str) -> str:
    _, writer = _FILE_KINDS[format_name]
    return f"{path}: missing group '/{name}'; the file is incomplete or was not written by {writer}"


def _open_checked(path: Path, formats: tuple[str, ...]) -> h5py.File:
    """Open ``path`` for reading after checking that it is a file of one of ``formats``."""
    kind, writer = _FILE_KINDS[formats[0]]
    if not path.exists():
        raise RunFileError(f"{path}: {kind} not found")
    if path.is_dir():
        raise RunFileError(f"{path}: is a directory; expected a {kind}")

    try:
        file = h5py.File(path, "r")
    except OSError as error:
        if not _is_hdf5(path):
            raise RunFileError(
                f"{path}: not an HDF5 file (expected a {kind} written by {writer})"
            ) from error
        raise RunFileError(f"{path}: cannot open the {kind}: {error}") from error

    try:
        _check_format(path, file, formats)
    except BaseException:
        file.close()
        raise
    return file


def _is_hdf5(path: Path) -> bool:
    try:
        return h5py.is_hdf5(path)
    except OSError:
        return False


def _check_format(path: Path, file: h5py.File, formats: tuple[str, ...]) -> None:
    kind, writer = _FILE_KINDS[formats[0]]
    try:
        format_name = _attribute_text(file.attrs.get("format"))
        version = file.attrs.get("format_version")
    except (OSError, TypeError, ValueError) as error:
        raise RunFileError(f"{path}: cannot read the format attributes: {error}") from error

    if format_name is None:
        raise RunFileError(
            f"{path}: HDF5 file without a 'format' attribute "
            f"(expected a {kind} written by {writer})"
        )
    if not isinstance(format_name, str) or format_name not in formats:
        raise RunFileError(
            f"{path}: file format is {format_name!r} (expected a {kind} written by {writer}, "
            f"format {formats[0]!r})"
        )
    is_integer = isinstance(version, (int, np.integer)) and not isinstance(version, (bool, np.bool_))
    if not is_integer or version < 1:
        raise RunFileError(
            f"{path}: invalid format_version attribute {version!r}; expected a positive integer"
        )
    if version > FORMAT_VERSION:
        raise RunFileError(
            f"{path}: written by a newer ttflow (format version {version}; "
            f"this version reads up to {FORMAT_VERSION}); upgrade ttflow"
        )


def _attribute_text(value: Any) -> Any:
    """Decode a fixed-length bytes attribute, which other HDF5 writers produce, to str."""
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", errors="replace")
    return value


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
