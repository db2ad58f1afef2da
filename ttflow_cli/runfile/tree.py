"""Conversion between nested Python trees and HDF5 groups, without pickles.

A tree is a dict whose values are dicts, lists or tuples, numpy arrays, torch tensors,
or int/float/bool/str/None scalars. It maps onto HDF5 as follows:

- dict: group. Keys are member names and must not be empty or contain '/'.
- array or tensor: dataset of the same shape and dtype (bool, signed or unsigned
  integer, or floating point). Arrays above ``COMPRESSION_THRESHOLD_BYTES`` are
  chunked and gzip-compressed.
- list or tuple of only ints, only floats or only bools: 1-D dataset with the
  attribute ``ttflow_list = True``.
- any other list or tuple: group with the attribute ``ttflow_list = True`` and
  items named "0", "1", ...
- scalar: attribute of the enclosing group. Keys whose value is None are listed
  in the group attribute ``ttflow_none``, a JSON array of names.

Reading returns numpy arrays for datasets, Python scalars for attributes and lists
for marked groups and datasets, so tuples come back as lists. Only numeric datasets,
numeric attributes and UTF-8 string attributes are written, and the reader raises
ValueError on object, compound and complex data and on soft and external links.
h5py reads HDF5 data into numpy types without pickle, so reading an untrusted file
runs no code from it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np
import torch

LIST_MARKER = "ttflow_list"
NONE_MARKER = "ttflow_none"
RESERVED_NAMES = frozenset({LIST_MARKER, NONE_MARKER})

# numpy dtype kinds that may be stored: bool, signed int, unsigned int, float.
ARRAY_KINDS = "biuf"
COMPRESSION_THRESHOLD_BYTES = 1 << 20
# Guards the reader against hard-link cycles in a crafted file.
MAX_DEPTH = 64

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_SCALAR_TYPES = (bool, int, float, str, np.bool_, np.integer, np.floating)


def write_tree(group: h5py.Group, tree: Mapping[str, Any], *, path: str = "") -> None:
    """Write the entries of ``tree`` into ``group`` as groups, datasets and attributes.

    ``path`` is the key path of ``group`` and only prefixes error messages.

    Raises:
        TypeError: a key is not a str, or a value has an unsupported type or dtype.
        ValueError: a key is empty, contains '/' or is a reserved name, or a scalar
            cannot be stored (an int outside int64, a str with a NUL character).
        Every message starts with the key path, such as ``/flow/layers/0/weight``.
    """
    none_keys = []
    for key, value in tree.items():
        child_path = f"{path}/{key}"
        check_key(key, path)
        if value is None:
            none_keys.append(key)
        else:
            _write_value(group, key, value, child_path)

    if none_keys:
        group.attrs[NONE_MARKER] = json.dumps(_read_none_keys(group) + none_keys)


def read_tree(group: h5py.Group) -> dict[str, Any] | list[Any]:
    """Read a group written by :func:`write_tree`, as a dict or, for a marked group, a list.

    Raises:
        ValueError: the group contains a soft or external link, a dataset or attribute
            of an unsupported type, a malformed marker, or nesting deeper than
            ``MAX_DEPTH``. The message starts with the HDF5 path.
    """
    return _read_group(group, depth=0)


def read_attributes(obj: h5py.Group | h5py.Dataset) -> dict[str, Any]:
    """Read the attributes of ``obj`` as Python scalars, leaving out the markers.

    Raises:
        ValueError: an attribute has an unsupported type or the None marker is malformed.
    """
    values = {}
    for name in obj.attrs:
        if name not in RESERVED_NAMES:
            values[name] = _attribute_value(obj.attrs[name], f"{_hdf5_path(obj)}@{name}")
    for name in _read_none_keys(obj):
        values[name] = None
    return values


def to_numpy(value: np.ndarray | torch.Tensor, path: str) -> np.ndarray:
    """Convert an array or tensor to a numpy array of a dtype that may be stored.

    A tensor is detached, moved to the CPU and copied, so later in-place updates of
    the tensor do not change the result.

    Raises:
        TypeError: the dtype is not bool, integer or floating point, or the tensor has
            no numpy equivalent (bfloat16). The message starts with ``path``.
    """
    if isinstance(value, torch.Tensor):
        try:
            array = value.detach().cpu().numpy().copy()
        except (TypeError, RuntimeError) as error:
            raise TypeError(
                f"{path}: cannot convert a tensor of dtype {value.dtype} to a numpy array "
                f"({error}); convert it to float32 or float64 first"
            ) from error
    else:
        array = value

    if array.dtype.kind not in ARRAY_KINDS:
        raise TypeError(
            f"{path}: unsupported array dtype {array.dtype}; "
            "expected bool, integer or floating point"
        )
    return array


def check_key(key: Any, path: str) -> None:
    """Raise unless ``key`` can name a member of the group at key path ``path``.

    Raises:
        TypeError: ``key`` is not a str.
        ValueError: ``key`` is empty, ".", contains '/' or is a reserved name.
    """
    where = path or "/"
    if not isinstance(key, str):
        raise TypeError(f"{where}: key {key!r} has type {type(key).__name__}; expected a str")
    if key in ("", ".") or "/" in key:
        raise ValueError(
            f"{where}: invalid key {key!r}; a key must be non-empty and contain no '/'"
        )
    if key in RESERVED_NAMES:
        raise ValueError(f"{where}: key {key!r} is reserved for the run file format")


def flatten_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Convert a torch optimizer ``state_dict()`` into a tree for :func:`write_tree`.

    The per-parameter ``state`` is keyed by parameter index (int); the tree keys it by
    the index as a decimal string. Tensors become numpy arrays and tuples become lists.
    ``param_groups`` stays a list of dicts. :func:`unflatten_state_dict` reverses this.

    Raises:
        ValueError: ``state_dict`` lacks the keys ``state`` and ``param_groups``.
        TypeError: a key of ``state`` is not an int.
    """
    missing = [key for key in ("state", "param_groups") if key not in state_dict]
    if missing:
        raise ValueError(
            f"expected an optimizer state_dict with keys 'state' and 'param_groups'; "
            f"got keys {sorted(state_dict)}"
        )

    per_parameter = {}
    for index, values in state_dict["state"].items():
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(
                f"optimizer state key {index!r} is not a parameter index; expected an int"
            )
        per_parameter[str(index)] = _tensors_to_arrays(values, f"/state/{index}")

    tree = {"state": per_parameter}
    for name, value in state_dict.items():
        if name != "state":
            tree[name] = _tensors_to_arrays(value, f"/{name}")
    return tree


