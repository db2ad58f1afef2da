"""Independent Metropolis-Hastings and integrated autocorrelation times, against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ttflow_cli.estimators import AutocovarianceAccumulator, ChainObservables, IndependenceChain
from ttflow_cli.estimators.autocorrelation import sokal_window
from ttflow_cli.estimators.mcmc import PREVIOUS_STATE, chain_rows

# Chunked and one-pass FFT sums differ in rounding only.
CHUNK_TOL = 1e-9
# For an AR(1) series of 200,000 steps with tau = 9, the estimate of tau has a relative
# standard error of about sqrt(2 (2M + 1) / N) = 3 % at the window M ~ 45 (Sokal's estimate).
AR1_TAU_REL_TOL = 0.15
SIGMAS = 4.0


def ar1_series(phi: float, n: int, seed: int) -> np.ndarray:
    """An AR(1) series ``y_t = phi y_{t-1} + e_t``, started in its stationary law."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(n)
    y = np.empty(n)
    y[0] = noise[0] / math.sqrt(1 - phi**2)
    for t in range(1, n):
        y[t] = phi * y[t - 1] + noise[t]
    return y


def run_chain(log_w: torch.Tensor, log_u: torch.Tensor, chunk: int) -> np.ndarray:
    """Global state index after every step, for the chain advanced ``chunk`` proposals at a time."""
    chain = IndependenceChain()
    states, current = [], None
    for start in range(0, log_w.numel(), chunk):
        local = chain.advance(log_w[start:start + chunk], log_u[start:start + chunk])
        global_states = np.where(local == PREVIOUS_STATE, -1, local + start)
        for state in global_states:
            current = current if state == -1 else int(state)
            states.append(current)
    return np.asarray(states)


# --- the chain ---------------------------------------------------------------------

def test_chain_independent_of_chunks() -> None:
    generator = torch.Generator().manual_seed(0)
    log_w = torch.randn(1000, generator=generator, dtype=torch.float64)
    log_u = torch.log(torch.rand(1000, generator=generator, dtype=torch.float64))

    reference = run_chain(log_w, log_u, 1000)

    for chunk in (1, 7, 333):
        np.testing.assert_array_equal(run_chain(log_w, log_u, chunk), reference)


def test_equal_weights_always_accept() -> None:
    chain = IndependenceChain()
    log_u = torch.log(torch.rand(500, generator=torch.Generator().manual_seed(1), dtype=torch.float64))

    states = chain.advance(torch.full((500,), 3.0, dtype=torch.float64), log_u)

    assert chain.acceptance == 1.0
    np.testing.assert_array_equal(states, np.arange(500))


def test_zero_density_never_accepted() -> None:
    chain = IndependenceChain()
    log_w = torch.tensor([0.0, -math.inf, 5.0, -math.inf], dtype=torch.float64)

    states = chain.advance(log_w, torch.full((4,), -1e-12, dtype=torch.float64))

    np.testing.assert_array_equal(states, [0, 0, 2, 2])
    assert chain.accepted == 1


def test_zero_density_start_left_at_once() -> None:
    chain = IndependenceChain()
    log_w = torch.tensor([-math.inf, -50.0, -60.0], dtype=torch.float64)

    states = chain.advance(log_w, torch.zeros(3, dtype=torch.float64))

    np.testing.assert_array_equal(states, [0, 1, 1])


@pytest.mark.parametrize(("u", "expected"), [(0.2, [0, 1, 2]), (0.4, [0, 0, 0])])
def test_acceptance_rule_uses_weight_ratio(u: float, expected: list[int]) -> None:
    # From weight 1 to 0.3: accept exactly when u < 0.3. Between equal weights
    # 0.3 -> 0.3 every step accepts, and from 1 to 0.3 with u = 0.99 none does.
    chain = IndependenceChain()
    log_w = torch.tensor([0.0, math.log(0.3), math.log(0.3)], dtype=torch.float64)
    log_u = torch.tensor([0.0, math.log(u), math.log(0.99)], dtype=torch.float64)

    states = chain.advance(log_w, log_u)

    np.testing.assert_array_equal(states, expected)


def test_chain_rows_carry_previous_state() -> None:
    values = torch.tensor([[1.0], [2.0], [3.0]])

    rows = chain_rows(np.array([PREVIOUS_STATE, 1, 1]), values, torch.tensor([9.0]))

    np.testing.assert_array_equal(rows.numpy(), [[9.0], [2.0], [2.0]])


