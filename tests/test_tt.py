"""Tests of the TT engine: the squared TT density, its defensive mixture, cross
approximation, maxvol and the box check, in float64 unless stated."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.integrate import cumulative_simpson

from ttflow_cli.errors import NumericalError
from ttflow_cli.tt.chebyshev import orthonormal_legendre
from ttflow_cli.tt.cores import round_cores
from ttflow_cli.tt.cross import CrossBudget, Validation, cross_approximate
from ttflow_cli.tt.defensive import DefensiveTT
from ttflow_cli.tt.maxvol import maxvol
from ttflow_cli.tt.squared import SquaredTT
from ttflow_cli.workflow.diagnostics import SampleValidator, check_box

# Tensor Gauss-Legendre quadrature integrates the polynomial density exactly, so only
# rounding of a sum over a few hundred nodes remains.
NORMALIZATION_TOL = 1e-10
# Two float64 computations of the same density at the same points, by different
# contraction orders, differ by rounding only.
DENSITY_REL_TOL = 1e-12
# float32 log q loses a few float32 ulps (1.2e-7) per core. Near a zero of the density
# the error grows as 1 / q, so the worst of the samples below reaches about 4e-5.
FLOAT32_LOG_PROB_TOL = 1e-3
# A correct sampler fails one KS test with probability 1e-3, so a test of four
# coordinates fails with probability below 4e-3 per seed. The seeds below are fixed.
KS_P_VALUE = 1e-3
# Interpolation of a degree n - 1 polynomial on n nodes is exact, and the measured
# log-density differences of the smooth cases below on 12 or 24 nodes are under 1e-11.
CROSS_LOG_PROB_TOL = 1e-8
# Rounding tolerance that keeps every rank of an exactly low-rank tensor and drops
# rank-deficient directions at the level of rounding.
EXACT_ROUNDING_TOL = 1e-10
# maxvol stops when every coefficient is at most its tolerance, and the recomputed
# coefficients differ from its own by rounding only.
MAXVOL_TOL = 1.05
MAXVOL_SLACK = 1e-12
# The Hellinger distance is sqrt(1 - affinity), so a rounding-level 1e-12 in the
# affinity appears as 1e-6.
HELLINGER_TOL = 1e-6

NODES = 6
KS_SAMPLES = 20_000
# Points of the grid on which each marginal density is integrated into a CDF. Simpson's
# rule on this grid is far more accurate than the KS resolution 1 / sqrt(20000) = 0.007.
CDF_GRID_POINTS = 4001


def random_cores(ranks: list[int], nodes: int, seed: int) -> list[torch.Tensor]:
    """Standard-normal Legendre coefficient cores of shapes ``(r_{k-1}, nodes, r_k)``."""
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(ranks[k], nodes, ranks[k + 1], generator=generator, dtype=torch.float64)
        for k in range(len(ranks) - 1)
    ]


def tensor_quadrature(dim: int, nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``(nodes^dim, dim)`` and weights of the tensor Gauss-Legendre rule on [-1, 1]^dim."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    points = torch.tensor(list(itertools.product(x, repeat=dim)), dtype=torch.float64)
    weights = torch.tensor([math.prod(c) for c in itertools.product(w, repeat=dim)], dtype=torch.float64)
    return points, weights


def marginal_cdfs(marginal_densities: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Cumulative integrals of each row of ``marginal_densities`` from -1 along ``grid``."""
    return cumulative_simpson(marginal_densities, x=grid, axis=1, initial=0.0)


def ks_p_values(samples: torch.Tensor, cdfs: np.ndarray, grid: np.ndarray) -> list[float]:
    """KS p-value of each sample coordinate against the tabulated CDF of that coordinate."""
    p_values = []
    for k in range(samples.shape[1]):
        result = stats.kstest(samples[:, k].numpy(), lambda s, k=k: np.interp(s, grid, cdfs[k]))
        p_values.append(float(result.pvalue))
    return p_values


