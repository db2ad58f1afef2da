"""``ttflow evaluate`` and ``ttflow sample --mcmc`` through the real Typer app, on the tiny spec."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner, Result

from ttflow_cli.cli.app import app

TINY_SPEC = Path(__file__).parent / "data" / "tiny.yaml"
SITES = 4
OBSERVABLES = {"energy_per_site", "magnetization", "abs_magnetization", "magnetization_squared"}
# Results of one sample stream scored in different batch sizes differ by rounding only.
BATCH_REL_TOL = 1e-9

RunCli = Callable[..., Result]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny_evaluate")
    result = CliRunner().invoke(app, ["fit", str(TINY_SPEC), "--out", str(directory), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return directory / "run.h5"


def evaluate_json(run_cli: RunCli, run: Path, *options: str) -> dict:
    result = run_cli("evaluate", run, "--json", *options)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def numbers(tree: object) -> list[float]:
    """Every number of a nested JSON value in key order, with null as NaN."""
    if isinstance(tree, dict):
        return [value for key in sorted(tree) for value in numbers(tree[key])]
    if isinstance(tree, list):
        return []
    return [math.nan if tree is None else float(tree)]


def test_evaluate_json_reports_observables(tiny_run: Path, run_cli: RunCli) -> None:
    result = evaluate_json(run_cli, tiny_run, "-n", "3000")

    assert set(result["observables"]) == OBSERVABLES
    assert result["bootstrap_replicates"] == 200
    assert result["log_z_err_bootstrap"] > 0
    assert result["mcmc"] is None
    assert set(result["exact"]["observables"]) == OBSERVABLES - {"abs_magnetization"}
    assert result["exact"]["log_z"] == result["exact_log_z"]


def test_evaluate_mcmc_reports_chain(tiny_run: Path, run_cli: RunCli) -> None:
    result = evaluate_json(run_cli, tiny_run, "-n", "3000", "--mcmc")

    chain = result["mcmc"]
    assert chain["steps"] == 3000
    assert 0 < chain["acceptance"] <= 1
    assert set(chain["tau_int"]) == OBSERVABLES


def test_evaluate_batch_size_does_not_change_results(tiny_run: Path, run_cli: RunCli) -> None:
    small = evaluate_json(run_cli, tiny_run, "-n", "9000", "--mcmc", "--batch-size", "4096")
    large = evaluate_json(run_cli, tiny_run, "-n", "9000", "--mcmc", "--batch-size", "100000")

    np.testing.assert_allclose(numbers(small), numbers(large), rtol=BATCH_REL_TOL)


def test_evaluate_observable_option(tiny_run: Path, run_cli: RunCli) -> None:
    result = evaluate_json(run_cli, tiny_run, "-n", "500", "--observable", "magnetization", "--bootstrap", "0")

    assert list(result["observables"]) == ["magnetization"]
    assert result["observables"]["magnetization"]["err_bootstrap"] is None
    assert result["log_z_err_bootstrap"] is None


def test_evaluate_unknown_observable_rejected(tiny_run: Path, run_cli: RunCli) -> None:
    result = run_cli("evaluate", tiny_run, "-n", "500", "--observable", "magnetisation")

    assert result.exit_code == 2, result.output
    assert "unknown observable 'magnetisation'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_evaluate_one_bootstrap_replicate_rejected(tiny_run: Path, run_cli: RunCli) -> None:
    result = run_cli("evaluate", tiny_run, "--bootstrap", "1")

    assert result.exit_code == 2, result.output
    assert "at least 2 replicates" in result.stderr


def test_evaluate_table_shows_exact_and_warnings(tiny_run: Path, run_cli: RunCli) -> None:
    # The tiny spec fits poorly on purpose, so 300 samples give an ESS below 100.
    result = run_cli("evaluate", tiny_run, "-n", "300", "--mcmc")

    assert result.exit_code == 0, result.output
    for text in ("log Z", "Pareto k", "magnetization_squared", "unknown", "tau_int", "acceptance"):
        assert text in result.stdout, text
    assert "warning: the ESS is" in result.stderr


def test_sample_mcmc_writes_chain(tiny_run: Path, tmp_path: Path, run_cli: RunCli) -> None:
    out = tmp_path / "chain.h5"

    result = run_cli("sample", tiny_run, "-n", "3000", "--mcmc", "--out", out, "--seed", "4")

    assert result.exit_code == 0, result.output
    assert "acceptance" in result.stdout
    with h5py.File(out, "r") as file:
        x = file["samples/x"][()]
        accepted = file["samples/accepted"][()]
        log_w = file["samples/log_w"][()]
        acceptance = file.attrs["acceptance"]
    assert x.shape == (3000, SITES)
    assert accepted[0]
    # A rejected step repeats the previous state exactly.
    np.testing.assert_array_equal(x[1:][~accepted[1:]], x[:-1][~accepted[1:]])
    assert acceptance == pytest.approx(accepted[1:].mean())
    assert np.all(np.isfinite(log_w))


def test_sample_mcmc_matches_evaluate_chain(tiny_run: Path, tmp_path: Path, run_cli: RunCli) -> None:
    """Both commands build the chain from the same seeded proposals and uniforms."""
    out = tmp_path / "chain.h5"
    sampled = run_cli("sample", tiny_run, "-n", "2000", "--mcmc", "--out", out, "--seed", "6")
    evaluated = evaluate_json(run_cli, tiny_run, "-n", "2000", "--mcmc", "--seed", "6")

    assert sampled.exit_code == 0, sampled.output
    with h5py.File(out, "r") as file:
        magnetization = file["samples/x"][()].mean(axis=1)
        acceptance = file.attrs["acceptance"]
    assert acceptance == pytest.approx(evaluated["mcmc"]["acceptance"], rel=1e-12)
    assert magnetization.mean() == pytest.approx(evaluated["mcmc"]["observables"]["magnetization"]["mean"], rel=1e-9)
