r"""Self-normalized importance-sampling averages of observables, accumulated chunk by chunk.

For samples ``x_i ~ q`` with weights ``w_i = p~(x_i) / q(x_i)``, the average of ``f``
under the normalized target is estimated by

.. math::

    \hat\mu = \frac{\sum_i w_i f(x_i)}{\sum_i w_i}, \qquad
    \widehat{\mathrm{se}}(\hat\mu)^2 = \frac{\sum_i w_i^2 (f(x_i) - \hat\mu)^2}{(\sum_i w_i)^2},

the delta-method (linearization) error of a ratio estimator. Like the error of log Z,
it assumes a finite variance of the weights.

References:
    Owen, "Monte Carlo theory, methods and examples", 2013, section 9.2
    (self-normalized importance sampling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ttflow_cli.errors import NumericalError


@dataclass(frozen=True)
class ObservableEstimate:
    """Average of one observable with its standard errors.

    Attributes:
        mean: the estimate of the average under the target.
        err: delta-method standard error.
        err_bootstrap: bootstrap standard error, or ``None`` without a bootstrap.
    """

    mean: float
    err: float
    err_bootstrap: float | None = None

    def to_dict(self) -> dict[str, float | None]:
        """Return ``{mean, err, err_bootstrap}``."""
        return {"mean": self.mean, "err": self.err, "err_bootstrap": self.err_bootstrap}


def check_observable_values(names: list[str], values: Tensor, log_w: Tensor) -> Tensor:
    """Return ``values`` of shape ``(N, K)`` in float64, with rows of zero weight set to 0.

    A sample where the target density is zero (``log_w = -inf``) contributes nothing,
    and an observable may be undefined there.

    Raises:
        ValueError: if the shape does not match ``(len(log_w), len(names))``.
        NumericalError: if an observable is NaN or infinite at a sample of positive weight.
    """
    if values.shape != (log_w.numel(), len(names)):
        raise ValueError(f"expected observable values of shape {(log_w.numel(), len(names))}; got {tuple(values.shape)}")
    values = values.to(torch.float64)
    live = torch.isfinite(log_w)
    bad = (~torch.isfinite(values)) & live[:, None]
    if bool(bad.any()):
        counts = bad.sum(dim=0)
        column = int(torch.argmax(counts))
        raise NumericalError(
            f"observable '{names[column]}' is not finite at {int(counts[column])} of {log_w.numel()} samples "
            "of positive weight; check its definition in the target"
        )
    return torch.where(live[:, None], values, torch.zeros_like(values))


class SelfNormalizedAccumulator:
    """Accumulate self-normalized averages of ``K`` observables chunk by chunk.

    The state is a running maximum ``m`` of the log weights and float64 sums of
    ``v``, ``v g``, ``v^2``, ``v^2 g`` and ``v^2 g^2`` with ``v = exp(log_w - m)`` and
    ``g = f - f_0``, where ``f_0`` are the observables at the first sample of positive
    weight. The shift by ``f_0`` keeps the variance sum free of cancellation when
    the mean is large against the spread. Sums are rescaled when ``m`` grows, so the
    result depends on the chunk sizes only through rounding.
    """

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self.n = 0
        self._shift = -math.inf
        self._reference: Tensor | None = None
        columns = len(self.names)
        self._sum_w = 0.0
        self._sum_w2 = 0.0
        self._sum_wg = torch.zeros(columns, dtype=torch.float64)
        self._sum_w2g = torch.zeros(columns, dtype=torch.float64)
        self._sum_w2g2 = torch.zeros(columns, dtype=torch.float64)

    def update(self, log_w: Tensor, values: Tensor) -> None:
        """Add a chunk: log weights ``(N_chunk,)`` and observable values ``(N_chunk, K)``.

        Raises:
            NumericalError: if an observable is not finite at a sample of positive weight.
        """
        log_w = log_w.detach().to(device="cpu", dtype=torch.float64)
        values = check_observable_values(self.names, values.detach().cpu(), log_w)
        self.n += log_w.numel()
        live = torch.isfinite(log_w)
        if not bool(live.any()):
            return
        if self._reference is None:
            self._reference = values[int(torch.nonzero(live)[0, 0])].clone()

        shift = max(self._shift, float(log_w.max()))
        rescale = math.exp(self._shift - shift)
        v = torch.exp(log_w - shift)
        g = torch.where(live[:, None], values - self._reference, torch.zeros_like(values))
        v2 = v * v
        self._sum_w = self._sum_w * rescale + float(v.sum())
        self._sum_w2 = self._sum_w2 * rescale**2 + float(v2.sum())
        self._sum_wg = self._sum_wg * rescale + v @ g
        self._sum_w2g = self._sum_w2g * rescale**2 + v2 @ g
        self._sum_w2g2 = self._sum_w2g2 * rescale**2 + v2 @ (g * g)
        self._shift = shift

    def estimates(self) -> dict[str, ObservableEstimate]:
        """Return the self-normalized average and delta-method error of each observable.

        Raises:
            NumericalError: if no sample had a positive weight.
        """
        if self._reference is None:
            raise NumericalError(
                f"all {self.n} importance log weights are -inf, so no observable average can be estimated"
            )
        centered = self._sum_wg / self._sum_w
        # sum w^2 (g - mean_g)^2, expanded and clamped at 0 because rounding can make it negative.
        spread = self._sum_w2g2 - 2.0 * centered * self._sum_w2g + centered**2 * self._sum_w2
        errors = torch.sqrt(torch.clamp(spread, min=0.0)) / self._sum_w
        means = self._reference + centered
        return {
            name: ObservableEstimate(mean=float(means[k]), err=float(errors[k]))
            for k, name in enumerate(self.names)
        }