def legendre_tt_values(cores: list[torch.Tensor], t: torch.Tensor) -> torch.Tensor:
    """``G_1(t_1) ... G_d(t_d)`` for Legendre coefficient cores, ``(N, d) -> (N,)``."""
    nodes = cores[0].shape[1]
    values = torch.ones(t.shape[0], 1, dtype=torch.float64)
    for k, core in enumerate(cores):
        basis = torch.as_tensor(orthonormal_legendre(t[:, k].numpy(), nodes))
        values = torch.einsum("na,nj,ajb->nb", values, basis, core)
    return values[:, 0]


def positive_cores(ranks: list[int], nodes: int, seed: int) -> list[torch.Tensor]:
    """Legendre cores whose every entry of ``G_k(s)`` is positive on [-1, 1].

    The constant coefficient is at least 0.5, so it contributes at least 0.5 phi_0 =
    0.35. The others are at most 0.01 in size and ``|phi_j| <= sqrt((2j + 1) / 2)``,
    so for 8 nodes they change an entry by at most 0.2.
    """
    generator = torch.Generator().manual_seed(seed)
    cores = []
    for k in range(len(ranks) - 1):
        shape = (ranks[k], nodes, ranks[k + 1])
        core = 0.02 * torch.rand(shape, generator=generator, dtype=torch.float64) - 0.01
        core[:, 0, :] = 0.5 + torch.rand(ranks[k], ranks[k + 1], generator=generator, dtype=torch.float64)
        cores.append(core)
    return cores


