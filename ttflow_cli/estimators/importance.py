r"""Importance-sampling estimates from log weights: ESS, log Z and free energy.

The log weights are ``log_w = log p~(x) - log q(x)`` on N samples ``x ~ q``, with
``p~`` the unnormalized target and ``q`` the normalized model. Every sum runs in
log space behind a running maximum, so no weight is exponentiated unshifted.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ttflow_cli.errors import NumericalError


@dataclass(frozen=True)
class ImportanceEstimate:
    """Importance-sampling summary of N weighted samples.

    Attributes:
        n: number of samples N.
        ess: effective sample size ``(sum w)^2 / sum w^2``, between 1 and N.
        ess_fraction: ``ess / N``.
        log_z: ``log((1/N) sum w)``, the estimate of log Z.
        log_z_err: delta-method standard error of ``log_z``, ``sqrt((N/ESS - 1)/N)``.
        free_energy: ``-log_z / beta``, or ``None`` when no ``beta`` was given.
        free_energy_err: ``log_z_err / beta``, or ``None`` when no ``beta`` was given.
    """

    n: int
    ess: float
    ess_fraction: float
    log_z: float
    log_z_err: float
    free_energy: float | None
    free_energy_err: float | None

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-serializable dict."""
        return dataclasses.asdict(self)


def _check_log_weights(log_w: Tensor) -> None:
    """Raise unless ``log_w`` is a 1-D floating tensor with no NaN and no ``+inf``."""
    if not isinstance(log_w, Tensor):
        raise TypeError(f"log weights must be a torch.Tensor; got {type(log_w).__name__}")
    if log_w.ndim != 1:
        raise ValueError(f"log weights must have shape (N,); got {tuple(log_w.shape)}")
    if not torch.is_floating_point(log_w):
        raise TypeError(f"log weights must be a floating-point tensor; got {log_w.dtype}")

    # -inf is a sample where the target density is zero, which is a valid weight of 0.
    nan_count = int(torch.isnan(log_w).sum())
    pos_inf_count = int(torch.isposinf(log_w).sum())
    if nan_count or pos_inf_count:
        raise NumericalError(
            f"{nan_count + pos_inf_count} of {log_w.numel()} importance log weights "
            f"log p~(x) - log q(x) are not finite ({nan_count} NaN, {pos_inf_count} +inf); "
            "the target log_prob or the model log_q returned a non-finite value at those samples"
        )


class LogWeightAccumulator:
    r"""Accumulate log weights chunk by chunk and estimate ESS, log Z and free energy.

    The state is the running maximum ``m`` of the log weights and the shifted sums
    ``S1 = sum exp(log_w - m)`` and ``S2 = sum exp(2 (log_w - m))``, kept in float64.
    When a chunk raises the maximum, the old sums are rescaled by ``exp(m_old - m)``
    and ``exp(2 (m_old - m))``. The result therefore depends on the chunk sizes only
    through rounding.

    From these, with ``w = exp(log_w)``:

    .. math::

        \mathrm{ESS} = \frac{(\sum w)^2}{\sum w^2} = \frac{S_1^2}{S_2}, \qquad
        \log \hat Z = \log\frac{1}{N}\sum w = m + \log\frac{S_1}{N}.

    The standard error of ``log Z`` comes from the delta method:
    ``se(log Z) = se(Z_hat) / Z_hat``, the relative standard error of the mean
    weight. The sample relative variance of the weights is
    ``mean(w^2) / mean(w)^2 - 1 = N / ESS - 1``, so ``se(log Z) = sqrt((N/ESS - 1)/N)``.
    It assumes ``q`` has heavier tails than the target, so that ``E_q[w^2]`` is
    finite. When it is not, both ESS and the error are unreliable however large N is.

    References:
        Kong, "A note on importance sampling using standardized weights",
        Technical Report 348, Department of Statistics, University of Chicago, 1992.
        Owen, "Monte Carlo theory, methods and examples", 2013, chapter 9
        (importance sampling, effective sample size).
    """

    def __init__(self) -> None:
        self.n = 0
        self._shift = -math.inf
        self._sum_w = 0.0
        self._sum_w2 = 0.0

    def update(self, log_w: Tensor) -> None:
        """Add a chunk of log weights of shape ``(N_chunk,)``, on any device and in any float dtype.

        Raises:
            NumericalError: if any log weight is NaN or ``+inf``. ``-inf`` is allowed
                because it marks a sample where the target density is zero.
        """
        _check_log_weights(log_w)
        self.n += log_w.numel()
        if log_w.numel() == 0:
            return

        chunk_max = float(log_w.max())
        if chunk_max == -math.inf:
            return

        shift = max(self._shift, chunk_max)
        rescale = math.exp(self._shift - shift)
        shifted = log_w.to(torch.float64) - shift
        self._sum_w = self._sum_w * rescale + float(torch.exp(shifted).sum())
        self._sum_w2 = self._sum_w2 * rescale**2 + float(torch.exp(2.0 * shifted).sum())
        self._shift = shift

    def estimate(self, beta: float | None = None) -> ImportanceEstimate:
        """Estimate ESS, log Z and, when ``beta`` is given, the free energy ``-log Z / beta``.

        Args:
            beta: inverse temperature of the target (positive), or ``None``.

        Raises:
            ValueError: if no log weights were added, or ``beta`` is not positive and finite.
            NumericalError: if every log weight is ``-inf``, so no sample carries target mass.
        """
        if self.n == 0:
            raise ValueError("no log weights were added; call update() with at least one sample")
        if beta is not None and not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"beta must be positive and finite; got {beta}")
        if self._shift == -math.inf:
            raise NumericalError(
                f"all {self.n} importance log weights log p~(x) - log q(x) are -inf: "
                "the target density is zero at every sample, so log Z cannot be estimated"
            )

        # Cauchy-Schwarz bounds ESS by N, and rounding can exceed it by an ulp.
        ess = min(self._sum_w**2 / self._sum_w2, float(self.n))
        log_z = self._shift + math.log(self._sum_w / self.n)
        log_z_err = math.sqrt(max(self.n / ess - 1.0, 0.0) / self.n)
        free_energy = None if beta is None else -log_z / beta
        free_energy_err = None if beta is None else log_z_err / beta
        return ImportanceEstimate(
            n=self.n,
            ess=ess,
            ess_fraction=ess / self.n,
            log_z=log_z,
            log_z_err=log_z_err,
            free_energy=free_energy,
            free_energy_err=free_energy_err,
        )


