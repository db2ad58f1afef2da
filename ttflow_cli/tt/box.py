"""The box on which the TT lives, and its affine map to reference coordinates."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


class Box:
    """Intervals ``[a_k, b_k]`` mapped affinely to ``t in [-1, 1]^d``.

    ``x = a + (b - a) (t + 1) / 2``; the constant ``log |dx/dt|`` is
    :attr:`log_jacobian`, and a density in ``t`` becomes one in ``x`` by subtracting it.
    """

    def __init__(self, intervals: Sequence[tuple[float, float]]):
        low = torch.tensor([float(a) for a, _ in intervals], dtype=torch.float64)
        high = torch.tensor([float(b) for _, b in intervals], dtype=torch.float64)
        if not bool((high > low).all()):
            raise ValueError("every box interval needs low < high")
        self.low, self.high = low, high
        self.log_jacobian = float(torch.log((high - low) / 2).sum())

    @property
    def dim(self) -> int:
        return self.low.shape[0]

    def intervals(self) -> list[tuple[float, float]]:
        return [(float(a), float(b)) for a, b in zip(self.low, self.high)]

    def to_x(self, t: Tensor) -> Tensor:
        """Reference coordinates to target coordinates, ``(N, d) -> (N, d)``."""
        low = self.low.to(dtype=t.dtype, device=t.device)
        high = self.high.to(dtype=t.dtype, device=t.device)
        return low + (high - low) * (t + 1) / 2

    def to_t(self, x: Tensor) -> Tensor:
        """Target coordinates to reference coordinates, ``(N, d) -> (N, d)``."""
        low = self.low.to(dtype=x.dtype, device=x.device)
        high = self.high.to(dtype=x.dtype, device=x.device)
        return 2 * (x - low) / (high - low) - 1

    def __repr__(self) -> str:
        return f"Box(dim={self.dim}, log_jacobian={self.log_jacobian:.4g})"


def uniform_log_prob(dim: int) -> float:
    """Log-density of the uniform distribution on ``[-1, 1]^d``."""
    return -dim * math.log(2.0)