def box_points(count: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 2 * torch.rand(count, dim, generator=generator, dtype=torch.float64) - 1


# --- squared TT ---------------------------------------------------------------------

NORMALIZATION_CASES = [
    ([1, 1], 6),
    ([1, 1, 1], 0),
    ([1, 3, 1], 1),
    ([1, 6, 1], 2),
    ([1, 2, 1, 1], 3),
    ([1, 3, 4, 1], 4),
    ([1, 5, 5, 1], 5),
]


@pytest.mark.parametrize(("ranks", "seed"), NORMALIZATION_CASES, ids=lambda case: str(case))
def test_squared_tt_integrates_to_one(ranks: list[int], seed: int) -> None:
    tt = SquaredTT(random_cores(ranks, NODES, seed))
    points, weights = tensor_quadrature(tt.dim, NODES)

    integral = float((weights * tt.log_prob(points).exp()).sum())

    assert tt.ranks == ranks
    assert abs(integral - 1.0) <= NORMALIZATION_TOL


def test_squared_tt_rejects_zero_cores() -> None:
    cores = [torch.zeros(1, NODES, 2, dtype=torch.float64), torch.zeros(2, NODES, 1, dtype=torch.float64)]

    with pytest.raises(ValueError, match="norm 0.0"):
        SquaredTT(cores)


def test_squared_tt_cores_right_orthonormal() -> None:
    tt = SquaredTT(random_cores([1, 3, 4, 2, 1], NODES, seed=8))

    for k, core in enumerate(tt.cores[1:], start=1):
        unfolding = core.reshape(core.shape[0], -1)
        gram = unfolding @ unfolding.T
        torch.testing.assert_close(gram, torch.eye(core.shape[0], dtype=torch.float64),
                                   rtol=0.0, atol=DENSITY_REL_TOL, msg=f"core {k}")
    assert abs(float(torch.linalg.norm(tt.cores[0])) - 1.0) <= DENSITY_REL_TOL


def full_tensor(cores: list[torch.Tensor]) -> torch.Tensor:
    """The whole coefficient tensor of a small TT, shape ``(n_1, ..., n_d)``."""
    result = cores[0]
    for core in cores[1:]:
        result = torch.tensordot(result, core, dims=([-1], [0]))
    return result.squeeze(0).squeeze(-1)


def test_round_cores_removes_redundant_rank() -> None:
    first, second, third = random_cores([1, 2, 3, 1], NODES, seed=9)
    # Doubling the first bond with a zero block keeps the tensor and its true ranks.
    padded = [torch.cat([first, first], dim=2), torch.cat([second, torch.zeros_like(second)], dim=0), third]

    rounded = round_cores(padded, tolerance=EXACT_ROUNDING_TOL, max_rank=10)

    assert [core.shape[2] for core in rounded[:-1]] == [2, 3]
    torch.testing.assert_close(full_tensor(rounded), full_tensor([first, second, third]),
                               rtol=DENSITY_REL_TOL, atol=DENSITY_REL_TOL)


def test_sample_zero_points() -> None:
    tt = SquaredTT(random_cores([1, 2, 1], NODES, seed=0))

    t, log_q = tt.sample(0, torch.Generator().manual_seed(0))

    assert t.shape == (0, 2)
    assert log_q.shape == (0,)


def test_log_prob_empty_batch() -> None:
    tt = SquaredTT(random_cores([1, 2, 1], NODES, seed=0))

    log_q = tt.log_prob(torch.zeros(0, 2, dtype=torch.float64))

    assert log_q.shape == (0,)


@pytest.mark.parametrize("dim", [2, 3])
def test_sample_log_q_matches_log_prob(dim: int) -> None:
    tt = SquaredTT(random_cores([1] + [3] * (dim - 1) + [1], NODES, seed=dim))

    t, log_q = tt.sample(2000, torch.Generator().manual_seed(0))

    assert t.shape == (2000, dim)
    assert log_q.dtype == torch.float64
    assert bool((t.abs() <= 1).all())
    assert bool(torch.isfinite(log_q).all())
    torch.testing.assert_close(log_q, tt.log_prob(t), rtol=DENSITY_REL_TOL, atol=DENSITY_REL_TOL)


def test_log_prob_outside_box_is_minus_inf() -> None:
    tt = SquaredTT(random_cores([1, 2, 1], NODES, seed=0))
    outside = torch.tensor([[1.5, 0.0], [0.0, -1.0 - 1e-12], [-3.0, 3.0]], dtype=torch.float64)

    log_q = tt.log_prob(outside)

    assert bool((log_q == -math.inf).all())


def test_samples_match_marginals() -> None:
    tt = SquaredTT(random_cores([1, 3, 4, 2, 1], NODES, seed=2))
    grid = torch.linspace(-1.0, 1.0, CDF_GRID_POINTS, dtype=torch.float64)
    cdfs = marginal_cdfs(tt.marginals(grid).numpy(), grid.numpy())

    t, _ = tt.sample(KS_SAMPLES, torch.Generator().manual_seed(0))
    p_values = ks_p_values(t, cdfs, grid.numpy())

    for k, p_value in enumerate(p_values):
        assert p_value > KS_P_VALUE, f"coordinate {k}: KS p-value {p_value:.2e}"


@pytest.mark.parametrize("dim", [2, 3])
def test_marginals_integrate_to_one(dim: int) -> None:
    tt = SquaredTT(random_cores([1] + [4] * (dim - 1) + [1], NODES, seed=10 + dim))
    nodes, weights = np.polynomial.legendre.leggauss(NODES)

    integrals = tt.marginals(torch.as_tensor(nodes)) @ torch.as_tensor(weights)

    torch.testing.assert_close(integrals, torch.ones(dim, dtype=torch.float64),
                               rtol=0.0, atol=NORMALIZATION_TOL)


def test_marginals_match_integrated_density() -> None:
    tt = SquaredTT(random_cores([1, 4, 1], NODES, seed=7))
    s = torch.linspace(-1.0, 1.0, 41, dtype=torch.float64)
    nodes, weights = (torch.as_tensor(a) for a in np.polynomial.legendre.leggauss(NODES))
    # Pairs (s_i, node_j) and (node_j, s_i), so that summing over j integrates out
    # the other coordinate exactly.
    first = torch.stack([s.repeat_interleave(NODES), nodes.repeat(s.numel())], dim=1)
    second = first.flip(1)

    density_first = tt.log_prob(first).exp().view(-1, NODES) @ weights
    density_second = tt.log_prob(second).exp().view(-1, NODES) @ weights
    marginals = tt.marginals(s)

    torch.testing.assert_close(marginals[0], density_first, rtol=DENSITY_REL_TOL, atol=DENSITY_REL_TOL)
    torch.testing.assert_close(marginals[1], density_second, rtol=DENSITY_REL_TOL, atol=DENSITY_REL_TOL)


def test_float32_sampling_matches_float64_log_prob() -> None:
    tt = SquaredTT(random_cores([1, 3, 4, 2, 1], NODES, seed=2))

    t, log_q = tt.sample(2000, torch.Generator().manual_seed(0), dtype=torch.float32)
    reference = tt.log_prob(t.double())

    assert t.dtype == torch.float32
    assert log_q.dtype == torch.float32
    assert bool((t.abs() <= 1).all())
    assert float((log_q.double() - reference).abs().max()) <= FLOAT32_LOG_PROB_TOL


def test_to_float32_keeps_density() -> None:
    tt = SquaredTT(random_cores([1, 3, 3, 1], NODES, seed=3))
    # Points drawn from the TT itself: at uniform points the density can be e^-20 of
    # its peak, where float32 cancellation alone gives log errors of 1e-3.
    t, _ = tt.sample(2000, torch.Generator().manual_seed(1))

    converted = tt.to(torch.float32)
    log_q = converted.log_prob(t.float())

    assert converted.dtype == torch.float32
    assert tt.dtype == torch.float64
    assert float((log_q.double() - tt.log_prob(t)).abs().max()) <= FLOAT32_LOG_PROB_TOL


# --- defensive mixture ----------------------------------------------------------------

DEFENSIVE_WEIGHT = 0.2


@pytest.mark.parametrize("dim", [2, 3])
def test_defensive_integrates_to_one(dim: int) -> None:
    base = DefensiveTT(SquaredTT(random_cores([1] + [3] * (dim - 1) + [1], NODES, seed=dim)),
                       defensive=DEFENSIVE_WEIGHT)
    points, weights = tensor_quadrature(dim, NODES)

    integral = float((weights * base.log_prob(points).exp()).sum())

    assert abs(integral - 1.0) <= NORMALIZATION_TOL


def test_defensive_sample_log_q_matches_log_prob() -> None:
    base = DefensiveTT(SquaredTT(random_cores([1, 3, 2, 1], NODES, seed=4)), defensive=DEFENSIVE_WEIGHT)

    t, log_q = base.sample(2000, torch.Generator().manual_seed(0))

    assert bool((t.abs() <= 1).all())
    torch.testing.assert_close(log_q, base.log_prob(t), rtol=DENSITY_REL_TOL, atol=DENSITY_REL_TOL)


def test_defensive_samples_match_marginals() -> None:
    tt = SquaredTT(random_cores([1, 3, 4, 2, 1], NODES, seed=2))
    base = DefensiveTT(tt, defensive=DEFENSIVE_WEIGHT)
    grid = torch.linspace(-1.0, 1.0, CDF_GRID_POINTS, dtype=torch.float64)
    # Every coordinate of the uniform component has density 1/2 on [-1, 1].
    mixture = (1 - DEFENSIVE_WEIGHT) * tt.marginals(grid) + DEFENSIVE_WEIGHT / 2
    cdfs = marginal_cdfs(mixture.numpy(), grid.numpy())

    t, _ = base.sample(KS_SAMPLES, torch.Generator().manual_seed(1))
    p_values = ks_p_values(t, cdfs, grid.numpy())

    for k, p_value in enumerate(p_values):
        assert p_value > KS_P_VALUE, f"coordinate {k}: KS p-value {p_value:.2e}"


def test_defensive_zero_weight_is_tt() -> None:
    tt = SquaredTT(random_cores([1, 3, 2, 1], NODES, seed=5))
    base = DefensiveTT(tt, defensive=0.0)
    points = box_points(500, 3, seed=2)

    t_base, log_q_base = base.sample(1000, torch.Generator().manual_seed(3))
    t_tt, log_q_tt = tt.sample(1000, torch.Generator().manual_seed(3))

    torch.testing.assert_close(base.log_prob(points), tt.log_prob(points), rtol=0.0, atol=0.0)
    torch.testing.assert_close(t_base, t_tt, rtol=0.0, atol=0.0)
    torch.testing.assert_close(log_q_base, log_q_tt, rtol=0.0, atol=0.0)


def test_defensive_log_prob_outside_box_is_minus_inf() -> None:
    base = DefensiveTT(SquaredTT(random_cores([1, 2, 1], NODES, seed=6)), defensive=DEFENSIVE_WEIGHT)
    outside = torch.tensor([[1.5, 0.0], [0.0, -2.0]], dtype=torch.float64)

    log_q = base.log_prob(outside)

    assert bool((log_q == -math.inf).all())


@pytest.mark.parametrize("weight", [-0.1, 1.0])
def test_defensive_rejects_bad_weight(weight: float) -> None:
    tt = SquaredTT(random_cores([1, 2, 1], NODES, seed=0))

    with pytest.raises(ValueError, match=r"defensive weight must be in \[0, 1\)"):
        DefensiveTT(tt, defensive=weight)


# --- cross approximation ------------------------------------------------------------

CROSS_NODES = 8
KICK = 2
LOW_RANK_CASES = [[1, 3, 1], [1, 2, 3, 1], [1, 3, 3, 2, 1]]


@pytest.mark.parametrize("ranks", LOW_RANK_CASES, ids=str)
def test_cross_recovers_low_rank_tt(ranks: list[int]) -> None:
    cores = positive_cores(ranks, CROSS_NODES, seed=sum(ranks))
    dim = len(ranks) - 1
    budget = CrossBudget(max_rank=8, tolerance=EXACT_ROUNDING_TOL, sweeps=2, init_rank=2, kick=KICK)

    # sqrt(p~) is the positive polynomial TT itself, so the grid interpolant is exact.
    result = cross_approximate(lambda t: 2 * torch.log(legendre_tt_values(cores, t)),
                               dim, CROSS_NODES, budget)
    exact = SquaredTT(cores)
    points = box_points(1000, dim, seed=0)
    error = float((result.tt.log_prob(points) - exact.log_prob(points)).abs().max())

    assert result.stop_reason == "sweeps"
    assert result.tt.ranks == ranks
    assert all(record.max_rank <= max(ranks) + KICK for record in result.history)
    assert error <= CROSS_LOG_PROB_TOL


SEPARABLE_STD = [0.4, 0.7, 1.0]


def test_cross_separable_gives_rank_one() -> None:
    std = torch.tensor(SEPARABLE_STD, dtype=torch.float64)

    def log_density(t: torch.Tensor) -> torch.Tensor:
        return -(t**2 / (2 * std**2)).sum(dim=1)

    # Normalization on [-1, 1] of exp(-t^2 / (2 s^2)) per coordinate, in closed form.
    log_z = sum(math.log(s * math.sqrt(2 * math.pi) * math.erf(1 / (s * math.sqrt(2)))) for s in SEPARABLE_STD)
    budget = CrossBudget(max_rank=6, tolerance=EXACT_ROUNDING_TOL, sweeps=2)

    result = cross_approximate(log_density, len(SEPARABLE_STD), 24, budget)
    points = box_points(1000, len(SEPARABLE_STD), seed=1)
    error = float((result.tt.log_prob(points) - (log_density(points) - log_z)).abs().max())

    assert result.tt.ranks == [1, 1, 1, 1]
    assert error <= CROSS_LOG_PROB_TOL


def smooth_log_density(t: torch.Tensor) -> torch.Tensor:
    """A correlated, non-separable log-density of moderate rank."""
    return -(t**2).sum(dim=1) + 0.5 * t[:, 0] * t[:, 1] - 0.3 * t[:, 1] * t[:, 2]


@pytest.mark.parametrize("offset", [-5000.0, 5000.0])
def test_cross_ignores_log_offset(offset: float) -> None:
    budget = CrossBudget(max_rank=8, tolerance=EXACT_ROUNDING_TOL, sweeps=2)
    reference = cross_approximate(smooth_log_density, 3, 12, budget)

    shifted = cross_approximate(lambda t: smooth_log_density(t) + offset, 3, 12, budget)
    points = box_points(1000, 3, seed=2)
    log_q = shifted.tt.log_prob(points)

    assert bool(torch.isfinite(log_q).all())
    assert shifted.tt.ranks == reference.tt.ranks
    assert float((log_q - reference.tt.log_prob(points)).abs().max()) <= CROSS_LOG_PROB_TOL


# (dim, init_rank, kick, max_evaluations, expected stop reason).
BUDGET_CASES = [
    (3, 2, 2, 500, "evaluations"),
    (3, 2, 2, 1500, "evaluations"),
    (3, 2, 2, 5000, "sweeps"),
    (4, 4, 2, 1000, "evaluations"),
    (4, 4, 2, 2000, "evaluations"),
    (5, 3, 1, 800, "evaluations"),
    (5, 3, 1, 3000, "evaluations"),
]


def budget_log_density(t: torch.Tensor) -> torch.Tensor:
    """A positive, non-separable density whose fibres have full numerical rank."""
    inner = 1.5 + 0.3 * torch.sin(2 * t).sum(dim=1) + torch.cos(t[:, 0] * t[:, 1] + t[:, -1])
    return 2 * torch.log(inner)


@pytest.mark.parametrize(("dim", "init_rank", "kick", "max_evaluations", "stop_reason"), BUDGET_CASES)
def test_cross_respects_evaluation_budget(dim: int, init_rank: int, kick: int, max_evaluations: int,
                                          stop_reason: str) -> None:
    budget = CrossBudget(max_rank=8, tolerance=1e-8, sweeps=2, max_evaluations=max_evaluations,
                         init_rank=init_rank, kick=kick)

    result = cross_approximate(budget_log_density, dim, 10, budget)

    assert result.evaluations <= max_evaluations
    assert result.stop_reason == stop_reason


class FixedValidator:
    """A validator that reports a fixed score and ``evaluations`` target calls per score."""

    def __init__(self, evaluations: int):
        self.evaluations = evaluations

    def __call__(self, tt: SquaredTT) -> Validation:
        return Validation(ess_fraction=0.5, hellinger=0.1, evaluations=self.evaluations)


# The first forward half-sweep grows the left index sets from 1 to init_rank + kick = 6
# before it evaluates the middle fibres: with the 256-point tempering probe it costs
# 836 evaluations here, which an estimate from the initial set sizes puts far lower.
@pytest.mark.parametrize("max_evaluations", [720, 800, 835, 836, 900])
def test_cross_budget_counts_grown_left_sets(max_evaluations: int) -> None:
    budget = CrossBudget(max_rank=8, tolerance=1e-8, sweeps=2, max_evaluations=max_evaluations,
                         init_rank=4, kick=2)

    try:
        result = cross_approximate(budget_log_density, 4, 10, budget)
    except NumericalError as error:
        assert "tt.max_evaluations" in str(error)
    else:
        assert result.evaluations <= max_evaluations


# Budgets at which the next half-sweep fits but its 500 validation evaluations do not.
@pytest.mark.parametrize("max_evaluations", [1500, 2100])
def test_cross_budget_counts_validation(max_evaluations: int) -> None:
    budget = CrossBudget(max_rank=8, tolerance=1e-8, sweeps=3, max_evaluations=max_evaluations,
                         init_rank=2, kick=1, plateau=-1.0)

    result = cross_approximate(smooth_log_density, 3, 10, budget, validate=FixedValidator(evaluations=500))

    assert result.evaluations <= budget.max_evaluations


def test_cross_budget_below_one_sweep_raises() -> None:
    budget = CrossBudget(max_rank=8, tolerance=1e-8, sweeps=2, max_evaluations=300, init_rank=4, kick=2)

    with pytest.raises(NumericalError, match=r"tt\.max_evaluations"):
        cross_approximate(budget_log_density, 4, 10, budget)


def test_cross_nan_log_density_raises() -> None:
    budget = CrossBudget(max_rank=4, tolerance=1e-8, sweeps=1)

    def log_density(t: torch.Tensor) -> torch.Tensor:
        return torch.where(t[:, 0] > 0, torch.full_like(t[:, 0], math.nan), -(t**2).sum(dim=1))

    with pytest.raises(NumericalError, match="NaN or \\+inf"):
        cross_approximate(log_density, 2, 8, budget)


# --- maxvol ---------------------------------------------------------------------------

MAXVOL_CASES = [(50, 5, 0), (200, 8, 1), (64, 16, 2), (7, 7, 3), (300, 1, 4)]


@pytest.mark.parametrize(("rows", "columns", "seed"), MAXVOL_CASES)
def test_maxvol_dominant_submatrix(rows: int, columns: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    # Graded columns make the LU start far from dominant, so the swaps do real work.
    grading = torch.logspace(0, -6, columns, dtype=torch.float64)
    a = torch.randn(rows, columns, generator=generator, dtype=torch.float64) * grading

    selected = maxvol(a)
    coefficients = torch.linalg.solve(a[selected].T, a.T).T

    assert selected.shape == (columns,)
    assert len(set(selected.tolist())) == columns
    assert torch.linalg.matrix_rank(a[selected]) == columns
    assert float(coefficients.abs().max()) <= MAXVOL_TOL + MAXVOL_SLACK


def test_maxvol_rejects_wide_matrix() -> None:
    with pytest.raises(ValueError, match="at least as many rows as columns"):
        maxvol(torch.ones(3, 5, dtype=torch.float64))


# --- box check -------------------------------------------------------------------------

BOX_CHECK_NODES = 40


def grid_core(values: torch.Tensor) -> torch.Tensor:
    """A rank-one grid core ``(1, n, 1)`` of ``sqrt(p~)`` values at the nodes."""
    return values.reshape(1, -1, 1)


def test_check_box_flags_mass_at_face() -> None:
    nodes = torch.as_tensor(np.polynomial.legendre.leggauss(BOX_CHECK_NODES)[0])
    flat = grid_core(torch.ones_like(nodes))
    narrow = grid_core(torch.exp(-(nodes**2) / (4 * 0.15**2)))
    rising = grid_core(torch.exp(1.5 * nodes))
    tt = SquaredTT.from_grid_cores([flat, narrow, rising], EXACT_ROUNDING_TOL, max_rank=4)

    check = check_box(tt)

    assert not check.ok
    assert check.coordinates == [0, 2]
    assert len(check.face_ratio) == 2


def flat_and_narrow_tt() -> SquaredTT:
    """A 2D squared TT: uniform in the first coordinate, N(0, 0.15^2) in the second."""
    nodes = torch.as_tensor(np.polynomial.legendre.leggauss(BOX_CHECK_NODES)[0])
    flat = grid_core(torch.ones_like(nodes))
    narrow = grid_core(torch.exp(-(nodes**2) / (4 * 0.15**2)))
    return SquaredTT.from_grid_cores([flat, narrow], EXACT_ROUNDING_TOL, max_rank=4)


def test_check_box_confirms_face_mass_by_target() -> None:
    tt = flat_and_narrow_tt()

    def flat_target(t: torch.Tensor) -> torch.Tensor:
        return -(t[:, 1] ** 2) / (2 * 0.15**2)

    check = check_box(tt, flat_target, torch.Generator().manual_seed(0))

    assert check.coordinates == [0]
    assert check.band_mass[0] > 0.01


def test_check_box_ignores_spurious_face_mass() -> None:
    tt = flat_and_narrow_tt()

    def concentrated_target(t: torch.Tensor) -> torch.Tensor:
        return -(t**2).sum(1) / (2 * 0.15**2)

    check = check_box(tt, concentrated_target, torch.Generator().manual_seed(0))

    assert check.ok


def test_check_box_passes_concentrated_tt() -> None:
    nodes = torch.as_tensor(np.polynomial.legendre.leggauss(BOX_CHECK_NODES)[0])
    narrow = grid_core(torch.exp(-(nodes**2) / (4 * 0.15**2)))
    tt = SquaredTT.from_grid_cores([narrow, narrow, narrow], EXACT_ROUNDING_TOL, max_rank=4)

    check = check_box(tt)

    assert check.ok
    assert check.coordinates == []


# --- validation of a candidate TT --------------------------------------------------------

def test_validator_exact_proposal_scores_one() -> None:
    tt = SquaredTT(random_cores([1, 3, 2, 1], NODES, seed=12))
    # The target is the TT density itself times a constant, so every weight is equal.
    validate = SampleValidator(lambda t: tt.log_prob(t) + 3.0, defensive=0.0, evaluations=500,
                               generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))

    validation = validate(tt)

    assert abs(validation.ess_fraction - 1.0) <= DENSITY_REL_TOL
    assert validation.hellinger <= HELLINGER_TOL
    assert validation.evaluations == 500
