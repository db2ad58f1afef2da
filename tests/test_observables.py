"""Exact observable averages of the targets, and the estimators of averages, errors and tails."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ttflow_cli.errors import NumericalError
from ttflow_cli.estimators import (
    ElboAccumulator,
    PoissonBootstrap,
    SelfNormalizedAccumulator,
    TopLogWeights,
    pareto_k,
    poisson_multiplicities,
    tail_length,
)
from ttflow_cli.estimators.pareto import fit_generalized_pareto
from ttflow_cli.targets import Banana, GaussianMixture, GinzburgLandau1D, GinzburgLandau2D, ManyWell, Target
from ttflow_cli.targets.transfer import gauss_legendre, open_chain_log_z

# Brute-force tensor quadrature on these grids resolves 2- and 3-site chains to about
# 1e-10 (the same grids check log Z and site moments in test_targets.py).
QUADRATURE_TOLERANCE = 1e-8
# -d log Z / d beta by a central difference with step 1e-5: truncation error about
# h^2 kappa_3 / 6 ~ 1e-6 for the 50-site chain, rounding about 1e-16 * 40 / h ~ 1e-9.
DERIVATIVE_STEP = 1e-5
DERIVATIVE_TOLERANCE = 1e-6
SIGMAS = 4.0
CHUNK_REL_TOL = 1e-12
# Zhang-Stephens on 3000 GPD draws: the standard error of k is about (1 + k) / sqrt(n) = 0.03.
GPD_K_TOLERANCE = 0.12

CHAINS = {
    "dirichlet2": {"sites": 2, "beta": 1.0, "left": 0.3, "right": -0.2},
    "dirichlet3": {"sites": 3, "beta": 0.5, "left": 0.8, "right": 0.1},
    "dirichlet1": {"sites": 1, "beta": 0.7, "left": 0.5, "right": 0.2},
    "ring1": {"sites": 1, "beta": 0.5, "boundary": "periodic"},
    "ring2": {"sites": 2, "beta": 0.3, "boundary": "periodic"},
    "ring3": {"sites": 3, "beta": 0.5, "boundary": "periodic"},
}


def grid_averages(target: GinzburgLandau1D, nodes: int, half_width: float) -> dict[str, float]:
    """Averages of the observables by tensor Gauss-Legendre quadrature over all sites at once."""
    u, w = gauss_legendre(nodes, -half_width, half_width)
    axes = np.meshgrid(*([u] * target.dim), indexing="ij")
    weights = np.meshgrid(*([w] * target.dim), indexing="ij")
    points = torch.from_numpy(np.stack(axes, axis=-1).reshape(-1, target.dim))
    log_weights = torch.from_numpy(sum(np.log(item) for item in weights).reshape(-1))
    mass = torch.softmax(target.log_prob(points) + log_weights, dim=0)
    return {name: float(mass @ function(points)) for name, function in target.observables().items()}


@pytest.mark.parametrize("params", CHAINS.values(), ids=CHAINS.keys())
def test_gl_chain_exact_observables_match_brute_force(params: dict) -> None:
    target = GinzburgLandau1D(**params)
    brute_force = grid_averages(target, 150 if target.dim <= 2 else 90, 3.5)

    exact = target.exact_observables()

    assert set(exact) == {"energy_per_site", "magnetization", "magnetization_squared"}
    for name, value in exact.items():
        assert value == pytest.approx(brute_force[name], abs=QUADRATURE_TOLERANCE), name


def test_gl_chain_energy_is_log_z_derivative() -> None:
    """``E[V] = -d log Z / d beta``, by a central difference on one fixed grid."""
    target = GinzburgLandau1D(sites=50, beta=0.125)
    grid = target.quadrature_grid()

    def log_z(beta: float) -> float:
        shifted = GinzburgLandau1D(sites=50, beta=beta)
        return open_chain_log_z(shifted._log_site, shifted._log_bond, 50, grid, 0.0, 0.0)

    derivative = (log_z(0.125 + DERIVATIVE_STEP) - log_z(0.125 - DERIVATIVE_STEP)) / (2 * DERIVATIVE_STEP)

    energy = target.exact_observables()["energy_per_site"]
    assert energy == pytest.approx(-derivative / 50, abs=DERIVATIVE_TOLERANCE)


def test_gl_chain_magnetization_matches_site_moments() -> None:
    target = GinzburgLandau1D(sites=12, beta=1.0, left=1.0, right=-0.5)
    mean, second = target.exact_site_moments()

    exact = target.exact_observables()

    assert exact["magnetization"] == pytest.approx(mean.mean(), abs=1e-12)
    # Jensen: E[m^2] >= E[m]^2, and E[m^2] <= mean_i E[u_i^2] by Cauchy-Schwarz.
    assert mean.mean() ** 2 <= exact["magnetization_squared"] <= second.mean()


def test_gl_chain_exact_values_converge_in_nodes() -> None:
    target = GinzburgLandau1D(sites=50, beta=0.125)

    coarse, fine = target.exact_observables(nodes=300), target.exact_observables(nodes=600)

    for name in coarse:
        assert coarse[name] == pytest.approx(fine[name], abs=1e-10), name


def test_gl2d_has_no_exact_observables() -> None:
    assert GinzburgLandau2D(sites=2, beta=1.0).exact_observables() == {}


def test_many_well_exact_observables_match_quadrature() -> None:
    target = ManyWell(dim=2)
    u, w = gauss_legendre(400, -4.0, 4.0)
    v, wv = gauss_legendre(200, -8.0, 8.0)
    points = torch.from_numpy(np.stack(np.meshgrid(u, v, indexing="ij"), axis=-1).reshape(-1, 2))
    mass = torch.softmax(target.log_prob(points) + torch.from_numpy(np.log(np.outer(w, wv)).reshape(-1)), dim=0)

    exact = target.exact_observables()

    assert exact["energy"] == pytest.approx(float(mass @ -target.log_prob(points)), abs=QUADRATURE_TOLERANCE)
    assert exact["mean"] == pytest.approx(float(mass @ points.mean(dim=1)), abs=QUADRATURE_TOLERANCE)


def test_many_well_exact_observables_scale_with_dim() -> None:
    pair, many = ManyWell(dim=2).exact_observables(), ManyWell(dim=32).exact_observables()

    assert many["energy"] == pytest.approx(16 * pair["energy"], rel=1e-13)
    assert many["mean"] == pytest.approx(pair["mean"], rel=1e-13)


def exact_draws(target: Target, count: int, generator: torch.Generator) -> torch.Tensor:
    """Exact samples of the banana and the mixture, from their generative form."""
    if isinstance(target, Banana):
        s, b = target.params.scale, target.params.curvature
        x1 = s * torch.randn(count, target.dim // 2, generator=generator, dtype=torch.float64)
        y = torch.randn(count, target.dim // 2, generator=generator, dtype=torch.float64)
        return torch.stack([x1, y + b * (x1**2 - s**2)], dim=2).reshape(count, target.dim)
    probabilities = torch.from_numpy(target.weights / target.weights.sum())
    component = torch.multinomial(probabilities, count, replacement=True, generator=generator)
    means, scales = torch.from_numpy(target.means), torch.from_numpy(target.scales)
    noise = torch.randn(count, target.dim, generator=generator, dtype=torch.float64)
    return means[component] + scales[component, None] * noise


@pytest.mark.parametrize(
    "target",
    [Banana(dim=4), GaussianMixture(means=[[0.0, 1.0], [3.0, -1.0]], scales=[0.5, 1.0], weights=[1.0, 3.0])],
    ids=["banana", "mixture"],
)
def test_closed_form_observables_match_exact_draws(target: Target) -> None:
    x = exact_draws(target, 100_000, torch.Generator().manual_seed(0))

    for name, value in target.exact_observables().items():
        samples = target.observables()[name](x)
        error = float(samples.std()) / math.sqrt(samples.numel())
        assert abs(float(samples.mean()) - value) < SIGMAS * error, name


def test_mixture_energy_has_no_exact_value() -> None:
    target = GaussianMixture(means=[[0.0], [2.0]], scales=1.0)

    assert "energy" not in target.exact_observables()


# --- self-normalized averages ------------------------------------------------------------

def gaussian_draws(seed: int, n: int, proposal_std: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    """``x ~ N(0, s_q^2)`` in 1D with log weights against the unnormalized ``exp(-x^2 / 2)``."""
    generator = torch.Generator().manual_seed(seed)
    x = proposal_std * torch.randn(n, generator=generator, dtype=torch.float64)
    log_q = -x * x / (2 * proposal_std**2) - math.log(proposal_std * math.sqrt(2 * math.pi))
    return x, -x * x / 2 - log_q


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_self_normalized_moments_within_error(seed: int) -> None:
    x, log_w = gaussian_draws(seed, 20_000)
    accumulator = SelfNormalizedAccumulator(["x", "x2", "x4"])

    accumulator.update(log_w, torch.stack([x, x**2, x**4], dim=1))
    estimates = accumulator.estimates()

    for name, exact in {"x": 0.0, "x2": 1.0, "x4": 3.0}.items():
        assert abs(estimates[name].mean - exact) < SIGMAS * estimates[name].err, name


def test_self_normalized_error_closed_form() -> None:
    """N times the delta-method variance tends to ``E_q[w^2 (f - mu)^2]`` for normalized ``w = p / q``.

    For ``f = x``, ``p = N(0, 1)`` and ``q = N(0, s^2)``, ``p^2 / q`` is
    ``s^2 / sqrt(2 s^2 - 1)`` times a Gaussian density of variance ``s^2 / (2 s^2 - 1)``.
    """
    s = 1.5
    n = 50_000
    x, log_w = gaussian_draws(4, n, s)
    accumulator = SelfNormalizedAccumulator(["x"])
    accumulator.update(log_w, x[:, None])
    second = s**2 / math.sqrt(2 * s**2 - 1) * s**2 / (2 * s**2 - 1)

    assert accumulator.estimates()["x"].err == pytest.approx(math.sqrt(second / n), rel=0.05)


@pytest.mark.parametrize("chunk", [1, 999, 5000])
def test_self_normalized_independent_of_chunks(chunk: int) -> None:
    x, log_w = gaussian_draws(5, 5000)
    log_w = 30.0 * log_w  # a wide range of weights, so the shift changes often
    values = torch.stack([x, 1000.0 + x], dim=1)
    whole = SelfNormalizedAccumulator(["a", "b"])
    whole.update(log_w, values)
    pieces = SelfNormalizedAccumulator(["a", "b"])

    for start in range(0, 5000, chunk):
        pieces.update(log_w[start:start + chunk], values[start:start + chunk])

    for name in ("a", "b"):
        assert pieces.estimates()[name].mean == pytest.approx(whole.estimates()[name].mean, rel=CHUNK_REL_TOL)
        assert pieces.estimates()[name].err == pytest.approx(whole.estimates()[name].err, rel=1e-9)


def test_large_offset_keeps_error_digits() -> None:
    x, log_w = gaussian_draws(6, 10_000)
    plain, shifted = SelfNormalizedAccumulator(["x"]), SelfNormalizedAccumulator(["x"])

    plain.update(log_w, x[:, None])
    shifted.update(log_w, (1e8 + x)[:, None])

    assert shifted.estimates()["x"].err == pytest.approx(plain.estimates()["x"].err, rel=1e-6)


def test_zero_weight_rows_ignored() -> None:
    accumulator = SelfNormalizedAccumulator(["f"])
    log_w = torch.tensor([0.0, -math.inf, 0.0], dtype=torch.float64)

    accumulator.update(log_w, torch.tensor([[1.0], [math.nan], [3.0]], dtype=torch.float64))

    assert accumulator.estimates()["f"].mean == 2.0


def test_non_finite_observable_raises() -> None:
    accumulator = SelfNormalizedAccumulator(["f", "g"])
    values = torch.tensor([[1.0, 0.0], [2.0, math.inf]], dtype=torch.float64)

    with pytest.raises(NumericalError, match=r"observable 'g' is not finite at 1 of 2 samples"):
        accumulator.update(torch.zeros(2, dtype=torch.float64), values)


def test_all_zero_weights_raise() -> None:
    accumulator = SelfNormalizedAccumulator(["f"])
    accumulator.update(torch.full((3,), -math.inf, dtype=torch.float64), torch.zeros(3, 1, dtype=torch.float64))

    with pytest.raises(NumericalError, match="all 3 importance log weights are -inf"):
        accumulator.estimates()


# --- ELBO ---------------------------------------------------------------------------------

def test_elbo_accumulator_matches_sample_statistics() -> None:
    _, log_w = gaussian_draws(7, 3000)
    accumulator = ElboAccumulator()

    for start in range(0, 3000, 1000):
        accumulator.update(log_w[start:start + 1000] + 500.0)
    elbo, err = accumulator.estimate()

    assert elbo == pytest.approx(float(log_w.mean()) + 500.0, rel=1e-14)
    assert err == pytest.approx(float(log_w.std()) / math.sqrt(3000), rel=1e-9)


def test_elbo_accumulator_zero_weight() -> None:
    accumulator = ElboAccumulator()
    accumulator.update(torch.tensor([0.0, -math.inf], dtype=torch.float64))

    assert accumulator.estimate() == (-math.inf, None)


# --- bootstrap ------------------------------------------------------------------------------

def test_bootstrap_matches_delta_method() -> None:
    x, log_w = gaussian_draws(8, 20_000)
    generator = torch.Generator().manual_seed(0)
    bootstrap = PoissonBootstrap(200, ["x"])
    averages = SelfNormalizedAccumulator(["x"])

    for start in range(0, 20_000, 4096):
        rows = slice(start, start + 4096)
        count = log_w[rows].numel()
        bootstrap.update(log_w[rows], x[rows, None], poisson_multiplicities(200, count, generator))
    averages.update(log_w, x[:, None])
    errors = bootstrap.errors()

    accumulator_err = averages.estimates()["x"].err
    delta_log_z = math.sqrt((float(torch.exp(2 * log_w).mean() / torch.exp(log_w).mean() ** 2) - 1) / 20_000)
    assert errors.replicates == 200
    assert errors.log_z_err == pytest.approx(delta_log_z, rel=0.2)
    assert errors.observable_errs["x"] == pytest.approx(accumulator_err, rel=0.2)


def test_bootstrap_needs_two_replicates() -> None:
    with pytest.raises(ValueError, match="at least 2 replicates"):
        PoissonBootstrap(1, [])


def test_bootstrap_checks_multiplicity_shape() -> None:
    bootstrap = PoissonBootstrap(3, [])

    with pytest.raises(ValueError, match=r"multiplicities of shape \(3, 2\)"):
        bootstrap.update(torch.zeros(2), torch.zeros(2, 0), torch.ones(2, 2))


# --- Pareto k ----------------------------------------------------------------------------

@pytest.mark.parametrize("k", [-0.3, 0.0, 0.3, 0.7, 1.0])
def test_gpd_fit_recovers_shape(k: float) -> None:
    x = np.sort(stats.genpareto.rvs(k, scale=2.0, size=3000, random_state=np.random.default_rng(0)))

    k_hat, sigma_hat = fit_generalized_pareto(x)

    assert k_hat == pytest.approx(k, abs=GPD_K_TOLERANCE)
    assert sigma_hat == pytest.approx(2.0, rel=0.15)


def test_pareto_k_of_pareto_weights() -> None:
    # Weights with P(w > t) = t^(-1/k) for k = 0.8 have exactly a GPD tail above any threshold.
    u = torch.rand(100_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    log_w = -0.8 * torch.log(u)

    assert pareto_k(log_w, 100_000) == pytest.approx(0.8, abs=0.1)


def test_pareto_k_needs_enough_samples() -> None:
    assert tail_length(20) == 4
    assert pareto_k(torch.zeros(20, dtype=torch.float64), 20) is None


def test_pareto_k_of_constant_weights_is_undefined() -> None:
    assert pareto_k(torch.zeros(1000, dtype=torch.float64), 1000) is None


@pytest.mark.parametrize("chunk", [1, 77, 10_000])
def test_top_log_weights_independent_of_chunks(chunk: int) -> None:
    log_w = torch.randn(10_000, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    capacity = tail_length(10_000) + 1
    top = TopLogWeights(capacity)

    for start in range(0, 10_000, chunk):
        top.update(log_w[start:start + chunk])

    torch.testing.assert_close(top.values, torch.sort(log_w, descending=True).values[:capacity])
