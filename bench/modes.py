"""Mode coverage of a sampler, in numbers: which share of its samples lands in each mode.

A sampler that collapses onto some modes of a multimodal target shows it here even
when its ESS on the modes it found looks fine. Every summary compares the sample
shares with the exact shares of the target.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ttflow_cli.targets.base import Target

# A mode counts as covered when it receives at least this fraction of its exact share.
COVERED_FRACTION = 0.25
# Exact samples of a Gaussian mixture used for its exact nearest-mean shares.
EXACT_MIXTURE_SAMPLES = 200_000

ModeSummary = Callable[[Target, Tensor], dict]


def field_sign(target: Target, x: Tensor) -> dict:
    """Count the shares of samples whose mean field is positive and negative.

    Both shipped fields have exact shares 1/2 by symmetry: the chain under
    ``u -> -u`` and the lattice under a quarter turn combined with ``u -> -u``.
    """
    positive = float((x.mean(dim=1) > 0).double().mean())
    return {
        "shares": [positive, 1.0 - positive],
        "exact": [0.5, 0.5],
        "text": f"mean field > 0: {positive:.3f}, < 0: {1.0 - positive:.3f} (exact 0.5 each)",
    }


def _nearest_mean(means: np.ndarray, x: Tensor) -> np.ndarray:
    centres = torch.as_tensor(means, dtype=x.dtype, device=x.device)
    return torch.cdist(x, centres).argmin(dim=1).cpu().numpy()


def _exact_mixture_shares(target: Target) -> np.ndarray:
    """Compute nearest-mean shares of exact mixture samples (components overlap, so not the weights)."""
    rng = np.random.default_rng(0)
    weights = target.weights / target.weights.sum()
    components = rng.choice(len(weights), size=EXACT_MIXTURE_SAMPLES, p=weights)
    scales = np.broadcast_to(target.scales, weights.shape)[components]
    points = target.means[components] + scales[:, None] * rng.standard_normal((components.size, target.dim))
    labels = _nearest_mean(target.means, torch.as_tensor(points))
    return np.bincount(labels, minlength=len(weights)) / labels.size


def nearest_mean(target: Target, x: Tensor) -> dict:
    """Count the shares of samples per component of a Gaussian mixture, by the nearest mean."""
    count = target.means.shape[0]
    labels = _nearest_mean(target.means, x)
    shares = np.bincount(labels, minlength=count) / labels.size
    exact = _exact_mixture_shares(target)
    covered = int((shares >= COVERED_FRACTION * exact).sum())
    worst = int(np.argmin(shares / exact))
    return {
        "shares": shares.tolist(),
        "exact": exact.tolist(),
        "text": (f"{covered}/{count} modes covered; lowest share/exact {shares[worst] / exact[worst]:.2f} "
                 f"({shares[worst]:.4f} vs {exact[worst]:.4f})"),
    }


def _right_well_probability(target: Target) -> float:
    """Compute the exact probability that one many-well coordinate x1 is positive, by quadrature."""
    p = target.params
    grid = np.linspace(-6.0, 6.0, 200_001)
    log_density = -(p.a * grid + p.b * grid**2 + p.c * grid**4)
    density = np.exp(log_density - log_density.max())
    return float(density[grid > 0].sum() / density.sum())


def right_well(target: Target, x: Tensor) -> dict:
    """Count the share of many-well pairs whose first coordinate is in the right (deeper) well."""
    share = float((x[:, 0::2] > 0).double().mean())
    exact = _right_well_probability(target)
    return {
        "shares": [share, 1.0 - share],
        "exact": [exact, 1.0 - exact],
        "text": f"x1 in right well: {share:.3f} (exact {exact:.3f})",
    }


def no_modes(target: Target, x: Tensor) -> dict:
    """Return an empty summary for unimodal targets."""
    return {"shares": [], "exact": [], "text": "-"}


def covers_every_mode(summary: dict) -> bool:
    """Return whether every mode of ``summary`` has at least ``COVERED_FRACTION`` of its exact share."""
    return all(share >= COVERED_FRACTION * exact for share, exact in zip(summary["shares"], summary["exact"]))

