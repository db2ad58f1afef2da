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

from ttflow_cli.cli import app as app_module
from ttflow_cli.cli.app import app
from ttflow_cli.estimators import BootstrapErrors, ImportanceEstimate
from ttflow_cli.targets import GinzburgLandau1D
from ttflow_cli.workflow.evaluation import Evaluation

TINY_SPEC = Path(__file__).parent / "data" / "tiny.yaml"
SITES = 4
BETA = 1.0  # target.beta of the tiny spec
OBSERVABLES = {"energy_per_site", "magnetization", "abs_magnetization", "magnetization_squared"}
# Results of one sample stream scored in different batch sizes differ by rounding only.
BATCH_REL_TOL = 1e-9
# The chain table prints tau_int to 4 significant digits.
PRINTED_TAU_REL_TOL = 1e-3
# Keys that ``--json`` had before observables, the bootstrap and the chain were added.
EXISTING_KEYS = {"n", "ess", "ess_fraction", "log_z", "log_z_err", "free_energy", "free_energy_err",
                 "elbo", "exact_log_z"}

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


def test_evaluate_mcmc_json_layout(tiny_run: Path, run_cli: RunCli) -> None:
    result = evaluate_json(run_cli, tiny_run, "-n", "3000", "--mcmc")

    assert EXISTING_KEYS <= set(result)
    assert result["n"] == 3000
    for key in ("ess", "ess_fraction", "log_z", "log_z_err", "free_energy", "free_energy_err", "elbo"):
        assert math.isfinite(result[key]), key
    assert result["free_energy"] == pytest.approx(-result["log_z"] / BETA)

    assert result["log_z_err_bootstrap"] > 0
    assert result["free_energy_err_bootstrap"] == pytest.approx(result["log_z_err_bootstrap"] / BETA)
    assert result["bootstrap_replicates"] == 200
    assert result["elbo"] < result["log_z"]
    assert result["elbo_err"] > 0
    assert isinstance(result["pareto_k"], float)
    assert 1 / 3000 < result["max_weight_fraction"] <= 1
    assert all(isinstance(message, str) for message in result["warnings"])

    assert set(result["observables"]) == OBSERVABLES
    for name, item in result["observables"].items():
        assert set(item) == {"mean", "err", "err_bootstrap"}, name
        assert math.isfinite(item["mean"]), name
        assert item["err"] > 0, name
        assert item["err_bootstrap"] > 0, name

    chain = result["mcmc"]
    assert set(chain) == {"steps", "acceptance", "tau_int", "observables"}
    assert chain["steps"] == 3000
    assert 0 < chain["acceptance"] <= 1
    assert set(chain["tau_int"]) == OBSERVABLES
    assert set(chain["observables"]) == OBSERVABLES
    for name, item in chain["observables"].items():
        assert set(item) == {"mean", "err", "tau_int", "converged"}, name
        assert item["tau_int"] == chain["tau_int"][name], name
        # The tiny spec's chain accepts about 5 % of proposals, so tau_int is far above 1.
        assert item["tau_int"] >= 1, name
        assert item["err"] > 0, name
        assert isinstance(item["converged"], bool), name

    exact = result["exact"]
    target = GinzburgLandau1D(sites=SITES, beta=BETA)
    assert set(exact) == {"log_z", "free_energy", "observables"}
    assert exact["log_z"] == result["exact_log_z"]
    assert exact["log_z"] == pytest.approx(target.exact_log_z(), rel=1e-12)
    assert exact["free_energy"] == pytest.approx(-exact["log_z"] / BETA)
    assert exact["observables"] == pytest.approx(target.exact_observables(), rel=1e-12, abs=1e-12)
    assert set(exact["observables"]) == OBSERVABLES - {"abs_magnetization"}


