"""Tests of the gradient estimators and training objectives.

The estimators are compared on a target equal to the sampler itself. When ``p = q``
every sample has ``log p - log q = 0``, so the path-derivative
estimator returns exactly zero gradient while the plain reparameterized gradient is
noise with zero mean. That difference is why training starts from a good TT base
without drifting away from it.
"""

from __future__ import annotations

import copy

import pytest
import torch

from ttflow_cli.flows import build_flow
from ttflow_cli.flows.gaussian import GaussianBase
from ttflow_cli.flows.model import FlowSampler
from ttflow_cli.train import TrainSettings, train_reverse_kl
from ttflow_cli.train.reverse_kl import _step
from ttflow_cli.tt.box import Box

DIM = 3
BOX = Box([(-2.0, 2.0)] * DIM)
# Rounding of the inverse pass: the path gradient at p = q is zero up to this.
ZERO_GRADIENT_TOL = 1e-8
PARAMETER_STD = 0.2


def randomized_sampler(kind: str) -> FlowSampler:
    torch.manual_seed(0)
    flow = build_flow(kind, DIM, layers=4, hidden=16, depth=1)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.copy_(PARAMETER_STD * torch.randn(parameter.shape, generator=generator))
    return FlowSampler(GaussianBase.standard(DIM), flow, BOX, dtype=torch.float64)


def sampler_log_density(sampler: FlowSampler):
    """Exact ``log q(x)`` of a frozen copy of ``sampler``, used as the target."""
    frozen = copy.deepcopy(sampler.flow).requires_grad_(False)

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        z, ladj_inverse = frozen.inverse(BOX.to_t(x))
        return sampler.base.log_prob(z) + ladj_inverse - BOX.log_jacobian

    return log_prob


def gradient_norm(sampler: FlowSampler, gradient: str) -> float:
    settings = TrainSettings(batch_size=256, learning_rate=1e-3, gradient=gradient)
    optimizer = torch.optim.SGD(sampler.flow.parameters(), lr=0.0)
    outcome = _step(sampler, sampler_log_density(sampler), optimizer, settings,
                    torch.Generator().manual_seed(0), inverse_temperature=1.0)
    assert outcome is not None
    loss, elbo = outcome
    assert abs(loss) < ZERO_GRADIENT_TOL
    assert abs(elbo) < ZERO_GRADIENT_TOL
    return float(torch.cat([p.grad.flatten() for p in sampler.flow.parameters()]).norm())


@pytest.mark.parametrize("kind", ["affine", "spline"])
def test_path_gradient_zero_at_optimum(kind):
    assert gradient_norm(randomized_sampler(kind), "path") < ZERO_GRADIENT_TOL


@pytest.mark.parametrize("kind", ["affine", "spline"])
def test_total_gradient_noisy_at_optimum(kind):
    assert gradient_norm(randomized_sampler(kind), "total") > 1e-3


def test_unknown_gradient_raises():
    with pytest.raises(ValueError, match=r"gradient must be one of path, total; got 'score'"):
        TrainSettings(gradient="score")


def shifted_gaussian_log_prob(x: torch.Tensor) -> torch.Tensor:
    """Unnormalized ``N((0.5, -0.5, 0.5), 0.4^2 I)``, well inside BOX."""
    center = torch.tensor([0.5, -0.5, 0.5], dtype=x.dtype)
    return -0.5 * ((x - center) / 0.4).square().sum(dim=1)


@pytest.mark.parametrize("objective", ["reverse_kl", "forward_kl"])
def test_objective_training_raises_ess(objective):
    torch.manual_seed(0)
    flow = build_flow("affine", DIM, layers=4, hidden=32, depth=1)
    sampler = FlowSampler(GaussianBase.standard(DIM), flow, BOX, dtype=torch.float64)
    settings = TrainSettings(steps=150, batch_size=256, learning_rate=3e-3, eval_every=50,
                             eval_samples=2048, patience=0, objective=objective)

    result = train_reverse_kl(sampler, shifted_gaussian_log_prob, settings, torch.Generator().manual_seed(0))
    ess = result.validation["ess_fraction"]

    assert ess[0] < 0.5
    assert result.best_ess_fraction > 0.9


def test_unknown_objective_raises():
    with pytest.raises(ValueError, match=r"objective must be one of reverse_kl, forward_kl; got 'fkl'"):
        TrainSettings(objective="fkl")
