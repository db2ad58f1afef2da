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

# A face density above this fraction of the marginal's maximum makes a coordinate
# a candidate for a box that cuts off mass the estimates then miss.
BOX_FACE_THRESHOLD = 1e-3
# Candidates are confirmed by the target itself: the importance-weighted share of
# samples in the outer BOX_BAND of the interval must exceed BOX_BAND_MASS. TT
# approximation error alone puts spurious mass at the faces of a box that holds the
# target comfortably, and such samples carry almost no weight.
BOX_BAND = 0.02
BOX_BAND_MASS = 1e-3
BOX_CHECK_SAMPLES = 10_000


@dataclass(frozen=True)
class BoxCheck:
    """Coordinates whose TT marginal is still large at a face of the box."""

    coordinates: list[int]
    face_ratio: list[float]
    band_mass: list[float]

    @property
    def ok(self) -> bool:
        return not self.coordinates

    def message(self, box: Box) -> str:
        shown = ", ".join(
            f"x{k} (interval [{box.low[k]:g}, {box.high[k]:g}], {m:.2%} of the mass in its outer "
            f"{BOX_BAND:.0%})"
            for k, m in zip(self.coordinates[:5], self.band_mass[:5])
        )
        more = f" and {len(self.coordinates) - 5} more" if len(self.coordinates) > 5 else ""
        return f"the box may cut off target mass: {shown}{more}; widen 'box' in the spec"


def check_box(tt: SquaredTT, log_prob_t: Callable[[Tensor], Tensor] | None = None,
              generator: torch.Generator | None = None, threshold: float = BOX_FACE_THRESHOLD) -> BoxCheck:
    """Flag coordinates whose TT marginal is large at a face of the box.

    Each TT marginal at the faces ``t = +-1`` is compared with its maximum. When
    ``log_prob_t`` (``log p~`` in reference coordinates) is given, a flagged
    coordinate is kept only if the importance-weighted target mass in the outer
    ``BOX_BAND`` of its interval exceeds ``BOX_BAND_MASS``.
    """
    grid = torch.linspace(-1.0, 1.0, 401, dtype=tt.dtype)
    density = tt.marginals(grid)
    peak = density.max(dim=1).values.clamp_min(torch.finfo(tt.dtype).tiny)
    ratio = torch.maximum(density[:, 0], density[:, -1]) / peak
    flagged = torch.nonzero(ratio > threshold).flatten()
    band_mass = torch.full_like(ratio, math.nan)
    if log_prob_t is not None and flagged.numel():
        t, log_q = tt.sample(BOX_CHECK_SAMPLES, generator)
        log_w = log_prob_t(t) - log_q
        log_w = torch.where(torch.isnan(log_w), torch.full_like(log_w, -math.inf), log_w)
        weights = torch.softmax(log_w, 0) if torch.isfinite(log_w).any() else torch.zeros_like(log_w)
        band_mass = (weights.unsqueeze(1) * (t.abs() > 1 - BOX_BAND)).sum(0)
        flagged = flagged[band_mass[flagged] > BOX_BAND_MASS]
    coordinates = flagged.tolist()
    return BoxCheck(coordinates=coordinates, face_ratio=[float(ratio[k]) for k in coordinates],
                    band_mass=[float(band_mass[k]) for k in coordinates])


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
