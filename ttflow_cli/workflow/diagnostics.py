"""Checks of a fitted TT: validation against the target and the box check."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ttflow_cli.tt.box import Box
from ttflow_cli.tt.cross import Validation
from ttflow_cli.tt.defensive import DefensiveTT
from ttflow_cli.tt.squared import SquaredTT

# A face density above this fraction of the marginal's maximum means the box cuts
# off mass that the estimates then miss.
BOX_FACE_THRESHOLD = 1e-3


@dataclass(frozen=True)
class BoxCheck:
    """Coordinates whose TT marginal is still large at a face of the box."""

    coordinates: list[int]
    face_ratio: list[float]

    @property
    def ok(self) -> bool:
        return not self.coordinates

    def message(self, box: Box) -> str:
        shown = ", ".join(
            f"x{k} (ratio {r:.2g}, interval [{box.low[k]:g}, {box.high[k]:g}])"
            for k, r in zip(self.coordinates[:5], self.face_ratio[:5])
        )
        more = f" and {len(self.coordinates) - 5} more" if len(self.coordinates) > 5 else ""
        return (
            f"the box may cut off target mass: the TT marginal at a face exceeds "
            f"{BOX_FACE_THRESHOLD:g} of its maximum for {shown}{more}; widen 'box' in the spec"
        )


def check_box(tt: SquaredTT, threshold: float = BOX_FACE_THRESHOLD) -> BoxCheck:
    """Compare each TT marginal at the faces ``t = +-1`` with its maximum."""
    grid = torch.linspace(-1.0, 1.0, 401, dtype=tt.dtype)
    density = tt.marginals(grid)
    peak = density.max(dim=1).values.clamp_min(torch.finfo(tt.dtype).tiny)
    ratio = torch.maximum(density[:, 0], density[:, -1]) / peak
    flagged = torch.nonzero(ratio > threshold).flatten().tolist()
    return BoxCheck(coordinates=flagged, face_ratio=[float(ratio[k]) for k in flagged])


@dataclass
class SampleValidator:
    """ESS fraction and Hellinger distance of fresh exact samples of a candidate TT.

    ``log_prob_t`` is ``log p~`` in reference coordinates. The Hellinger estimate
    uses the normalized weights: ``H^2 = 1 - E_q[sqrt w] / sqrt(E_q[w])``.
    """

    log_prob_t: Callable[[Tensor], Tensor]
    defensive: float
    evaluations: int
    generator: torch.Generator
    device: torch.device

    def __call__(self, tt: SquaredTT) -> Validation:
        base = DefensiveTT(tt.to(device=self.device), self.defensive)
        t, log_q = base.sample(self.evaluations, self.generator, dtype=torch.float64, device=self.device)
        log_w = self.log_prob_t(t) - log_q
        log_w = torch.where(torch.isnan(log_w), torch.full_like(log_w, -math.inf), log_w)
        return Validation(*_ess_and_hellinger(log_w), evaluations=self.evaluations)


def _ess_and_hellinger(log_w: Tensor) -> tuple[float, float]:
    if not torch.isfinite(log_w).any():
        return 0.0, 1.0
    count = math.log(log_w.numel())
    log_sum = torch.logsumexp(log_w, 0)
    ess_fraction = float(torch.exp(2 * log_sum - torch.logsumexp(2 * log_w, 0) - count))
    log_mean_root = torch.logsumexp(0.5 * log_w, 0) - count
    affinity = float(torch.exp(log_mean_root - 0.5 * (log_sum - count)))
    return ess_fraction, math.sqrt(max(0.0, 1.0 - affinity))
