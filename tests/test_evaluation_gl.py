"""Evaluation of a fitted Ginzburg-Landau chain against its transfer-operator answers.

A 6-site chain is fitted once through the real ``ttflow fit`` (TT base, no flow), and
its estimates of log Z, the free energy and the observables must fall within 4 of
their own standard errors of the exact values, for several seeds, from both importance
sampling and the Metropolis-Hastings chain. The transfer operator itself is checked
against the reference log Z values in test_targets.py and against brute-force
quadrature in test_observables.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ttflow_cli.cli.app import app
from ttflow_cli.workflow.evaluation import Evaluation, evaluate
from ttflow_cli.workflow.runstate import restore_run

# The box [-3.5, 3.5] drops mass below e^-300 per site at beta = 0.5, so the exact
# values over R^6 apply to the sampler on the box.
SPEC = """\
name: gl_small
target: {name: ginzburg_landau_1d, sites: 6, beta: 0.5}
box: [-3.5, 3.5]
tt: {nodes: 32, init_rank: 4, max_rank: 8, sweeps: 4, max_evaluations: 400000,
     validation_samples: 500, batch_size: 20000}
flow: {kind: none}
train: {steps: 0}
evaluate: {samples: 1000}
seed: 0
"""
SEEDS = [0, 1, 2, 3, 4]
SAMPLES = 20_000
SIGMAS = 4.0


@pytest.fixture(scope="module")
def chain_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("gl_small")
    spec = directory / "spec.yaml"
    spec.write_text(SPEC)
    result = CliRunner().invoke(app, ["fit", str(spec), "--out", str(directory / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return directory / "out" / "run.h5"


@pytest.fixture(scope="module")
def evaluations(chain_run: Path) -> dict[int, Evaluation]:
    run = restore_run(chain_run, torch.device("cpu"))
    return {
        seed: evaluate(run.sampler, run.target, SAMPLES, 50_000, torch.Generator().manual_seed(seed), mcmc=True)
        for seed in SEEDS
    }


def larger(*errors: float | None) -> float:
    return max(error for error in errors if error is not None)


@pytest.mark.parametrize("seed", SEEDS)
def test_log_z_and_free_energy_within_error(evaluations: dict[int, Evaluation], seed: int) -> None:
    evaluation = evaluations[seed]
    estimate = evaluation.estimate

    assert estimate.ess_fraction > 0.5
    assert abs(estimate.log_z - evaluation.exact_log_z) < SIGMAS * estimate.log_z_err
    assert abs(estimate.log_z - evaluation.exact_log_z) < SIGMAS * evaluation.log_z_err_bootstrap
    assert abs(estimate.free_energy - evaluation.exact_free_energy) < SIGMAS * estimate.free_energy_err


@pytest.mark.parametrize("seed", SEEDS)
def test_observables_within_error(evaluations: dict[int, Evaluation], seed: int) -> None:
    evaluation = evaluations[seed]

    assert set(evaluation.exact_observables) == {"energy_per_site", "magnetization", "magnetization_squared"}
    for name, exact in evaluation.exact_observables.items():
        item = evaluation.observables[name]
        assert abs(item.mean - exact) < SIGMAS * item.err, (name, item, exact)
        assert abs(item.mean - exact) < SIGMAS * item.err_bootstrap, (name, item, exact)


@pytest.mark.parametrize("seed", SEEDS)
def test_chain_observables_within_error(evaluations: dict[int, Evaluation], seed: int) -> None:
    chain = evaluations[seed].chain

    assert chain.acceptance > 0.5
    for name, exact in evaluations[seed].exact_observables.items():
        item = chain.observables[name]
        assert item.converged
        assert abs(item.mean - exact) < SIGMAS * item.err, (name, item, exact)


def test_bootstrap_and_delta_errors_agree(evaluations: dict[int, Evaluation]) -> None:
    for evaluation in evaluations.values():
        assert not evaluation.errors_disagree(), (evaluation.estimate.log_z_err, evaluation.log_z_err_bootstrap)


def test_cli_prints_exact_values(chain_run: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", str(chain_run), "-n", "2000", "--json"])

    assert result.exit_code == 0, result.output
    exact = json.loads(result.stdout)["exact"]
    assert set(exact["observables"]) == {"energy_per_site", "magnetization", "magnetization_squared"}
    assert "abs_magnetization" not in exact["observables"]