def test_uniform_proposal_closed_form() -> None:
    """Target U(0, 1), proposal U(0, 2): w = 2 on [0, 1] and 0 elsewhere.

    A step accepts exactly when the proposal lands in [0, 1] (probability 1/2), and then
    moves to a fresh independent point. So rho(t) = 2^-t for any observable of the
    state, tau_int = 1 + 2 sum_t 2^-t = 3, and the chain average of x is 1/2.
    """
    generator = torch.Generator().manual_seed(2)
    n = 100_000
    x = 2 * torch.rand(n, generator=generator, dtype=torch.float64)
    log_w = torch.where(x <= 1, math.log(2.0), -math.inf)
    log_u = torch.log(torch.rand(n, generator=generator, dtype=torch.float64))
    # The first proposal must lie in [0, 1], or the chain starts outside the target.
    x[0] = 0.25
    log_w[0] = math.log(2.0)
    tracker = ChainObservables(["x"])

    for start in range(0, n, 4096):
        rows = slice(start, start + 4096)
        tracker.update(log_w[rows], log_u[rows], x[rows, None])
    summary = tracker.summary()

    acceptance_sigma = math.sqrt(0.25 / n)
    assert abs(summary.acceptance - 0.5) < SIGMAS * acceptance_sigma
    item = summary.observables["x"]
    assert item.tau_int == pytest.approx(3.0, rel=0.1)
    assert abs(item.mean - 0.5) < SIGMAS * item.err


# --- autocorrelation -----------------------------------------------------------------

def test_ar1_tau_closed_form() -> None:
    phi = 0.8
    y = ar1_series(phi, 200_000, seed=0)
    accumulator = AutocovarianceAccumulator(1, max_lag=400)

    accumulator.update(y[:, None])
    (time,) = accumulator.times()

    assert time.converged
    assert time.tau_int == pytest.approx((1 + phi) / (1 - phi), rel=AR1_TAU_REL_TOL)


def test_autocovariance_matches_direct_sum() -> None:
    y = ar1_series(0.5, 5000, seed=1)[:, None] + 1000.0
    accumulator = AutocovarianceAccumulator(1, max_lag=50)
    accumulator.update(y)
    centered = y[:, 0] - y.mean()

    direct = [np.dot(centered[: y.shape[0] - lag], centered[lag:]) / y.shape[0] for lag in range(51)]

    np.testing.assert_allclose(accumulator.autocovariance()[:, 0], direct, rtol=1e-9, atol=1e-9)
    assert accumulator.means()[0] == pytest.approx(y.mean(), rel=1e-14)


@pytest.mark.parametrize("chunk", [1, 13, 999])
def test_autocovariance_independent_of_chunks(chunk: int) -> None:
    y = np.stack([ar1_series(0.9, 3000, seed=2), ar1_series(0.1, 3000, seed=3)], axis=1)
    whole = AutocovarianceAccumulator(2, max_lag=64)
    whole.update(y)
    pieces = AutocovarianceAccumulator(2, max_lag=64)

    for start in range(0, y.shape[0], chunk):
        pieces.update(y[start:start + chunk])

    np.testing.assert_allclose(pieces.autocovariance(), whole.autocovariance(), rtol=CHUNK_TOL, atol=CHUNK_TOL)


def test_series_shorter_than_max_lag() -> None:
    accumulator = AutocovarianceAccumulator(1, max_lag=100)
    accumulator.update(np.array([[1.0], [2.0], [0.0], [1.0]]))

    assert accumulator.autocovariance().shape == (4, 1)


def test_constant_series_has_no_tau() -> None:
    accumulator = AutocovarianceAccumulator(1, max_lag=10)
    accumulator.update(np.full((100, 1), 4.2))

    assert accumulator.times() == [None]


def test_sokal_window_stops_at_first_lag() -> None:
    # rho(t) = 0.5^t gives tau(M) = 3 - 2^(1-M); M >= 5 tau(M) first holds at M = 15.
    rho = 0.5 ** np.arange(40)

    tau, window, converged = sokal_window(rho)

    assert converged
    assert window == 15
    assert tau == pytest.approx(3.0 - 2.0**-14)


def test_sokal_window_not_reached() -> None:
    rho = np.ones(10)

    tau, window, converged = sokal_window(rho)

    assert not converged
    assert window == 9
    assert tau == 19.0
