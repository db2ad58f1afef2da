"""Mixture of isotropic Gaussians with unnormalized weights.

.. math::

    \\tilde p(x) = \\sum_{k=1}^{K} w_k \\, \\mathcal{N}(x; \\mu_k, s_k^2 I),
    \\qquad Z = \\sum_k w_k

The weights are not renormalized, so ``log Z = log sum_k w_k`` is known exactly and a
sampler's ``log Z`` estimate can be checked against it.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator
from torch import Tensor

from ttflow_cli.targets.base import Modes, Observable, Target
from ttflow_cli.targets.params import ParamsModel, Real

PositiveReal = Annotated[Real, Field(gt=0)]

# The default box extends this many times the largest standard deviation past the
# extreme means. One Gaussian has a mass of about 2e-9 beyond 6 sigma along one axis.
_BOX_SIGMAS = 6.0


class GaussianMixtureParams(ParamsModel):
    """Parameters of :class:`GaussianMixture`.

    ``scales`` may be one number for every component; validation repeats it ``K`` times.
    ``weights`` default to ``1/K`` each, which makes ``Z = 1``.
    """

    means: list[list[Real]] = Field(min_length=1, description="K mean vectors of equal length d")
    scales: list[PositiveReal] = Field(description="standard deviation: one for all, or one per component")
    weights: list[PositiveReal] | None = Field(None, description="K positive weights, not renormalized")

    @field_validator("means")
    @classmethod
    def _equal_lengths(cls, means: list[list[float]]) -> list[list[float]]:
        lengths = sorted({len(mean) for mean in means})
        if lengths[0] == 0:
            raise ValueError("every mean must have at least one coordinate")
        if len(lengths) > 1:
            raise ValueError(f"every mean must have the same length d; got lengths {lengths}")
        return means

    @field_validator("scales", mode="before")
    @classmethod
    def _wrap_scalar(cls, value: object) -> object:
        return value if isinstance(value, list) else [value]

    @field_validator("scales", "weights")
    @classmethod
    def _one_per_component(cls, values: list[float] | None, info: ValidationInfo) -> list[float] | None:
        components = len(info.data.get("means", []))
        if values is None or not components:
            return values
        if info.field_name == "scales" and len(values) == 1:
            return values * components
        if len(values) != components:
            raise ValueError(f"must have one entry per mean ({components}); got {len(values)} entries")
        return values

    @model_validator(mode="after")
    def _equal_weights(self) -> GaussianMixtureParams:
        if self.weights is None:
            self.weights = [1.0 / len(self.means)] * len(self.means)
        return self


class GaussianMixture(Target):
    """Mixture of ``K`` isotropic Gaussians in ``d`` dimensions (see the module docstring).

    Args:
        **params: the fields of :class:`GaussianMixtureParams` (``means``, ``scales``,
            ``weights``).

    Raises:
        pydantic.ValidationError: for invalid parameters (a ``ValueError``).
    """

    def __init__(self, **params: object) -> None:
        self.params = GaussianMixtureParams(**params)
        self.means = np.asarray(self.params.means, dtype=np.float64)
        self.scales = np.asarray(self.params.scales, dtype=np.float64)
        self.weights = np.asarray(self.params.weights, dtype=np.float64)
        self.dim = self.means.shape[1]
        self.beta = None
        # Log of w_k times the Gaussian normalizing constant, per component.
        self._log_coefficients = (
            np.log(self.weights) - self.dim * np.log(self.scales) - 0.5 * self.dim * math.log(2.0 * math.pi)
        )

    def log_prob(self, x: Tensor) -> Tensor:
        """Compute ``log sum_k w_k N(x; mu_k, s_k^2 I)`` by logsumexp, shape ``(N, d) -> (N,)``."""
        return torch.logsumexp(self._log_components(x), dim=1)

    def modes(self) -> Modes:
        """Return one mode per component, with membership the posterior responsibility.

        The responsibility ``r_k(x) = w_k N_k(x) / sum_j w_j N_j(x)`` averages to
        ``w_k / sum_j w_j`` under the target, exactly, even where components overlap.
        """

        def membership(x: Tensor) -> Tensor:
            return torch.softmax(self._log_components(x), dim=1)

        exact = (self.weights / self.weights.sum()).tolist()
        return Modes([f"component {k}" for k in range(len(exact))], membership, exact)

    def _log_components(self, x: Tensor) -> Tensor:
        """Compute ``log w_k N(x; mu_k, s_k^2 I)`` per component, shape ``(N, d) -> (N, K)``."""
        self.check_input(x)
        options = {"dtype": x.dtype, "device": x.device}
        means = torch.as_tensor(self.means, **options)
        scales = torch.as_tensor(self.scales, **options)
        log_coefficients = torch.as_tensor(self._log_coefficients, **options)

        squared_distance = ((x[:, None, :] - means[None, :, :]) ** 2).sum(dim=2)
        return log_coefficients - 0.5 * squared_distance / scales**2

    def exact_log_z(self) -> float:
        """Return ``log sum_k w_k``."""
        return float(np.log(self.weights.sum()))

    def default_box(self) -> list[tuple[float, float]]:
        """Return per coordinate the range of the means, widened by 6 times the largest scale."""
        margin = _BOX_SIGMAS * float(self.scales.max())
        low = self.means.min(axis=0) - margin
        high = self.means.max(axis=0) + margin
        return [(float(a), float(b)) for a, b in zip(low, high)]

    def observables(self) -> dict[str, Observable]:
        """Return the energy ``-log p~`` and the mean of the coordinates."""
        return {"energy": lambda x: -self.log_prob(x), "mean": lambda x: x.mean(dim=1)}

    def exact_observables(self) -> dict[str, float]:
        """Return the exact average of ``mean``: the weighted average over components of ``mean(mu_k)``.

        ``energy`` is left out: its average is the entropy of the mixture plus ``log Z``,
        which has no closed form when components overlap.
        """
        probabilities = self.weights / self.weights.sum()
        return {"mean": float(probabilities @ self.means.mean(axis=1))}