def evaluation_with_log_z_errors(delta: float, bootstrap: float) -> Evaluation:
    """Return an evaluation whose log Z has the given delta-method and bootstrap errors."""
    estimate = ImportanceEstimate(n=10_000, ess=5_000.0, ess_fraction=0.5, log_z=1.0, log_z_err=delta,
                                  free_energy=None, free_energy_err=None)
    errors = BootstrapErrors(replicates=200, log_z_err=bootstrap, observable_errs={})
    return Evaluation(estimate=estimate, elbo=0.9, exact_log_z=None, bootstrap=errors)


def test_evaluate_reports_disagreeing_errors(tiny_run: Path, run_cli: RunCli,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Errors that differ by more than 20 % are both shown, in the table and JSON, with a warning."""
    evaluation = evaluation_with_log_z_errors(0.01, 0.02)
    monkeypatch.setattr(app_module, "evaluate_sampler", lambda *args, **kwargs: evaluation)

    table = run_cli("evaluate", tiny_run, "-n", "100")
    as_json = run_cli("evaluate", tiny_run, "-n", "100", "--json")

    assert table.exit_code == 0, table.output
    log_z_row = next(line.split() for line in table.stdout.splitlines() if line.strip().startswith("log Z"))
    assert log_z_row[2:5] == ["1.000", "0.01", "0.02"]  # estimate, delta, boot
    assert "delta-method (0.01) and bootstrap (0.02) errors of log Z differ" in table.stderr
    assert as_json.exit_code == 0, as_json.output
    result = json.loads(as_json.stdout)
    assert result["log_z_err"] == 0.01
    assert result["log_z_err_bootstrap"] == 0.02
    assert "delta-method (0.01)" in as_json.stderr


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


def test_sample_mcmc_prints_tau_int(tiny_run: Path, tmp_path: Path, run_cli: RunCli) -> None:
    """``sample --mcmc`` prints the acceptance rate and each observable's tau_int of its chain."""
    sampled = run_cli("sample", tiny_run, "-n", "2000", "--mcmc", "--out", tmp_path / "chain.h5", "--seed", "6")
    evaluated = evaluate_json(run_cli, tiny_run, "-n", "2000", "--mcmc", "--seed", "6")["mcmc"]

    assert sampled.exit_code == 0, sampled.output
    text = " ".join(sampled.stdout.split())
    assert f"acceptance {evaluated['acceptance']:.4g}" in text
    assert "tau_int" in text
    rows = {line.split()[0]: line.split() for line in sampled.stdout.splitlines() if line.split()}
    for name in OBSERVABLES:
        # Columns: observable, mean, error, tau_int, exact, dev.
        assert float(rows[name][3]) == pytest.approx(evaluated["tau_int"][name], rel=PRINTED_TAU_REL_TOL), name


def test_sample_mcmc_matches_evaluate_chain(tiny_run: Path, tmp_path: Path, run_cli: RunCli) -> None:
    """Both commands build the chain from the same seeded proposals and uniforms."""
    out = tmp_path / "chain.h5"
    sampled = run_cli("sample", tiny_run, "-n", "2000", "--mcmc", "--out", out, "--seed", "6")
    evaluated = evaluate_json(run_cli, tiny_run, "-n", "2000", "--mcmc", "--seed", "6")

    assert sampled.exit_code == 0, sampled.output
    with h5py.File(out, "r") as file:
        magnetization = file["samples/x"][()].mean(axis=1)
        acceptance = file.attrs["acceptance"]
        stored_tau = {name: file.attrs[f"tau_int_{name}"] for name in OBSERVABLES}
    assert acceptance == pytest.approx(evaluated["mcmc"]["acceptance"], rel=1e-12)
    for name in OBSERVABLES:
        assert stored_tau[name] == pytest.approx(evaluated["mcmc"]["tau_int"][name], rel=1e-12), name
    assert magnetization.mean() == pytest.approx(evaluated["mcmc"]["observables"]["magnetization"]["mean"], rel=1e-9)
