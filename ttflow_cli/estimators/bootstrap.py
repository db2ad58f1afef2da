r"""Poisson bootstrap of log Z and of self-normalized averages, accumulated chunk by chunk.

Replicate ``b`` gives sample ``i`` the multiplicity ``c_bi ~ Poisson(1)`` in place of a
draw of ``N`` indices with replacement. The two agree as ``N`` grows, and the Poisson
form needs no pass over all samples at once: every replicate keeps only its sums

.. math::

    N_b = \sum_i c_{bi}, \quad S_b = \sum_i c_{bi} w_i, \quad
    \log \hat Z_b = \log(S_b / N_b), \quad
    \hat\mu_b = \frac{\sum_i c_{bi} w_i f(x_i)}{S_b},

and the bootstrap standard error is the standard deviation over replicates. The
caller supplies the multiplicities. Drawing them from generators seeded per sample
block (not per chunk) makes the result independent of the chunk sizes.

Unlike the delta method, the bootstrap makes no linearization. It still cannot see
weights larger than any in the sample, so it also understates the error when the
weights are heavy-tailed (see the Pareto k diagnostic).

References:
    Hanley and MacGibbon, "Creating non-parametric bootstrap samples using Poisson
    frequencies", Computer Methods and Programs in Biomedicine 83 (2006) 57-62.
    Efron and Tibshirani, "An introduction to the bootstrap", Chapman & Hall, 1993.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ttflow_cli.estimators.observables import check_observable_values


@dataclass(frozen=True)
class BootstrapErrors:
    """Bootstrap standard errors.

    Attributes:
        replicates: number of replicates used (those with a positive weight sum).
        log_z_err: standard deviation of ``log Z`` over replicates.
        observable_errs: standard deviation of each observable average, by name.
    """

    replicates: int
    log_z_err: float
    observable_errs: dict[str, float]


def poisson_multiplicities(replicates: int, count: int, generator: torch.Generator) -> Tensor:
    """Draw Poisson(1) multiplicities of shape ``(replicates, count)`` in float64 on the CPU."""
    rates = torch.ones(replicates, count, dtype=torch.float64)
    return torch.poisson(rates, generator=generator)


class PoissonBootstrap:
    """Accumulate per-replicate sums for a Poisson bootstrap of log Z and observables.

    Sums are kept behind a running maximum ``m`` of the log weights, as in
    :class:`ttflow_cli.estimators.importance.LogWeightAccumulator`, and observables
    are shifted by their value at the first sample of positive weight.
    """

    def __init__(self, replicates: int, names: list[str]) -> None:
        if replicates < 2:
            raise ValueError(f"a bootstrap needs at least 2 replicates; got {replicates}")
        self.replicates = replicates
        self.names = list(names)
        self._shift = -math.inf
        self._reference: Tensor | None = None
        self._counts = torch.zeros(replicates, dtype=torch.float64)
        self._sum_w = torch.zeros(replicates, dtype=torch.float64)
        self._sum_wg = torch.zeros(replicates, len(self.names), dtype=torch.float64)

    def update(self, log_w: Tensor, values: Tensor, multiplicities: Tensor) -> None:
        """Add a block: log weights ``(N,)``, observables ``(N, K)``, multiplicities ``(B, N)``."""
        if multiplicities.shape != (self.replicates, log_w.numel()):
            raise ValueError(
                f"expected multiplicities of shape {(self.replicates, log_w.numel())}; got {tuple(multiplicities.shape)}"
            )
        log_w = log_w.detach().to(device="cpu", dtype=torch.float64)
        values = check_observable_values(self.names, values.detach().cpu(), log_w)
        multiplicities = multiplicities.to(dtype=torch.float64)
        self._counts += multiplicities.sum(dim=1)
        live = torch.isfinite(log_w)
        if not bool(live.any()):
            return
        if self._reference is None:
            self._reference = values[int(torch.nonzero(live)[0, 0])].clone()

        shift = max(self._shift, float(log_w.max()))
        rescale = math.exp(self._shift - shift)
        weighted = multiplicities * torch.exp(log_w - shift)
        g = torch.where(live[:, None], values - self._reference, torch.zeros_like(values))
        self._sum_w = self._sum_w * rescale + weighted.sum(dim=1)
        self._sum_wg = self._sum_wg * rescale + weighted @ g
        self._shift = shift

    def errors(self) -> BootstrapErrors | None:
        """Return the bootstrap standard errors, or ``None`` with fewer than 2 usable replicates.

        A replicate is usable when it drew at least one sample of positive weight.
        """
        usable = self._sum_w > 0
        if int(usable.sum()) < 2:
            return None
        log_z = torch.log(self._sum_w[usable] / self._counts[usable])
        means = self._sum_wg[usable] / self._sum_w[usable][:, None]
        observable_errs = means.std(dim=0, correction=1) if self.names else torch.zeros(0)
        return BootstrapErrors(
            replicates=int(usable.sum()),
            log_z_err=float(log_z.std(correction=1)),
            observable_errs={name: float(observable_errs[k]) for k, name in enumerate(self.names)},
        )
