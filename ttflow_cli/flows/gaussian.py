"""Gaussian base distribution in reference coordinates: the baseline for the TT base."""

from __future__ import annotations

import math

import torch
from torch import Tensor

BOX_STANDARD_DEVIATIONS = 3.0
"""The standard Gaussian base puts the box faces at this many standard deviations."""

# Relative ridge added to a fitted covariance, so that a sample covariance of a
# nearly degenerate set of points still has a Cholesky factor.
_COVARIANCE_JITTER = 1e-6


class GaussianBase:
    """Normal distribution ``N(mean, L L^T)`` on reference coordinates ``t``.

    It has the interface of :class:`~ttflow_cli.tt.defensive.DefensiveTT` (``dim``,
    ``sample``, ``log_prob``), so a flow can sit on either base. Unlike the TT base
    it has mass outside the box ``[-1, 1]^d``.

    Args:
        mean: mean, shape ``(d,)``.
        scale_tril: lower-triangular Cholesky factor ``L`` of the covariance, shape
            ``(d, d)``, with a positive diagonal.

    Raises:
        ValueError: on mismatched shapes or a non-positive diagonal of ``scale_tril``.
    """

    def __init__(self, mean: Tensor, scale_tril: Tensor):
        mean = torch.as_tensor(mean, dtype=torch.float64)
        scale_tril = torch.as_tensor(scale_tril, dtype=torch.float64)
        dim = mean.shape[0] if mean.ndim == 1 else -1
        if mean.ndim != 1 or scale_tril.shape != (dim, dim):
            raise ValueError(
                f"expected a mean of shape (d,) and scale_tril of shape (d, d); got "
                f"{tuple(mean.shape)} and {tuple(scale_tril.shape)}"
            )
        if not bool((scale_tril.diagonal() > 0).all()):
            raise ValueError("scale_tril must have a positive diagonal; refit or rescale the Gaussian base")
        self.mean = mean
        self.scale_tril = scale_tril.tril()

    @classmethod
    def standard(cls, dim: int) -> GaussianBase:
        """Independent normal coordinates centred in the box, the faces at +-3 standard deviations."""
        scale = torch.eye(dim, dtype=torch.float64) / BOX_STANDARD_DEVIATIONS
        return cls(torch.zeros(dim, dtype=torch.float64), scale)

    @classmethod
    def fit(cls, samples: Tensor) -> GaussianBase:
        """Match the mean and covariance of ``samples`` of shape ``(N, d)``, N >= 2.

        Raises:
            ValueError: on fewer than 2 samples or non-finite values.
        """
        samples = samples.detach().to(device="cpu", dtype=torch.float64)
        if samples.ndim != 2 or samples.shape[0] < 2 or not bool(torch.isfinite(samples).all()):
            raise ValueError(
                f"fitting a Gaussian needs finite samples of shape (N, d) with N >= 2; "
                f"got shape {tuple(samples.shape)}"
            )
        mean = samples.mean(dim=0)
        covariance = torch.cov(samples.T).reshape(samples.shape[1], samples.shape[1])
        ridge = _COVARIANCE_JITTER * max(float(covariance.diagonal().mean()), 1e-12)
        covariance = covariance + ridge * torch.eye(samples.shape[1], dtype=torch.float64)
        return cls(mean, torch.linalg.cholesky(covariance))

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def _parameters(self, like: Tensor) -> tuple[Tensor, Tensor]:
        return (self.mean.to(dtype=like.dtype, device=like.device),
                self.scale_tril.to(dtype=like.dtype, device=like.device))

    def _log_normalizer(self) -> float:
        return float(self.scale_tril.diagonal().log().sum()) + 0.5 * self.dim * math.log(2.0 * math.pi)

    def sample(self, count: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
               ) -> tuple[Tensor, Tensor]:
        """Draw ``count`` points; returns ``(t, log_q0)`` of shapes ``(N, d)`` and ``(N,)``."""
        noise = torch.randn(count, self.dim, generator=generator, dtype=dtype, device=device)
        mean, scale_tril = self._parameters(noise)
        t = mean + noise @ scale_tril.T
        return t, -0.5 * noise.square().sum(dim=1) - self._log_normalizer()

    def log_prob(self, t: Tensor) -> Tensor:
        """``log q_0(t)``, shape ``(N, d) -> (N,)``."""
        mean, scale_tril = self._parameters(t)
        noise = torch.linalg.solve_triangular(scale_tril, (t - mean).T, upper=False).T
        return -0.5 * noise.square().sum(dim=1) - self._log_normalizer()
