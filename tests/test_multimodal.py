"""The TT base puts mass on every mode of multimodal targets, in float64.

The point of a TT base under a flow is that it starts with every mode, which a
Gaussian base trained by reverse KL tends to lose. These tests fit small TTs by cross
approximation and count the share of exact TT samples in each mode.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from ttflow_cli.estimators import estimate_from_log_weights
from ttflow_cli.targets.gaussian_mixture import GaussianMixture
from ttflow_cli.targets.ginzburg_landau import GinzburgLandau1D
from ttflow_cli.tt.box import Box
from ttflow_cli.tt.cross import CrossBudget, cross_approximate
from ttflow_cli.tt.defensive import DefensiveTT

SAMPLES = 8000
# A mode whose exact share is w gets w +- 0.05: the binomial standard deviation of a
# share near 1/4 on 8000 samples is 0.005, so this leaves room for the TT's own error.
SHARE_TOL = 0.05
MIN_ESS_FRACTION = 0.8


def fit_tt_base(target, box: Box, nodes: int, max_rank: int) -> DefensiveTT:
    budget = CrossBudget(max_rank=max_rank, tolerance=1e-6, sweeps=4, init_rank=4)
    result = cross_approximate(lambda t: target.log_prob(box.to_x(t)), target.dim, nodes, budget,
                               generator=torch.Generator().manual_seed(0))
    return DefensiveTT(result.tt, 0.0)


def draw(base: DefensiveTT, box: Box, target) -> tuple[torch.Tensor, float]:
    t, log_q = base.sample(SAMPLES, torch.Generator().manual_seed(1))
    x = box.to_x(t)
    log_w = target.log_prob(x) - (log_q - box.log_jacobian)
    return x, estimate_from_log_weights(log_w).ess_fraction


@pytest.fixture(scope="module")
def four_modes() -> GaussianMixture:
    """Four equal modes in 4 dimensions at (+-2, +-2, 0, 0), 8 standard deviations apart."""
    means = [[a, b, 0.0, 0.0] for a, b in itertools.product([-2.0, 2.0], repeat=2)]
    return GaussianMixture(means=means, scales=0.5)


def test_tt_base_finds_every_mixture_mode(four_modes):
    box = Box([(-4.0, 4.0)] * 4)
    base = fit_tt_base(four_modes, box, nodes=24, max_rank=8)

    x, ess_fraction = draw(base, box, four_modes)
    means = torch.as_tensor(four_modes.means)
    shares = torch.bincount(torch.cdist(x, means).argmin(dim=1), minlength=4) / SAMPLES

    assert ess_fraction >= MIN_ESS_FRACTION
    for mode, share in enumerate(shares.tolist()):
        assert abs(share - 0.25) <= SHARE_TOL, f"mode {mode} has share {share:.3f}, expected 0.25"


def test_tt_base_finds_both_chain_modes():
    # At beta = 1 the 8 interior sites settle near +1 or near -1 together: two mirror
    # modes separated by a barrier of about 6 per site, each with exact share 1/2.
    chain = GinzburgLandau1D(sites=8, beta=1.0)
    box = Box(chain.default_box())
    base = fit_tt_base(chain, box, nodes=24, max_rank=12)

    x, ess_fraction = draw(base, box, chain)
    positive = float((x.mean(dim=1) > 0).double().mean())

    assert ess_fraction >= MIN_ESS_FRACTION
    assert abs(positive - 0.5) <= SHARE_TOL, f"share of the positive mode is {positive:.3f}"
