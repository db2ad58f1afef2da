r"""Pareto-k diagnostic of the importance-weight tail, as in Pareto-smoothed importance sampling.

A generalized Pareto distribution (GPD) is fitted to the ``M`` largest weights, with
``M = ceil(min(N / 5, 3 sqrt(N)))``. Its shape ``k`` sets how many moments the weight
distribution has: ``E[w^r]`` is finite for ``r < 1 / k``. So ``k < 1/2`` means a finite
variance and a trustworthy delta-method error, ``1/2 <= k < 0.7`` a slow but usable
convergence, and ``k >= 0.7`` an estimate of ``Z`` whose error bar means little.

References:
    Zhang and Stephens, "A new and efficient estimation method for the generalized
    Pareto distribution", Technometrics 51 (2009) 316-325.
    Vehtari, Simpson, Gelman, Yao and Gabry, "Pareto smoothed importance sampling",
    Journal of Machine Learning Research 25 (2024), arXiv:1507.02646.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

UNRELIABLE_K = 0.7
"""Pareto k above which an importance-sampling estimate is not to be trusted."""

# A GPD fitted to fewer exceedances than this tells nothing useful about the tail.
MIN_TAIL = 5

# Weakly informative prior used by PSIS (the R package loo): k is shrunk towards 0.5 as
# if 10 more exceedances with k = 0.5 had been seen. It matters only for short tails.
_PRIOR_K = 0.5
_PRIOR_WEIGHT = 10.0


def tail_length(n: int) -> int:
    """Return the number ``M = ceil(min(N / 5, 3 sqrt(N)))`` of largest weights to fit."""
    return math.ceil(min(0.2 * n, 3.0 * math.sqrt(n)))


def fit_generalized_pareto(exceedances: np.ndarray) -> tuple[float, float]:
    r"""Fit a GPD to positive exceedances by the Zhang-Stephens (2009) estimator.

    The GPD has density ``(1/sigma) (1 + k x / sigma)^(-1/k - 1)``. With
    ``theta = -k / sigma`` the likelihood maximized over ``k`` is the profile
    ``l(theta) = n (log(-theta / k(theta)) - k(theta) - 1)`` with
    ``k(theta) = mean(log(1 - theta x))``. The estimate of ``theta`` is the posterior
    mean over a grid of ``m = 20 + floor(sqrt(n))`` values, weighted by ``exp(l)``, as in
    the paper. Zhang and Stephens call the shape ``-k``.

    Args:
        exceedances: sorted ascending, shape ``(n,)`` with ``n >= MIN_TAIL``, the
            largest positive and the first quartile positive.

    Returns:
        ``(k, sigma)`` without the prior adjustment of :func:`pareto_k`.
    """
    x = np.asarray(exceedances, dtype=np.float64)
    n = x.size
    grid_size = 20 + int(math.sqrt(n))
    quartile = x[int(math.floor(n / 4 + 0.5)) - 1]
    j = np.arange(1, grid_size + 1, dtype=np.float64)
    # Every theta is below 1 / max(x), so that 1 - theta x > 0 for the whole sample.
    theta = 1.0 / x[-1] + (1.0 - np.sqrt(grid_size / (j - 0.5))) / (3.0 * quartile)

    k = np.mean(np.log1p(-theta[:, None] * x[None, :]), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_likelihood = n * (np.log(-theta / k) - k - 1.0)
    # theta = 0 exactly gives 0/0, so such a grid point gets no weight.
    log_likelihood = np.where(np.isfinite(log_likelihood), log_likelihood, -np.inf)
    weights = np.exp(log_likelihood - log_likelihood.max())
    weights /= weights.sum()

    theta_hat = float(np.sum(weights * theta))
    k_hat = float(np.mean(np.log1p(-theta_hat * x)))
    sigma_hat = -k_hat / theta_hat
    return k_hat, sigma_hat


def pareto_k(top_log_w: Tensor, n: int) -> float | None:
    """Estimate the Pareto shape ``k`` of the weight tail from the largest log weights.

    Args:
        top_log_w: at least the ``tail_length(n) + 1`` largest log weights of the
            ``n`` samples, in any order. The ``(M+1)``-th largest is the threshold,
            and the ``M`` above it are the tail.
        n: number of samples the weights came from.

    Returns:
        ``k`` shrunk towards 0.5 by the PSIS weakly informative prior, or ``None`` when
        ``n`` gives fewer than ``MIN_TAIL`` tail weights or the tail is degenerate (a
        quarter or more of the tail weights equal the threshold, as with constant weights).
    """
    tail = tail_length(n)
    if tail < MIN_TAIL:
        return None
    if top_log_w.numel() < tail + 1:
        raise ValueError(f"expected at least {tail + 1} largest log weights for N = {n}; got {top_log_w.numel()}")

    largest = torch.sort(top_log_w.detach().to(device="cpu", dtype=torch.float64), descending=True).values
    largest = largest[: tail + 1].numpy()
    if not np.isfinite(largest[0]):
        return None
    # Exceedances are scaled by the largest weight, which leaves the shape k unchanged.
    scaled = np.exp(largest - largest[0])
    exceedances = np.sort(scaled[:tail] - scaled[tail])
    if exceedances[int(math.floor(tail / 4 + 0.5)) - 1] <= 0.0:
        return None

    k_hat, _ = fit_generalized_pareto(exceedances)
    return (tail * k_hat + _PRIOR_WEIGHT * _PRIOR_K) / (tail + _PRIOR_WEIGHT)


class TopLogWeights:
    """Keep the ``capacity`` largest log weights seen over all chunks.

    The kept set does not depend on how the weights were split into chunks.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be a positive integer; got {capacity}")
        self.capacity = capacity
        self._values = torch.empty(0, dtype=torch.float64)

    def update(self, log_w: Tensor) -> None:
        """Merge a chunk of log weights of shape ``(N_chunk,)``."""
        merged = torch.cat([self._values, log_w.detach().to(device="cpu", dtype=torch.float64)])
        if merged.numel() > self.capacity:
            merged = torch.topk(merged, self.capacity, sorted=False).values
        self._values = merged

    @property
    def values(self) -> Tensor:
        """The kept log weights, largest first, shape ``(min(capacity, N),)``."""
        return torch.sort(self._values, descending=True).values
