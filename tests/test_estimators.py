"""Importance-sampling estimators against exact values and closed forms, in float64."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ttflow_cli.errors import NumericalError
from ttflow_cli.estimators import (
    LogWeightAccumulator,
    elbo,
    estimate_from_log_weights,
)

# Chunked and one-shot sums differ only in summation order, a few ulps over 3000 terms.
CHUNK_REL_TOL = 1e-12
# A 4-sigma band misses with probability 6e-5 per seed, so the fixed seeds below
# pass unless the estimate or its error is wrong.
LOG_Z_SIGMAS = 4.0
# Same reasoning for the ESS fraction, whose sigma comes from the delta method below.
ESS_FRACTION_SIGMAS = 4.0
# At N = 20000 the sample relative variance of the weights has a relative standard
# error of about 2.3 %, so log_z_err (its square root) is within about 1.2 % per sigma.
LOG_Z_ERR_REL_TOL = 0.05

SEEDS = [0, 1, 2, 3, 4]
N_SAMPLES = 20_000
DIM = 2
TARGET_STD = 1.0
PROPOSAL_STD = 1.5
TARGET_LOG_CONSTANT = 0.7


def gaussian_log_weights(seed: int, n: int = N_SAMPLES) -> torch.Tensor:
    """Return ``log p~(x) - log q(x)`` for ``x ~ q = N(0, PROPOSAL_STD^2 I)``.

    The target is ``p~(x) = exp(TARGET_LOG_CONSTANT - |x|^2 / (2 TARGET_STD^2))``.
    """
    generator = torch.Generator().manual_seed(seed)
    x = PROPOSAL_STD * torch.randn(n, DIM, generator=generator, dtype=torch.float64)
    squared_norm = x.square().sum(dim=-1)
    log_target = TARGET_LOG_CONSTANT - squared_norm / (2 * TARGET_STD**2)
    log_proposal = -squared_norm / (2 * PROPOSAL_STD**2) - DIM / 2 * math.log(
        2 * math.pi * PROPOSAL_STD**2
    )
    return log_target - log_proposal


def gaussian_exact_log_z() -> float:
    """``log Z = TARGET_LOG_CONSTANT + (d/2) log(2 pi TARGET_STD^2)``."""
    return TARGET_LOG_CONSTANT + DIM / 2 * math.log(2 * math.pi * TARGET_STD**2)


def gaussian_weight_moment(k: int) -> float:
    """Return ``E_q[w^k]`` for the normalized weight ``w = p / q``, ``p = N(0, TARGET_STD^2 I)``.

    Per coordinate, ``int p^k q^(1-k) dx = s_p^(-k) s_q^(k-1) / sqrt(k / s_p^2 - (k-1) / s_q^2)``,
    a Gaussian integral that is finite while ``k / s_p^2 > (k-1) / s_q^2``.
    """
    s_p, s_q = TARGET_STD, PROPOSAL_STD
    per_coordinate = s_p ** (-k) * s_q ** (k - 1) / math.sqrt(k / s_p**2 - (k - 1) / s_q**2)
    return per_coordinate**DIM


def ess_fraction_closed_form() -> tuple[float, float]:
    """Return the limit ``1 / E_q[w^2]`` of ESS / N and its delta-method sigma at N_SAMPLES.

    ESS / N = mean(w)^2 / mean(w^2) = g(mean(w), mean(w^2)) with ``g(a, b) = a^2 / b``,
    whose gradient at ``(1, m2)`` is ``(2 / m2, -1 / m2^2)``.
    """
    m2, m3, m4 = (gaussian_weight_moment(k) for k in (2, 3, 4))
    var_w, var_w2, cov = m2 - 1.0, m4 - m2**2, m3 - m2
    grad_a, grad_b = 2.0 / m2, -1.0 / m2**2
    variance = grad_a**2 * var_w + 2 * grad_a * grad_b * cov + grad_b**2 * var_w2
    return 1.0 / m2, math.sqrt(variance / N_SAMPLES)


@pytest.mark.parametrize("constant", [-3.7, 0.0, 800.0])
def test_constant_weights_exact(constant):
    log_w = torch.full((1000,), constant, dtype=torch.float64)

    estimate = estimate_from_log_weights(log_w)

    assert estimate.n == 1000
    assert estimate.ess == 1000.0
    assert estimate.ess_fraction == 1.0
    assert estimate.log_z == constant
    assert estimate.log_z_err == 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_gaussian_log_z_within_error(seed):
    estimate = estimate_from_log_weights(gaussian_log_weights(seed))
    exact = gaussian_exact_log_z()

    assert estimate.log_z_err > 0
    assert abs(estimate.log_z - exact) < LOG_Z_SIGMAS * estimate.log_z_err, (
        f"log Z {estimate.log_z} vs exact {exact}, error {estimate.log_z_err}"
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_gaussian_ess_fraction_closed_form(seed):
    expected, sigma = ess_fraction_closed_form()

    estimate = estimate_from_log_weights(gaussian_log_weights(seed))

    assert abs(estimate.ess_fraction - expected) < ESS_FRACTION_SIGMAS * sigma, (
        f"ESS fraction {estimate.ess_fraction} vs closed form {expected} +- {sigma}"
    )


def test_gaussian_log_z_err_closed_form():
    # The delta-method error of log Z tends to sqrt(Var_q(w) / N) with E_q[w] = 1.
    expected = math.sqrt((gaussian_weight_moment(2) - 1.0) / N_SAMPLES)

    estimate = estimate_from_log_weights(gaussian_log_weights(seed=10))

    assert estimate.log_z_err == pytest.approx(expected, rel=LOG_Z_ERR_REL_TOL)


def test_elbo_below_log_z():
    log_w = gaussian_log_weights(seed=0)

    lower_bound = elbo(log_w)

    assert lower_bound == pytest.approx(float(log_w.mean()), rel=1e-15)
    assert lower_bound < gaussian_exact_log_z()


def chunked_estimate(log_w: torch.Tensor, chunk_size: int):
    accumulator = LogWeightAccumulator()
    for chunk in log_w.split(chunk_size):
        accumulator.update(chunk)
    return accumulator.estimate(beta=2.0)


@pytest.mark.parametrize("order", ["random", "increasing"])
@pytest.mark.parametrize("chunk_size", [1, 7, 1000, 3001])
def test_accumulator_chunk_invariance(chunk_size, order):
    generator = torch.Generator().manual_seed(3)
    log_w = 20.0 * torch.randn(3001, generator=generator, dtype=torch.float64)
    log_w[::500] = -math.inf
    if order == "increasing":
        # Every chunk raises the running maximum, so every update rescales the sums.
        log_w = log_w.sort().values
    reference = estimate_from_log_weights(log_w, beta=2.0)

    estimate = chunked_estimate(log_w, chunk_size)

    assert estimate.n == reference.n
    for field in ("ess", "ess_fraction", "log_z", "log_z_err", "free_energy", "free_energy_err"):
        value, expected = getattr(estimate, field), getattr(reference, field)
        assert value == pytest.approx(expected, rel=CHUNK_REL_TOL), field


def test_free_energy_from_beta():
    log_w = gaussian_log_weights(seed=0, n=1000)
    beta = 2.5

    without_beta = estimate_from_log_weights(log_w)
    with_beta = estimate_from_log_weights(log_w, beta=beta)

    assert without_beta.free_energy is None
    assert without_beta.free_energy_err is None
    assert with_beta.free_energy == -with_beta.log_z / beta
    assert with_beta.free_energy_err == with_beta.log_z_err / beta
    assert with_beta.log_z == without_beta.log_z


@pytest.mark.parametrize("beta", [0.0, -1.0, math.inf, math.nan])
def test_invalid_beta_raises(beta):
    with pytest.raises(ValueError, match="beta must be positive and finite"):
        estimate_from_log_weights(torch.zeros(4, dtype=torch.float64), beta=beta)


def test_to_dict_is_json_serializable():
    estimate = estimate_from_log_weights(gaussian_log_weights(seed=0, n=100), beta=1.0)

    restored = json.loads(json.dumps(estimate.to_dict()))

    assert restored["n"] == 100
    assert restored["log_z"] == estimate.log_z
    assert set(restored) == {
        "n", "ess", "ess_fraction", "log_z", "log_z_err", "free_energy", "free_energy_err"
    }


def test_negative_infinite_weights_allowed():
    log_w = torch.tensor([0.0, -math.inf, 0.0, 0.0], dtype=torch.float64)

    estimate = estimate_from_log_weights(log_w)

    assert estimate.n == 4
    assert estimate.ess == pytest.approx(3.0, rel=1e-15)
    assert estimate.log_z == pytest.approx(math.log(3 / 4), rel=1e-15)


def test_nan_and_positive_infinity_raise():
    log_w = torch.zeros(10, dtype=torch.float64)
    log_w[2] = math.nan
    log_w[5] = math.nan
    log_w[7] = math.inf

    with pytest.raises(
        NumericalError,
        match=r"3 of 10 importance log weights log p~\(x\) - log q\(x\) "
        r"are not finite \(2 NaN, 1 \+inf\)",
    ):
        estimate_from_log_weights(log_w)


def test_non_finite_chunk_raises_in_accumulator():
    accumulator = LogWeightAccumulator()
    accumulator.update(torch.zeros(5, dtype=torch.float64))

    with pytest.raises(NumericalError, match=r"1 of 3 importance log weights"):
        accumulator.update(torch.tensor([0.0, math.inf, 1.0], dtype=torch.float64))


def test_all_negative_infinity_raises():
    log_w = torch.full((4,), -math.inf, dtype=torch.float64)

    with pytest.raises(NumericalError, match=r"all 4 importance log weights .* are -inf"):
        estimate_from_log_weights(log_w)


def test_elbo_non_finite_raises():
    with pytest.raises(NumericalError, match=r"1 of 2 importance log weights"):
        elbo(torch.tensor([0.0, math.nan], dtype=torch.float64))


def test_empty_accumulator_raises():
    with pytest.raises(ValueError, match="no log weights were added"):
        LogWeightAccumulator().estimate()


def test_float32_weights_match_float64():
    log_w = gaussian_log_weights(seed=0, n=1000)

    single = estimate_from_log_weights(log_w.to(torch.float32))
    double = estimate_from_log_weights(log_w.to(torch.float32).to(torch.float64))

    assert single == double
