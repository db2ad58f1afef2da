"""The TT base distribution with a defensive uniform component."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ttflow_cli.tt.box import uniform_log_prob
from ttflow_cli.tt.squared import SquaredTT


class DefensiveTT:
    """Mixture ``q_0 = (1 - eps) TT^2 + eps U([-1, 1]^d)`` in reference coordinates.

    The uniform component bounds the importance weight ``p / q_0`` by
    ``p / (eps 2^-d)`` wherever the TT underestimates the target. Sampling picks
    the component of each point first, then draws from it exactly; ``log_prob`` is
    the mixture density at exactly the returned points.

    References:
        Hesterberg, "Weighted average importance sampling and defensive mixture
        distributions", Technometrics 37 (1995).
    """

    def __init__(self, tt: SquaredTT, defensive: float = 0.0):
        if not 0.0 <= defensive < 1.0:
            raise ValueError(f"the defensive weight must be in [0, 1); got {defensive}")
        self.tt = tt
        self.defensive = defensive

    @property
    def dim(self) -> int:
        return self.tt.dim

    def log_prob(self, t: Tensor) -> Tensor:
        """``log q_0(t)``, shape ``(N, d) -> (N,)``."""
        return self._mix(self.tt.log_prob(t), t)

    def sample(self, count: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
               ) -> tuple[Tensor, Tensor]:
        """Draw ``count`` points; returns ``(t, log_q0)``."""
        t, log_tt = self.tt.sample(count, generator, dtype=dtype, device=device)
        if self.defensive == 0.0:
            return t, log_tt
        pick = torch.rand(count, generator=generator, dtype=dtype, device=device) < self.defensive
        picked = int(pick.sum())
        if picked:
            uniform = 2 * torch.rand(picked, self.dim, generator=generator, dtype=dtype, device=device) - 1
            t[pick] = uniform
            log_tt[pick] = self.tt.log_prob(uniform)
        return t, self._mix(log_tt, t)

    def _mix(self, log_tt: Tensor, t: Tensor) -> Tensor:
        if self.defensive == 0.0:
            return log_tt
        log_uniform = torch.full_like(log_tt, uniform_log_prob(self.dim) + math.log(self.defensive))
        inside = (t.abs() <= 1).all(dim=1)
        log_uniform = torch.where(inside, log_uniform, torch.full_like(log_tt, -math.inf))
        return torch.logaddexp(log_tt + math.log1p(-self.defensive), log_uniform)