def estimate_from_log_weights(log_w: Tensor, beta: float | None = None) -> ImportanceEstimate:
    """Estimate ESS, log Z and free energy from all log weights at once.

    Same as one :meth:`LogWeightAccumulator.update` followed by
    :meth:`LogWeightAccumulator.estimate`, which document the formulas and errors.

    Args:
        log_w: log weights ``log p~(x) - log q(x)``, shape ``(N,)``.
        beta: inverse temperature of the target (positive), or ``None``.
    """
    accumulator = LogWeightAccumulator()
    accumulator.update(log_w)
    return accumulator.estimate(beta)


def elbo(log_w: Tensor) -> float:
    """Return the evidence lower bound ``mean(log_w)``, a lower bound on log Z by Jensen.

    It is ``-inf`` when any sample has zero target density.

    Args:
        log_w: log weights ``log p~(x) - log q(x)``, shape ``(N,)`` with ``N >= 1``.

    Raises:
        ValueError: on an empty tensor.
        NumericalError: if any log weight is NaN or ``+inf``.
    """
    _check_log_weights(log_w)
    if log_w.numel() == 0:
        raise ValueError("the ELBO needs at least one log weight; got an empty tensor")
    return float(log_w.to(torch.float64).mean())


class ElboAccumulator:
    """Accumulate the ELBO ``mean(log_w)`` and its standard error chunk by chunk.

    The log weights are shifted by the first one before squaring, so that the variance
    keeps its digits when ``|log Z|`` is large against the spread of ``log_w``. One
    ``-inf`` log weight makes the ELBO ``-inf``, with no error.
    """

    def __init__(self) -> None:
        self.n = 0
        self._reference: float | None = None
        self._sum = 0.0
        self._sum_squares = 0.0
        self._zero_weights = 0

    def update(self, log_w: Tensor) -> None:
        """Add a chunk of log weights of shape ``(N_chunk,)``."""
        _check_log_weights(log_w)
        log_w = log_w.detach().to(dtype=torch.float64)
        self.n += log_w.numel()
        finite = log_w[torch.isfinite(log_w)]
        self._zero_weights += log_w.numel() - finite.numel()
        if finite.numel() == 0:
            return
        if self._reference is None:
            self._reference = float(finite[0])
        centered = finite - self._reference
        self._sum += float(centered.sum())
        self._sum_squares += float((centered * centered).sum())

    def estimate(self) -> tuple[float, float | None]:
        """Return ``(ELBO, standard error)``; the error is ``None`` when the ELBO is ``-inf`` or ``N < 2``.

        Raises:
            ValueError: if no log weights were added.
        """
        if self.n == 0:
            raise ValueError("the ELBO needs at least one log weight; call update() first")
        if self._zero_weights or self._reference is None:
            return -math.inf, None
        mean = self._sum / self.n
        if self.n < 2:
            return self._reference + mean, None
        variance = max(self._sum_squares / self.n - mean * mean, 0.0) * self.n / (self.n - 1)
        return self._reference + mean, math.sqrt(variance / self.n)
