"""Tests of the flow options of ``ttflow fit``: spline kind, Gaussian bases, annealing,
and their round trip through the run file, on the tiny spec."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from ttflow_cli.flows.gaussian import GaussianBase
from ttflow_cli.runfile import read_run
from ttflow_cli.train import TrainSettings
from ttflow_cli.tt.defensive import DefensiveTT
from ttflow_cli.tt.squared import SquaredTT
from ttflow_cli.workflow.runstate import restore_run

# Samples for the Monte Carlo checks of the Gaussian base; the mean of N standard
# normals has standard deviation 1 / sqrt(N) = 0.005, and 5 sigma is 0.025.
GAUSSIAN_SAMPLES = 40_000
MONTE_CARLO_TOL = 0.025
HISTORY_COLUMNS = {"step", "loss", "elbo", "learning_rate", "inverse_temperature", "skipped"}


def fit_tiny(run_cli, tiny_spec: Path, out: Path, *overrides: str) -> Path:
    arguments = ["fit", tiny_spec, "--out", out, "--device", "cpu"]
    for override in overrides:
        arguments += ["--set", override]
    result = run_cli(*arguments)
    assert result.exit_code == 0, result.output
    return out / "run.h5"


def test_fit_spline_round_trip(run_cli, tiny_spec, tmp_path):
    run_file = fit_tiny(run_cli, tiny_spec, tmp_path / "spline", "flow.kind=spline")

    restored = restore_run(run_file, torch.device("cpu"))
    run = read_run(run_file, groups=["flow", "train", "base"])

    assert restored.sampler.flow.kind == "spline"
    assert run.tree["flow"]["kind"] == "spline"
    assert run.tree["base"]["kind"] == "tt"
    assert HISTORY_COLUMNS <= set(run.tree["train"]["history"])
    assert run.tree["train"]["skipped_steps"] == 0


def test_fit_standard_gaussian_skips_cross(run_cli, tiny_spec, tmp_path):
    run_file = fit_tiny(run_cli, tiny_spec, tmp_path / "gaussian", "flow.base=gaussian")

    with h5py.File(run_file, "r") as file:
        groups = set(file)
    run = read_run(run_file, groups=["base", "results"])
    results = run.tree["results"]

    assert "tt" not in groups
    assert run.tree["base"]["kind"] == "gaussian"
    assert results["evaluations_cross"] == 0
    assert results["base"] == "gaussian"


def test_evaluate_restores_gaussian_base(run_cli, tiny_spec, tmp_path):
    run_file = fit_tiny(run_cli, tiny_spec, tmp_path / "gaussian", "flow.base=gaussian")

    restored = restore_run(run_file, torch.device("cpu"))
    result = run_cli("evaluate", run_file, "-n", "256", "--json")

    assert isinstance(restored.sampler.base, GaussianBase)
    assert result.exit_code == 0, result.output


def test_fit_fitted_gaussian_matches_tt_moments(run_cli, tiny_spec, tmp_path):
    run_file = fit_tiny(run_cli, tiny_spec, tmp_path / "fitted", "flow.base=gaussian",
                        "flow.gaussian=fitted", "train.steps=0")

    restored = restore_run(run_file, torch.device("cpu"))
    tt_group = read_run(run_file, groups=["tt"]).tree["tt"]
    tt = DefensiveTT(SquaredTT([torch.as_tensor(core) for core in tt_group["cores"]]), 0.0)
    t, _ = tt.sample(GAUSSIAN_SAMPLES, torch.Generator().manual_seed(1))
    base = restored.sampler.base

    assert isinstance(base, GaussianBase)
    assert torch.allclose(base.mean, t.mean(dim=0), atol=MONTE_CARLO_TOL)
    assert torch.allclose(base.scale_tril @ base.scale_tril.T, torch.cov(t.T), atol=MONTE_CARLO_TOL)


def test_fit_with_annealing_records_schedule(run_cli, tiny_spec, tmp_path):
    run_file = fit_tiny(run_cli, tiny_spec, tmp_path / "anneal", "train.anneal_steps=4",
                        "train.anneal_start=0.25", "train.patience=0")

    history = read_run(run_file, groups=["train"]).tree["train"]["history"]
    temperatures = np.asarray(history["inverse_temperature"])

    assert temperatures[0] == pytest.approx(0.25)
    assert np.all(np.diff(temperatures) >= 0)
    assert np.all(temperatures[4:] == 1.0)
    assert np.isfinite(history["elbo"]).all()


def test_inverse_temperature_schedule():
    settings = TrainSettings(steps=10, anneal_steps=4, anneal_start=0.1)

    values = [settings.inverse_temperature(step) for step in range(1, 11)]

    assert values[0] == pytest.approx(0.1)
    assert values[3] == pytest.approx(0.1 ** 0.25)
    assert values[4:] == [1.0] * 6


def test_inverse_temperature_without_annealing():
    settings = TrainSettings(steps=5)

    assert [settings.inverse_temperature(step) for step in range(1, 6)] == [1.0] * 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gaussian_base_log_prob_matches_sample(dtype):
    mean = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    scale_tril = torch.tensor([[0.5, 0.0, 0.0], [0.1, 0.3, 0.0], [-0.2, 0.05, 0.4]], dtype=torch.float64)
    base = GaussianBase(mean, scale_tril)
    reference = torch.distributions.MultivariateNormal(mean, scale_tril=scale_tril)

    t, log_q = base.sample(64, torch.Generator().manual_seed(0), dtype=dtype)

    assert t.dtype == dtype
    assert log_q.dtype == dtype
    tolerance = 1e-4 if dtype == torch.float32 else 1e-12
    assert torch.allclose(base.log_prob(t).double(), log_q.double(), atol=tolerance)
    assert torch.allclose(reference.log_prob(t.double()), log_q.double(), atol=tolerance)


def test_standard_gaussian_puts_box_at_three_sigma():
    base = GaussianBase.standard(4)

    t, _ = base.sample(GAUSSIAN_SAMPLES, torch.Generator().manual_seed(0))

    assert abs(float(t.std()) - 1.0 / 3.0) < MONTE_CARLO_TOL
    assert abs(float(t.mean())) < MONTE_CARLO_TOL


def test_gaussian_fit_rejects_one_sample():
    with pytest.raises(ValueError, match=r"N >= 2; got shape \(1, 3\)"):
        GaussianBase.fit(torch.zeros(1, 3))


def test_gaussian_rejects_singular_scale():
    with pytest.raises(ValueError, match="positive diagonal"):
        GaussianBase(torch.zeros(2), torch.zeros(2, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gaussian_base_samples_on_cuda():
    base = GaussianBase.standard(3)
    generator = torch.Generator(device="cuda").manual_seed(0)

    t, log_q = base.sample(16, generator, dtype=torch.float32, device="cuda")

    assert t.device.type == "cuda"
    assert torch.allclose(base.log_prob(t), log_q, atol=1e-4)
    assert math.isfinite(float(log_q.sum()))