def unflatten_state_dict(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Rebuild an optimizer state_dict from the tree of :func:`flatten_state_dict`.

    Accepts the tree as returned by :func:`read_tree`: numpy arrays become tensors
    and the keys of ``state`` become ints, so the result can be passed to
    ``optimizer.load_state_dict``.

    Raises:
        ValueError: a key of ``state`` is not a decimal integer or a key is missing.
    """
    missing = [key for key in ("state", "param_groups") if key not in tree]
    if missing:
        raise ValueError(f"optimizer state tree lacks {missing}; got keys {sorted(tree)}")

    per_parameter = {}
    for index, values in tree["state"].items():
        if not index.isdigit():
            raise ValueError(
                f"optimizer state key {index!r} is not a parameter index; expected digits"
            )
        per_parameter[int(index)] = _arrays_to_tensors(values)

    state_dict = {"state": per_parameter}
    for name, value in tree.items():
        if name != "state":
            state_dict[name] = _arrays_to_tensors(value)
    return state_dict


def _write_value(group: h5py.Group, key: str, value: Any, path: str) -> None:
    if isinstance(value, Mapping):
        write_tree(group.create_group(key, track_order=True), value, path=path)
    elif isinstance(value, (list, tuple)):
        _write_list(group, key, value, path)
    elif isinstance(value, (np.ndarray, torch.Tensor)):
        _write_array(group, key, to_numpy(value, path))
    elif isinstance(value, _SCALAR_TYPES):
        _write_attribute(group, key, value, path)
    else:
        raise TypeError(
            f"{path}: unsupported value of type {type(value).__name__}; a run file stores "
            "dicts, lists, numpy arrays, torch tensors and int/float/bool/str/None"
        )


def _write_list(group: h5py.Group, key: str, items: Sequence[Any], path: str) -> None:
    dtype = _number_list_dtype(items)
    if dtype is not None:
        dataset = group.create_dataset(key, data=np.asarray(items, dtype=dtype))
        dataset.attrs[LIST_MARKER] = True
        return

    list_group = group.create_group(key, track_order=True)
    list_group.attrs[LIST_MARKER] = True
    write_tree(list_group, {str(index): item for index, item in enumerate(items)}, path=path)


def _number_list_dtype(items: Sequence[Any]) -> type | None:
    """Return the dtype for a non-empty list of only bools, only ints or only floats, else None."""
    if not items:
        return None
    item_types = {type(item) for item in items}
    if item_types == {bool}:
        return np.bool_
    if item_types == {float}:
        return np.float64
    if item_types == {int} and all(_INT64_MIN <= item <= _INT64_MAX for item in items):
        return np.int64
    return None


def _write_array(group: h5py.Group, key: str, array: np.ndarray) -> None:
    if array.nbytes > COMPRESSION_THRESHOLD_BYTES:
        group.create_dataset(key, data=array, chunks=True, compression="gzip", shuffle=True)
    else:
        group.create_dataset(key, data=array)


def _write_attribute(group: h5py.Group, key: str, value: Any, path: str) -> None:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        # h5py maps only the exact str type to a UTF-8 string; subclasses such as
        # torch.__version__ would fall back to an unsupported numpy '<U' dtype.
        value = str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"{path}: integer {value} does not fit in int64")

    try:
        group.attrs[key] = value
    except (TypeError, ValueError) as error:
        message = f"{path}: cannot store the {type(value).__name__} value: {error}"
        raise ValueError(message) from error


def _read_group(group: h5py.Group, depth: int) -> dict[str, Any] | list[Any]:
    if depth > MAX_DEPTH:
        raise ValueError(f"{group.name}: groups are nested deeper than {MAX_DEPTH} levels")

    entries = read_attributes(group)
    for name in group:
        member_path = f"{_hdf5_path(group).rstrip('/')}/{name}"
        link = group.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            raise ValueError(
                f"{member_path}: {type(link).__name__} is not supported; expected a group or dataset"
            )
        member = group[name]
        if isinstance(member, h5py.Group):
            entries[name] = _read_group(member, depth + 1)
        elif isinstance(member, h5py.Dataset):
            entries[name] = _read_dataset(member)
        else:
            raise ValueError(
                f"{member_path}: {type(member).__name__} is not supported; expected a group or dataset"
            )

    if not _has_list_marker(group):
        return entries
    expected_names = {str(index) for index in range(len(entries))}
    if set(entries) != expected_names:
        raise ValueError(
            f"{group.name}: list group members must be named 0 to {len(entries) - 1}; "
            f"got {sorted(entries)}"
        )
    return [entries[str(index)] for index in range(len(entries))]


def _read_dataset(dataset: h5py.Dataset) -> np.ndarray | list[Any]:
    if dataset.shape is None or dataset.dtype.kind not in ARRAY_KINDS:
        raise ValueError(
            f"{dataset.name}: unsupported dataset of dtype {dataset.dtype} "
            f"and shape {dataset.shape}; "
            "expected a bool, integer or floating-point array"
        )

    array = np.asarray(dataset[()])
    if not _has_list_marker(dataset):
        return array
    if array.ndim != 1:
        raise ValueError(f"{dataset.name}: a list dataset must be 1-D; got shape {array.shape}")
    return array.tolist()


def _attribute_value(value: Any, path: str) -> Any:
    if isinstance(value, h5py.Empty):
        return None
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in ARRAY_KINDS:
            raise ValueError(f"{path}: unsupported attribute of dtype {value.dtype}")
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"{path}: unsupported attribute of type {type(value).__name__}")


def _read_none_keys(obj: h5py.Group | h5py.Dataset) -> list[str]:
    if NONE_MARKER not in obj.attrs:
        return []
    text = obj.attrs[NONE_MARKER]
    try:
        names = json.loads(text)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{_hdf5_path(obj)}@{NONE_MARKER}: invalid JSON: {error}") from error
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(
            f"{_hdf5_path(obj)}@{NONE_MARKER}: expected a JSON array of names; got {text!r}"
        )
    return names


def _has_list_marker(obj: h5py.Group | h5py.Dataset) -> bool:
    marker = obj.attrs.get(LIST_MARKER)
    return isinstance(marker, (bool, np.bool_)) and bool(marker)


def _hdf5_path(obj: h5py.Group | h5py.Dataset) -> str:
    # h5py returns None as the name of an anonymous object.
    return obj.name or "?"


def _tensors_to_arrays(value: Any, path: str) -> Any:
    if isinstance(value, torch.Tensor):
        return to_numpy(value, path)
    if isinstance(value, Mapping):
        return {key: _tensors_to_arrays(item, f"{path}/{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_tensors_to_arrays(item, f"{path}/{index}") for index, item in enumerate(value)]
    return value


def _arrays_to_tensors(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, Mapping):
        return {key: _arrays_to_tensors(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_arrays_to_tensors(item) for item in value]
    return value
