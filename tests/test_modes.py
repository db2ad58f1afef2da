"""Mode shares in the evaluation: membership functions, mass estimates and missed modes."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor
from typer.testing import Result

from ttflow_cli.targets.gaussian_mixture import GaussianMixture
from ttflow_cli.targets.ginzburg_landau import GinzburgLandau1D, GinzburgLandau2D
from ttflow_cli.workflow.evaluation import evaluate
from ttflow_cli.workflow.sampling import BLOCK_SIZE

RunCli = Callable[..., Result]

WEIGHTS = [0.3, 0.7]
CENTRE = 2.0
SCALE = 0.5
SAMPLES = 20_000
# A 4-sigma band misses with probability 6e-5 per check.
SIGMAS = 4.0


def two_mode_target() -> GaussianMixture:
    """Two Gaussians at (-2, -2) and (2, 2) with scale 0.5 and weights 0.3 and 0.7."""
    return GaussianMixture(means=[[-CENTRE, -CENTRE], [CENTRE, CENTRE]], scales=SCALE, weights=WEIGHTS)


class GaussianSampler:
    """``N(mean, std^2 I)`` in 2D with the interface of a fitted sampler."""

    device = torch.device("cpu")

    def __init__(self, mean: float, std: float) -> None:
        self.mean = mean
        self.std = std

    def sample(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x = self.mean + self.std * torch.randn(count, 2, generator=generator, dtype=torch.float64)
        log_q = (-((x - self.mean) ** 2).sum(dim=1) / (2 * self.std**2)
                 - math.log(2 * math.pi * self.std**2))
        return x, log_q


def run(sampler: GaussianSampler, seed: int = 0, samples: int = SAMPLES, batch_size: int = 50_000):
    generator = torch.Generator().manual_seed(seed)
    return evaluate(sampler, two_mode_target(), samples, batch_size, generator, bootstrap=0)


def test_responsibilities_average_to_weights() -> None:
    rng = np.random.default_rng(0)
    component = rng.choice(2, size=SAMPLES, p=WEIGHTS)
    centres = np.where(component[:, None] == 0, -CENTRE, CENTRE)
    points = torch.as_tensor(centres + SCALE * rng.standard_normal((SAMPLES, 2)))

    membership = two_mode_target().modes().membership(points)

    assert torch.allclose(membership.sum(dim=1), torch.ones(SAMPLES, dtype=torch.float64))
    # Each responsibility lies in [0, 1], so its standard error is at most 0.5 / sqrt(N).
    averages = membership.mean(dim=0).tolist()
    for average, weight in zip(averages, WEIGHTS):
        assert average == pytest.approx(weight, abs=SIGMAS * 0.5 / math.sqrt(SAMPLES))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_covering_sampler_mass_within_error(seed: int) -> None:
    modes = run(GaussianSampler(0.0, 3.0), seed=seed).modes

    assert modes.names == ["component 0", "component 1"]
    assert modes.exact == WEIGHTS
    for estimate, weight in zip(modes.estimates, WEIGHTS):
        assert abs(estimate.mean - weight) < SIGMAS * estimate.err
    assert modes.missed() == []


def test_one_mode_sampler_flagged() -> None:
    evaluation = run(GaussianSampler(CENTRE, SCALE))
    modes = evaluation.modes

    assert modes.sampler_shares[0] < 1e-6
    assert modes.missed() == ["component 0"]
    assert modes.to_dict()["component 0"]["missed"] is True
    assert modes.to_dict()["component 1"]["missed"] is False
    warning = [message for message in evaluation.warnings() if "exact mass" in message]
    assert len(warning) == 1
    assert "component 0" in warning[0]


def test_modes_table_marks_missed_mode() -> None:
    from rich.console import Console

    from ttflow_cli.cli.output import modes_table

    console = Console(width=120, record=True)
    console.print(modes_table(run(GaussianSampler(CENTRE, SCALE)).modes))
    rows = {line.split()[1]: line.split() for line in console.export_text().splitlines()
            if line.strip().startswith("component")}

    assert rows["0"][-1] == "missed"
    assert rows["0"][-3] == "-"
    assert rows["1"][-1] != "missed"


def test_mode_shares_independent_of_batch_size() -> None:
    samples = 2 * BLOCK_SIZE + 5
    reference = run(GaussianSampler(0.0, 3.0), samples=samples, batch_size=10**6).modes.to_dict()
    chunked = run(GaussianSampler(0.0, 3.0), samples=samples, batch_size=1).modes.to_dict()

    for name, item in reference.items():
        for key, value in item.items():
            assert chunked[name][key] == pytest.approx(value, rel=1e-10), (name, key)


def test_field_modes_exact_only_with_symmetry() -> None:
    assert GinzburgLandau1D(sites=4, beta=1.0).modes().exact == [0.5, 0.5]
    assert GinzburgLandau1D(sites=4, beta=1.0, left=1.0, right=0.5).modes().exact is None
    lattice = GinzburgLandau2D(sites=3, beta=1.0, top=1.0, bottom=1.0, left=-1.0, right=-1.0)
    assert lattice.modes().exact == [0.5, 0.5]


def test_evaluate_json_reports_modes(tiny_spec: Path, tmp_path: Path, run_cli: RunCli) -> None:
    fitted = run_cli("fit", tiny_spec, "--out", tmp_path / "run")
    result = run_cli("evaluate", tmp_path / "run" / "run.h5", "-n", "2000", "--json")

    assert fitted.exit_code == 0, fitted.output
    assert result.exit_code == 0, result.output
    modes = json.loads(result.stdout)["modes"]
    assert set(modes) == {"mean field > 0", "mean field < 0"}
    for item in modes.values():
        assert set(item) == {"sampler_share", "mean", "err", "exact", "missed"}
        assert item["exact"] == 0.5
        assert item["missed"] is False
    assert sum(item["sampler_share"] for item in modes.values()) == pytest.approx(1.0)
