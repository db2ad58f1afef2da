"""Run files and sample files: round trips, atomic writes, read errors, no pickles."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

from ttflow_cli import __version__
from ttflow_cli.errors import RunFileError
from ttflow_cli.runfile import (
    FORMAT_NAME,
    FORMAT_VERSION,
    SAMPLES_FORMAT_NAME,
    append_samples,
    flatten_state_dict,
    read_run,
    read_samples,
    unflatten_state_dict,
    update_run,
    write_run,
    write_samples,
)
from ttflow_cli.runfile.tree import COMPRESSION_THRESHOLD_BYTES, read_tree, write_tree

YAML_TEXT = "target:\n  name: gl1d\n  sites: 32\nnote: 'Ωmega ≈ 1'\n" * 20_000


def make_tree() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {
        "config": {"yaml": YAML_TEXT, "seed": 7, "dry_run": False, "label": None},
        "tt": {
            "cores": [rng.normal(size=(1, 5, 3)), rng.normal(size=(3, 5, 4)), rng.normal(size=(4, 5, 1))],
            "ranks": [1, 3, 4, 1],
            "box": rng.uniform(size=(3, 2)).astype(np.float32),
            "history": {"errors": [0.5, 0.25], "converged": True, "stop_reason": "tolerance"},
            "large": rng.normal(size=COMPRESSION_THRESHOLD_BYTES // 8 + 1),
        },
        "flow": {
            "layers": [
                {"weight": torch.randn(4, 3, dtype=torch.float64), "bias": torch.zeros(4)},
                {"weight": torch.randn(3, 4, requires_grad=True), "bias": None},
            ],
            "hidden": (64, 64),
            "activation": "elu",
            "mixed": [1, 2.5, "three", None, True],
            "empty": [],
            "flags": [True, False],
        },
        "train": {
            "step": 3,
            "loss": np.array([3.0, 2.0, 1.5]),
            "counts": np.arange(6, dtype=np.int32).reshape(2, 3),
            "rng_state": torch.Generator().manual_seed(5).get_state(),
            "mask": np.array([True, False]),
            "scale": np.float32(0.5),
            "zero_d": np.array(2.0),
            "learning_rate": 1e-3,
        },
    }


def expected_value(value: Any) -> Any:
    """Return what reading back ``value`` should give: arrays for tensors, lists for tuples."""
    if isinstance(value, torch.Tensor):
        return value.detach().numpy()
    if isinstance(value, dict):
        return {key: expected_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [expected_value(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def assert_same(actual: Any, expected: Any, path: str = "") -> None:
    """Assert equal values of equal types, comparing arrays by dtype, shape and contents."""
    if isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray), path
        assert actual.dtype == expected.dtype, path
        assert actual.shape == expected.shape, path
        np.testing.assert_array_equal(actual, expected, err_msg=path)
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), path
        assert set(actual) == set(expected), path
        for key in expected:
            assert_same(actual[key], expected[key], f"{path}/{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), path
        assert len(actual) == len(expected), path
        for index, (got, want) in enumerate(zip(actual, expected)):
            assert_same(got, want, f"{path}/{index}")
    else:
        assert type(actual) is type(expected), path
        assert actual == expected, path


def directory_listing(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir())


def test_tree_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    tree = make_tree()

    write_run(path, tree)
    run = read_run(path)

    assert list(run.tree) == ["config", "tt", "flow", "train"]
    assert_same(run.tree, expected_value(tree))
    assert len(run.tree["config"]["yaml"]) == len(YAML_TEXT)


def test_large_array_compressed(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    write_run(path, make_tree())

    with h5py.File(path, "r") as file:
        assert file["tt/large"].compression == "gzip"
        assert file["tt/box"].compression is None


def test_write_tree_into_group(tmp_path: Path) -> None:
    tree = {"a": {"b": [np.ones((2, 2)), {"c": None}]}, "d": "text"}

    with h5py.File(tmp_path / "plain.h5", "w") as file:
        write_tree(file.create_group("root"), tree)
        result = read_tree(file["root"])

    assert_same(result, expected_value(tree))


def test_root_attributes(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    attrs = {"command": "ttflow fit spec.yaml --seed 3", "seed": 3, "device": None}

    write_run(path, {"config": {"yaml": "a: 1\n"}}, attrs=attrs)
    run = read_run(path)

    assert run.attrs["format"] == FORMAT_NAME
    assert run.attrs["format_version"] == FORMAT_VERSION
    assert run.attrs["ttflow_version"] == __version__
    assert run.attrs["torch_version"] == torch.__version__
    assert run.attrs["numpy_version"] == np.__version__
    assert run.attrs["h5py_version"] == h5py.__version__
    assert datetime.fromisoformat(run.attrs["created_at"]).utcoffset().total_seconds() == 0
    assert run.attrs["command"] == attrs["command"]
    assert run.attrs["seed"] == 3
    assert run.attrs["device"] is None
    assert run.path == path


def test_root_attribute_set_by_writer_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'format_version' is set by the writer"):
        write_run(tmp_path / "run.h5", {}, attrs={"format_version": 2})
    with pytest.raises(TypeError, match="'argv' must be int, float, bool, str or None; got list"):
        write_run(tmp_path / "run.h5", {}, attrs={"argv": ["ttflow", "fit"]})
    assert directory_listing(tmp_path) == []


@pytest.mark.parametrize(
    ("tree", "error", "message"),
    [
        ({"flow": {"net": object()}}, TypeError, "/flow/net: unsupported value of type object"),
        ({"flow": {"a/b": 1}}, ValueError, r"/flow: invalid key 'a/b'"),
        ({"flow": {3: 1}}, TypeError, "/flow: key 3 has type int; expected a str"),
        ({"flow": {"ttflow_list": 1}}, ValueError, "'ttflow_list' is reserved"),
        ({"flow": {"n": 2**70}}, ValueError, "/flow/n: integer .* does not fit in int64"),
        ({"flow": {"z": np.zeros(2, complex)}}, TypeError, "/flow/z: unsupported array dtype complex128"),
        ({"flow": {"u": np.array(["a"])}}, TypeError, "/flow/u: unsupported array dtype <U1"),
        ({"flow": {"w": torch.zeros(2, dtype=torch.bfloat16)}}, TypeError, "/flow/w: cannot convert a tensor"),
        ({"flow": {"text": "a\x00b"}}, ValueError, "/flow/text: cannot store the str value"),
        ({"flow": {"items": [1, {"x": b"raw"}]}}, TypeError, "/flow/items/1/x: unsupported value of type bytes"),
        ({"flow": np.zeros(3)}, TypeError, "/flow: a top-level entry of a run file must be a dict"),
    ],
)
def test_unsupported_tree_rejected(tmp_path: Path, tree: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        write_run(tmp_path / "run.h5", tree)

    assert directory_listing(tmp_path) == []


def test_failed_write_keeps_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    write_run(path, make_tree())
    original = path.read_bytes()
    broken = make_tree()
    broken["flow"]["layers"][1]["activation"] = lambda x: x

    with pytest.raises(TypeError, match="/flow/layers/1/activation: unsupported value of type function"):
        write_run(path, broken, overwrite=True)

    assert path.read_bytes() == original
    assert directory_listing(tmp_path) == ["run.h5"]


def test_existing_file_without_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    write_run(path, {"config": {"yaml": "a: 1\n"}})
    original = path.read_bytes()
    modified = path.stat().st_mtime_ns
    # The check must come first: writing this tree would raise TypeError.
    unwritable = {"flow": {"net": object()}, "samples": {}}

    with pytest.raises(RunFileError, match="run.h5: run file already exists; pass --overwrite"):
        write_run(path, unwritable)

    assert path.read_bytes() == original
    assert path.stat().st_mtime_ns == modified
    assert directory_listing(tmp_path) == ["run.h5"]


def test_overwrite_replaces_file(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    write_run(path, make_tree())

    write_run(path, {"results": {"ess": 0.5}}, overwrite=True)
    run = read_run(path)

    assert list(run.tree) == ["results"]
    assert run.tree["results"]["ess"] == 0.5
    assert directory_listing(tmp_path) == ["run.h5"]


def test_write_creates_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "a" / "run.h5"

    write_run(path, {"config": {"yaml": ""}})

    assert read_run(path).tree["config"]["yaml"] == ""


def test_write_to_directory_rejected(tmp_path: Path) -> None:
    with pytest.raises(RunFileError, match="is a directory"):
        write_run(tmp_path, {}, overwrite=True)


def test_write_under_file_rejected(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")

    with pytest.raises(RunFileError, match="cannot create the directory"):
        write_run(blocker / "run.h5", {})


def write_foreign_file(path: Path, attrs: dict[str, Any]) -> None:
    with h5py.File(path, "w") as file:
        file.create_dataset("data", data=np.arange(3))
        for name, value in attrs.items():
            file.attrs[name] = value


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RunFileError, match=r"absent\.h5: run file not found"):
        read_run(tmp_path / "absent.h5")


def test_read_text_file(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("target: gl1d\n")

    with pytest.raises(RunFileError, match=r"spec\.yaml: not an HDF5 file \(expected a run file written by ttflow fit\)"):
        read_run(path)


def test_read_directory(tmp_path: Path) -> None:
    with pytest.raises(RunFileError, match="is a directory; expected a run file"):
        read_run(tmp_path)


def test_read_hdf5_without_format(tmp_path: Path) -> None:
    path = tmp_path / "foreign.h5"
    write_foreign_file(path, {})

    with pytest.raises(RunFileError, match="foreign.h5: HDF5 file without a 'format' attribute"):
        read_run(path)


def test_read_other_format(tmp_path: Path) -> None:
    path = tmp_path / "foreign.h5"
    write_foreign_file(path, {"format": "nexus", "format_version": 1})

    with pytest.raises(RunFileError, match="foreign.h5: file format is 'nexus' \\(expected a run file"):
        read_run(path)


def test_read_fixed_length_format_name(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    write_run(path, {"results": {"ess": 0.25}})
    with h5py.File(path, "r+") as file:
        file.attrs["format"] = np.bytes_(FORMAT_NAME.encode())

    assert read_run(path).tree["results"]["ess"] == 0.25


@pytest.mark.parametrize("version", [0, True, "1"])
def test_read_invalid_version(tmp_path: Path, version: Any) -> None:
    path = tmp_path / "run.h5"
    write_run(path, {"results": {}})
    with h5py.File(path, "r+") as file:
        file.attrs["format_version"] = version

    with pytest.raises(RunFileError, match="invalid format_version attribute"):
        read_run(path)


def test_read_newer_version(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    write_run(path, {"results": {}})
    with h5py.File(path, "r+") as file:
        file.attrs["format_version"] = 3

    expected = (
        "run.h5: written by a newer ttflow (format version 3; this version reads up to 1); "
        "upgrade ttflow"
    )
    with pytest.raises(RunFileError, match=re.escape(expected)):
        read_run(path)


def test_read_missing_group(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    write_run(path, {"config": {"yaml": ""}})

    expected = "run.h5: missing group '/tt'; the file is incomplete or was not written by ttflow fit"
    with pytest.raises(RunFileError, match=re.escape(expected)):
        read_run(path, groups=["config", "tt"])


def test_read_selected_groups(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    write_run(path, make_tree())

    run = read_run(path, groups=["tt"])

    assert list(run.tree) == ["tt"]
    assert [core.shape for core in run.tree["tt"]["cores"]] == [(1, 5, 3), (3, 5, 4), (4, 5, 1)]
    with pytest.raises(TypeError, match="not the str 'tt'"):
        read_run(path, groups="tt")


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda file: file["flow"].__setitem__("loop", h5py.SoftLink("/flow")), "SoftLink is not supported"),
        (
            lambda file: file["flow"].__setitem__("elsewhere", h5py.ExternalLink("other.h5", "/")),
            "ExternalLink is not supported",
        ),
        (
            lambda file: file["flow"].create_dataset("names", data=["a", "b"], dtype=h5py.string_dtype()),
            "/flow/names: unsupported dataset of dtype object",
        ),
        (lambda file: file["flow"].create_dataset("z", data=np.ones(2, complex)), "unsupported dataset of dtype complex128"),
        (lambda file: file["flow"].attrs.__setitem__("ttflow_none", "{bad json"), "ttflow_none: invalid JSON"),
        (lambda file: file["flow"].attrs.__setitem__("ttflow_list", True), "list group members must be named 0 to"),
        (lambda file: file.create_dataset("stray", data=np.ones(2)), "'/stray' is not a group"),
    ],
)
def test_read_malformed_file(tmp_path: Path, tamper: Any, message: str) -> None:
    path = tmp_path / "run.h5"
    write_run(path, {"flow": {"weight": np.ones(2)}})
    with h5py.File(path, "r+") as file:
        tamper(file)

    with pytest.raises(RunFileError, match=message):
        read_run(path)


def test_update_run_adds_and_replaces_groups(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    write_run(path, make_tree(), attrs={"seed": 11})
    before = read_run(path)

    update_run(path, {"results": {"ess": 0.75, "log_z": -1.5}, "train": {"step": 4}})
    after = read_run(path)

    assert list(after.tree) == ["config", "tt", "flow", "train", "results"]
    assert_same(after.tree["tt"], before.tree["tt"])
    assert_same(after.tree["flow"], before.tree["flow"])
    assert after.tree["train"] == {"step": 4}
    assert after.tree["results"] == {"ess": 0.75, "log_z": -1.5}
    assert after.attrs["seed"] == 11
    assert after.attrs["created_at"] == before.attrs["created_at"]
    assert "updated_at" in after.attrs
    assert directory_listing(tmp_path) == ["run.h5"]


def test_failed_update_keeps_file(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    write_run(path, make_tree())
    original = path.read_bytes()

    with pytest.raises(TypeError, match="/results/ess: unsupported value of type set"):
        update_run(path, {"results": {"ess": {0.5}}})
    with pytest.raises(ValueError, match="/samples: missing sample arrays"):
        update_run(path, {"samples": {"x": np.zeros((2, 1))}})

    assert path.read_bytes() == original
    assert directory_listing(tmp_path) == ["run.h5"]


def test_update_missing_run(tmp_path: Path) -> None:
    with pytest.raises(RunFileError, match="run file not found"):
        update_run(tmp_path / "absent" / "run.h5", {"results": {}})

    assert directory_listing(tmp_path) == []


def train_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor, steps: int) -> None:
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (model(inputs) ** 2).mean()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda params: torch.optim.Adam(params, lr=1e-2),
        lambda params: torch.optim.Adam(params, lr=1e-2, amsgrad=True, weight_decay=0.1),
        lambda params: torch.optim.AdamW(params, lr=1e-2, betas=(0.8, 0.99)),
        lambda params: torch.optim.SGD(params, lr=1e-2, momentum=0.9),
    ],
    ids=["adam", "adam-amsgrad", "adamw", "sgd-momentum"],
)
def test_optimizer_state_round_trip(tmp_path: Path, make_optimizer: Any) -> None:
    path = tmp_path / "run.h5"
    torch.manual_seed(0)
    inputs = torch.randn(16, 3, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    optimizer = make_optimizer(model.parameters())
    train_steps(model, optimizer, inputs, steps=3)

    write_run(
        path,
        {
            "flow": {name: tensor for name, tensor in model.state_dict().items()},
            "train": {"optimizer": flatten_state_dict(optimizer.state_dict())},
        },
    )
    run = read_run(path)
    resumed_model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    resumed_model.load_state_dict({name: torch.from_numpy(array) for name, array in run.tree["flow"].items()})
    resumed_optimizer = make_optimizer(resumed_model.parameters())
    resumed_optimizer.load_state_dict(unflatten_state_dict(run.tree["train"]["optimizer"]))

    train_steps(model, optimizer, inputs, steps=1)
    train_steps(resumed_model, resumed_optimizer, inputs, steps=1)

    for name, tensor in model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], tensor), name


def test_flatten_state_dict_keys(tmp_path: Path) -> None:
    parameter = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.Adam([parameter])
    parameter.grad = torch.ones(2)
    optimizer.step()

    tree = flatten_state_dict(optimizer.state_dict())

    assert list(tree["state"]) == ["0"]
    assert isinstance(tree["state"]["0"]["exp_avg"], np.ndarray)
    assert tree["param_groups"][0]["betas"] == [0.9, 0.999]
    assert unflatten_state_dict(tree)["state"][0]["exp_avg"].dtype == torch.float32
    with pytest.raises(ValueError, match="expected an optimizer state_dict"):
        flatten_state_dict({"state": {}})
    with pytest.raises(ValueError, match="'x' is not a parameter index"):
        unflatten_state_dict({"state": {"x": {}}, "param_groups": []})


def test_generator_state_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    generator = torch.Generator().manual_seed(123)
    torch.randn(5, generator=generator)

    write_run(path, {"train": {"rng_state": generator.get_state()}})
    state = read_run(path, groups=["train"]).tree["train"]["rng_state"]
    resumed = torch.Generator()
    resumed.set_state(torch.from_numpy(state))

    assert state.dtype == np.uint8
    assert torch.equal(torch.randn(5, generator=resumed), torch.randn(5, generator=generator))


def stored_dtypes(path: Path) -> list[tuple[str, np.dtype]]:
    """List the dtype of every dataset and attribute in the file, by HDF5 path."""
    dtypes = []

    def visit(name: str, obj: h5py.Group | h5py.Dataset) -> None:
        if isinstance(obj, h5py.Dataset):
            dtypes.append((name, obj.dtype))
        for attribute in obj.attrs:
            dtypes.append((f"{name}@{attribute}", obj.attrs.get_id(attribute).dtype))

    with h5py.File(path, "r") as file:
        visit("/", file)
        file.visititems(visit)
    return dtypes


def test_no_object_dtype_stored(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    tree = make_tree()
    tree["samples"] = make_samples(10)
    write_run(path, tree, attrs={"command": "ttflow fit", "seed": 1, "note": None})

    dtypes = stored_dtypes(path)

    assert len(dtypes) > 40
    for name, dtype in dtypes:
        string_info = h5py.check_string_dtype(dtype)
        assert dtype.kind in "biufS" or (string_info is not None and string_info.encoding == "utf-8"), name


def make_samples(count: int, dim: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    log_q = rng.normal(size=count)
    log_p = rng.normal(size=count)
    return {"x": rng.normal(size=(count, dim)), "log_q": log_q, "log_p": log_p, "log_w": log_p - log_q}


def test_sample_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "samples.h5"
    samples = make_samples(100)
    samples["log_q"] = torch.from_numpy(samples["log_q"])

    write_samples(path, samples, attrs={"run": "run.h5"})
    data = read_samples(path)

    assert data.attrs["format"] == SAMPLES_FORMAT_NAME
    assert data.attrs["run"] == "run.h5"
    assert_same(data.tree["samples"], expected_value(samples))
    with h5py.File(path, "r") as file:
        for name in ("x", "log_q", "log_p", "log_w"):
            dataset = file["samples"][name]
            assert dataset.maxshape[0] is None, name
            assert dataset.chunks[1:] == dataset.shape[1:], name


def test_append_samples(tmp_path: Path) -> None:
    path = tmp_path / "samples.h5"
    first = make_samples(5, seed=1)
    second = make_samples(3, seed=2)
    write_samples(path, first)

    append_samples(path, second)
    stored = read_samples(path).tree["samples"]

    for name in first:
        np.testing.assert_array_equal(stored[name], np.concatenate([first[name], second[name]]), err_msg=name)
    assert directory_listing(tmp_path) == ["samples.h5"]


def test_append_samples_to_run_file(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    write_run(path, {"config": {"yaml": ""}, "samples": make_samples(4)})

    append_samples(path, make_samples(6))

    assert read_samples(path).tree["samples"]["x"].shape == (10, 3)
    assert read_run(path).tree["config"]["yaml"] == ""


def test_append_mismatched_samples(tmp_path: Path) -> None:
    path = tmp_path / "samples.h5"
    write_samples(path, make_samples(5))
    original = path.read_bytes()

    with pytest.raises(ValueError, match="cannot append rows of shape \\(4,\\) to rows of shape \\(3,\\)"):
        append_samples(path, make_samples(2, dim=4))
    with pytest.raises(ValueError, match="cannot append arrays"):
        append_samples(path, {**make_samples(2), "energy": np.zeros(2)})

    assert path.read_bytes() == original


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"log_w": None}, r"/samples: missing sample arrays \['log_w'\]"),
        ({"x": np.zeros(10)}, r"/samples/x: expected shape \(N, d\)"),
        ({"log_p": np.zeros((10, 1))}, r"/samples/log_p: expected shape \(10,\) to match x"),
        ({"energy": np.zeros(9)}, r"/samples/energy: expected 10 rows to match x"),
    ],
)
def test_invalid_samples_rejected(tmp_path: Path, change: dict, message: str) -> None:
    samples = make_samples(10)
    for name, value in change.items():
        if value is None:
            del samples[name]
        else:
            samples[name] = value

    with pytest.raises(ValueError, match=message):
        write_samples(tmp_path / "samples.h5", samples)

    assert directory_listing(tmp_path) == []


def test_sample_file_exists(tmp_path: Path) -> None:
    path = tmp_path / "samples.h5"
    write_samples(path, make_samples(2))

    with pytest.raises(RunFileError, match="sample file already exists; pass --overwrite"):
        write_samples(path, make_samples(2))
    write_samples(path, make_samples(4), overwrite=True)

    assert read_samples(path).tree["samples"]["x"].shape == (4, 3)


def test_sample_file_is_not_run_file(tmp_path: Path) -> None:
    path = tmp_path / "samples.h5"
    write_samples(path, make_samples(2))

    with pytest.raises(RunFileError, match="file format is 'ttflow-samples' \\(expected a run file"):
        read_run(path)


def test_read_samples_from_run_without_samples(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    write_run(path, {"config": {"yaml": ""}})

    with pytest.raises(RunFileError, match="missing group '/samples'; .* written by ttflow fit"):
        read_samples(path)
