"""Tests of the ``ttflow`` command line through the real Typer app, on the tiny spec."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner, Result

from ttflow_cli.cli.app import app

REPO = Path(__file__).resolve().parents[1]
TINY_SPEC = Path(__file__).parent / "data" / "tiny.yaml"
RUN_GROUPS = {"config", "tt", "flow", "train", "results"}
EVALUATE_KEYS = {"n", "ess", "ess_fraction", "log_z", "log_z_err", "free_energy", "free_energy_err",
                 "elbo", "exact_log_z"}
SITES = 4  # coordinates of the tiny spec's target
SAMPLE_COUNT = 100
UNKNOWN_KEY_SPEC = "target: {name: ginzburg_landau_1d, sites: 4, beta: 1.0}\ntt: {max_rnk: 4}\n"

RunCli = Callable[..., Result]


def run_module(*args: str | Path) -> subprocess.CompletedProcess:
    """Run ``python -m ttflow_cli ARGS`` from the repository root, as a user would."""
    # One intra-op thread, for the reason given in conftest.py, set for the child only.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ttflow_cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def dataset_dtypes(path: Path) -> dict[str, np.dtype]:
    """dtype of every dataset in an HDF5 file, by path."""
    found: dict[str, np.dtype] = {}
    with h5py.File(path, "r") as file:
        file.visititems(lambda name, item: found.update({name: item.dtype})
                        if isinstance(item, h5py.Dataset) else None)
    return found


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``run.h5`` fitted once from the tiny spec, shared by the read-only tests below."""
    directory = tmp_path_factory.mktemp("fitted")
    result = CliRunner().invoke(app, ["fit", str(TINY_SPEC), "--out", str(directory / "out"),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return directory / "out" / "run.h5"


# --- round trip ----------------------------------------------------------------------

def test_fit_writes_run_groups(fitted_run: Path) -> None:
    with h5py.File(fitted_run, "r") as file:
        groups = set(file)

    assert RUN_GROUPS <= groups


def test_fit_writes_no_object_datasets(fitted_run: Path) -> None:
    dtypes = dataset_dtypes(fitted_run)

    assert dtypes
    for name, dtype in dtypes.items():
        assert dtype.kind != "O", name


def test_sample_writes_log_weights(fitted_run: Path, tmp_path: Path, run_cli: RunCli) -> None:
    out = tmp_path / "samples.h5"

    result = run_cli("sample", fitted_run, "-n", SAMPLE_COUNT, "--out", out, "--seed", 3)

    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as file:
        x = file["samples/x"][()]
        log_q, log_p, log_w = (file[f"samples/{name}"][()] for name in ("log_q", "log_p", "log_w"))
    assert x.shape == (SAMPLE_COUNT, SITES)
    assert log_w.shape == (SAMPLE_COUNT,)
    assert np.all(np.isfinite(log_w))
    np.testing.assert_array_equal(log_w, log_p - log_q)


def test_sample_refuses_existing_file(fitted_run: Path, tmp_path: Path, run_cli: RunCli) -> None:
    out = tmp_path / "samples.h5"
    first = run_cli("sample", fitted_run, "-n", 10, "--out", out)
    before = out.read_bytes()

    second = run_cli("sample", fitted_run, "-n", 10, "--out", out)

    assert first.exit_code == 0, first.output
    assert second.exit_code == 2, second.output
    assert "--overwrite" in second.stderr
    assert out.read_bytes() == before


def test_evaluate_json_one_object(fitted_run: Path, run_cli: RunCli) -> None:
    result = run_cli("evaluate", fitted_run, "--json", "--seed", 2)

    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().splitlines()) == 1
    estimate = json.loads(result.stdout)
    assert isinstance(estimate, dict)
    assert EVALUATE_KEYS <= set(estimate)
    assert math.isfinite(estimate["log_z"])
    assert estimate["n"] == 512  # evaluate.samples of the tiny spec


# --- overwriting -----------------------------------------------------------------------

def test_fit_refuses_existing_run(fitted_run: Path, run_cli: RunCli) -> None:
    before = fitted_run.read_bytes()

    result = run_cli("fit", TINY_SPEC, "--out", fitted_run.parent)

    assert result.exit_code == 2, result.output
    assert "--overwrite" in result.stderr
    assert fitted_run.read_bytes() == before


def test_fit_overwrite_replaces_run(fitted_run: Path, tmp_path: Path, run_cli: RunCli) -> None:
    run_file = tmp_path / "out" / "run.h5"
    run_file.parent.mkdir()
    run_file.write_bytes(fitted_run.read_bytes())

    result = run_cli("fit", TINY_SPEC, "--out", run_file.parent, "--overwrite", "--set", "flow.kind=none")

    assert result.exit_code == 0, result.output
    with h5py.File(run_file, "r") as file:
        assert file["flow"].attrs["kind"] == "none"


# --- overrides -------------------------------------------------------------------------

OVERRIDES = ("train.steps=0", "flow.kind=none")


@pytest.fixture(scope="module")
def override_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run files fitted from the tiny spec with each of OVERRIDES, by override."""
    runs = {}
    for override in OVERRIDES:
        out = tmp_path_factory.mktemp("override")
        result = CliRunner().invoke(app, ["fit", str(TINY_SPEC), "--out", str(out), "--set", override])
        assert result.exit_code == 0, result.output
        runs[override] = out / "run.h5"
    return runs


def test_fit_zero_steps_keeps_untrained_flow(override_runs: dict[str, Path]) -> None:
    with h5py.File(override_runs["train.steps=0"], "r") as file:
        kind = file["flow"].attrs["kind"]
        train_group = set(file["train"])
        flow_group = set(file["flow"])

    assert kind == "affine"
    assert "state" in flow_group
    assert "history" not in train_group


def test_fit_without_flow(override_runs: dict[str, Path], run_cli: RunCli) -> None:
    run_file = override_runs["flow.kind=none"]

    result = run_cli("evaluate", run_file, "--json", "-n", 200)

    with h5py.File(run_file, "r") as file:
        assert file["flow"].attrs["kind"] == "none"
        assert "state" not in file["flow"]
    assert result.exit_code == 0, result.output
    assert math.isfinite(json.loads(result.stdout)["log_z"])


def test_untrained_flow_is_identity(override_runs: dict[str, Path]) -> None:
    """A flow starts as the identity, so without training it changes no estimate."""
    estimates = {}
    for override, run_file in override_runs.items():
        with h5py.File(run_file, "r") as file:
            estimates[override] = {key: file["results"].attrs[key] for key in EVALUATE_KEYS}

    assert estimates["train.steps=0"] == estimates["flow.kind=none"]


# --- usage errors ----------------------------------------------------------------------

def test_fit_unknown_key_rejected(tmp_path: Path, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad.yaml").write_text(UNKNOWN_KEY_SPEC)
    # Run from tmp_path, where fit would create its default runs/ directory.
    monkeypatch.chdir(tmp_path)

    result = run_cli("fit", "bad.yaml")

    assert result.exit_code == 2, result.output
    assert "tt.max_rnk" in result.stderr
    assert "max_rank" in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_long_error_message_one_line(tmp_path: Path, run_cli: RunCli) -> None:
    directory = tmp_path / ("specs-" + "x" * 200)
    directory.mkdir()
    (directory / "bad.yaml").write_text(UNKNOWN_KEY_SPEC)

    result = run_cli("fit", directory / "bad.yaml")

    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_fit_missing_spec_rejected(tmp_path: Path, run_cli: RunCli) -> None:
    result = run_cli("fit", tmp_path / "missing.yaml")

    assert result.exit_code == 2, result.output
    assert "spec file not found" in result.stderr
    assert "Traceback" not in result.output


def test_evaluate_missing_run_file_rejected(tmp_path: Path, run_cli: RunCli) -> None:
    result = run_cli("evaluate", tmp_path / "missing.h5")

    assert result.exit_code == 2, result.output
    assert "run file not found" in result.stderr


def test_evaluate_non_hdf5_rejected(tmp_path: Path, run_cli: RunCli) -> None:
    path = tmp_path / "run.h5"
    path.write_text("not an HDF5 file\n")

    result = run_cli("evaluate", path)

    assert result.exit_code == 2, result.output
    assert "not an HDF5 file" in result.stderr


def test_evaluate_sample_file_rejected(fitted_run: Path, tmp_path: Path, run_cli: RunCli) -> None:
    samples = tmp_path / "samples.h5"
    sampled = run_cli("sample", fitted_run, "-n", 10, "--out", samples)

    result = run_cli("evaluate", samples)

    assert sampled.exit_code == 0, sampled.output
    assert result.exit_code == 2, result.output
    assert "ttflow-samples" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_fit_cuda_unavailable_rejected(tiny_spec: Path, tmp_path: Path, run_cli: RunCli) -> None:
    result = run_cli("fit", tiny_spec, "--out", tmp_path / "out", "--device", "cuda")

    assert result.exit_code == 2, result.output
    assert "no CUDA device" in result.stderr
    assert not (tmp_path / "out" / "run.h5").exists()


def test_debug_keeps_config_exit_code(tmp_path: Path, run_cli: RunCli) -> None:
    (tmp_path / "bad.yaml").write_text(UNKNOWN_KEY_SPEC)

    result = run_cli("--debug", "fit", tmp_path / "bad.yaml")

    assert result.exit_code == 2, result.output
    assert "tt.max_rnk" in result.stderr


# --- entry point -----------------------------------------------------------------------

def test_module_help_exits_zero() -> None:
    completed = run_module("--help")

    assert completed.returncode == 0, completed.stderr
    for command in ("fit", "sample", "evaluate"):
        assert command in completed.stdout


def test_module_debug_prints_traceback(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(UNKNOWN_KEY_SPEC)

    completed = run_module("--debug", "fit", tmp_path / "bad.yaml")

    assert completed.returncode == 2
    assert "Traceback" in completed.stderr
    assert "ConfigError" in completed.stderr


def test_sample_never_replaces_run_file(fitted_run: Path, run_cli: RunCli) -> None:
    before = fitted_run.read_bytes()

    result = run_cli("sample", fitted_run, "-n", 10, "--out", fitted_run, "--overwrite")

    assert result.exit_code == 2, result.output
    assert "is a run file, not a sample file" in " ".join(result.stderr.split())
    assert fitted_run.read_bytes() == before


def test_fit_never_replaces_foreign_hdf5(tiny_spec: Path, tmp_path: Path, run_cli: RunCli) -> None:
    foreign = tmp_path / "out" / "run.h5"
    foreign.parent.mkdir()
    with h5py.File(foreign, "w") as file:
        file["data"] = np.arange(3)
    before = foreign.read_bytes()

    result = run_cli("fit", tiny_spec, "--out", foreign.parent, "--overwrite")

    assert result.exit_code == 2, result.output
    assert "HDF5 file not written by ttflow" in " ".join(result.stderr.split())
    assert foreign.read_bytes() == before


def test_threads_option_sets_torch_threads(run_cli: RunCli, tmp_path: Path) -> None:
    # The test session runs torch on one thread, so ask for another count.
    previous = torch.get_num_threads()
    try:
        result = run_cli("--threads", str(previous + 1), "evaluate", tmp_path / "missing.h5")
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)

    assert result.exit_code == 2, result.output
    assert threads == previous + 1


def test_threads_option_rejects_zero(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli("--threads", "0", "evaluate", tmp_path / "missing.h5")

    assert result.exit_code == 2, result.output
