"""Many-well density: independent pairs of a quartic double well and a Gaussian.

Each pair ``(x_1, x_2) = (x[2k], x[2k+1])`` has the energy

.. math::

    E(x_1, x_2) = a x_1 + b x_1^2 + c x_1^4 + \\tfrac{1}{2} x_2^2,

and ``log p~(x) = -sum_k E(pair_k)``. With the defaults ``a = -0.5, b = -6, c = 1`` the
double well has two modes near ``x_1 = +-1.7``, so ``d`` coordinates give ``2^(d/2)``
modes, and the tilt ``a`` makes the right well deeper.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field, field_validator
from torch import Tensor

from ttflow_cli.targets.base import Observable, Target
from ttflow_cli.targets.params import Count, ParamsModel, Real
from ttflow_cli.targets.transfer import gauss_legendre

# Quadrature of the 1D double well: panels of Gauss-Legendre nodes over the range where
# the energy is within _CUTOFF of its minimum. 400 panels of 24 nodes resolve wells of
# width 0.3 on a range of 50 to about 1e-14 in relative terms.
_CUTOFF = 700.0
_PANELS = 400
_PANEL_NODES = 24

# Default box for x_1: [-3, 3], widened when the well reaches further. The edge is where
# the energy exceeds its minimum by _BOX_BARRIER, so the mass outside is about e^-30.
_BOX_BARRIER = 30.0
_X1_HALF_WIDTH = 3.0
_X2_HALF_WIDTH = 5.0


class ManyWellParams(ParamsModel):
    """Parameters of :class:`ManyWell`."""

    dim: Count = Field(ge=2, description="number of coordinates d, even")
    a: Real = Field(-0.5, description="linear coefficient (tilt) of the double well")
    b: Real = Field(-6.0, description="quadratic coefficient; negative for two wells")
    c: Real = Field(1.0, gt=0, description="quartic coefficient; positive so the density is normalizable")

    @field_validator("dim")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be an even integer, because coordinates come in pairs")
        return value


class ManyWell(Target):
    """Product of ``d/2`` independent double-well/Gaussian pairs (see the module docstring).

    Args:
        **params: the fields of :class:`ManyWellParams` (``dim``, ``a``, ``b``, ``c``).

    Raises:
        pydantic.ValidationError: for invalid parameters (a ``ValueError``).
    """

    def __init__(self, **params: object) -> None:
        self.params = ManyWellParams(**params)
        self.dim = self.params.dim
        self.beta = None

    def _well(self, x1: Tensor | np.ndarray) -> Tensor | np.ndarray:
        p = self.params
        return p.a * x1 + p.b * x1**2 + p.c * x1**4

    def log_prob(self, x: Tensor) -> Tensor:
        """Compute ``-sum_k E(x[2k], x[2k+1])``, shape ``(N, d) -> (N,)``."""
        self.check_input(x)
        x1, x2 = x[:, 0::2], x[:, 1::2]
        return -(self._well(x1) + 0.5 * x2**2).sum(dim=1)

    def _well_range(self, barrier: float) -> tuple[float, float, float]:
        """Return the double well's energy minimum and the interval where it stays below min + barrier."""
        p = self.params
        # Outside |x| <= r, c x^4 - |b| x^2 - |a| |x| >= barrier; the well's minimum is <= 0.
        reach = math.sqrt((abs(p.a) + abs(p.b) + barrier) / p.c)
        r = max(1.0, reach)
        x = np.linspace(-r, r, 20001)
        energy = self._well(x)
        minimum = float(energy.min())
        inside = x[energy - minimum < barrier]
        step = x[1] - x[0]
        return minimum, float(inside.min() - step), float(inside.max() + step)

    def _well_quadrature(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Return composite Gauss-Legendre nodes ``x``, masses ``w exp(-(E(x) - E_min))`` and ``E_min``."""
        minimum, low, high = self._well_range(_CUTOFF)
        edges = np.linspace(low, high, _PANELS + 1)
        nodes, weights = gauss_legendre(_PANEL_NODES, -1.0, 1.0)
        half = 0.5 * np.diff(edges)[:, None]
        x = (0.5 * (edges[:-1] + edges[1:]))[:, None] + half * nodes
        return x, half * weights * np.exp(-(self._well(x) - minimum)), minimum

    def log_z_well(self) -> float:
        """Compute the log of the 1D integral of ``exp(-(a x + b x^2 + c x^4))`` by composite Gauss-Legendre."""
        _, mass, minimum = self._well_quadrature()
        return float(np.log(np.sum(mass)) - minimum)

    def exact_log_z(self) -> float:
        """Compute ``(d/2) (log of the double-well integral + log(2 pi) / 2)``."""
        return 0.5 * self.dim * (self.log_z_well() + 0.5 * math.log(2.0 * math.pi))

    def default_box(self) -> list[tuple[float, float]]:
        """Return ``x_1`` in ``[-3, 3]`` (wider for wells that reach further), ``x_2`` in ``[-5, 5]``.

        The ``x_2`` interval drops a mass fraction of 5.7e-7 per pair.
        """
        _, low, high = self._well_range(_BOX_BARRIER)
        x1_box = (min(-_X1_HALF_WIDTH, float(math.floor(low))), max(_X1_HALF_WIDTH, float(math.ceil(high))))
        x2_box = (-_X2_HALF_WIDTH, _X2_HALF_WIDTH)
        return [x1_box, x2_box] * (self.dim // 2)

    def observables(self) -> dict[str, Observable]:
        """Return the energy ``-log p~`` and the mean of the coordinates."""
        return {"energy": lambda x: -self.log_prob(x), "mean": lambda x: x.mean(dim=1)}

    def exact_observables(self) -> dict[str, float]:
        """Compute the exact averages of ``energy`` and ``mean`` by 1D quadrature of the double well.

        The pairs are independent and ``x_2`` is standard normal, so
        ``E[energy] = (d/2) (E[a x_1 + b x_1^2 + c x_1^4] + 1/2)`` and ``E[mean] = E[x_1] / 2``.
        """
        x, mass, _ = self._well_quadrature()
        probability = mass / np.sum(mass)
        well_energy = float(np.sum(probability * self._well(x)))
        well_mean = float(np.sum(probability * x))
        return {"energy": 0.5 * self.dim * (well_energy + 0.5), "mean": 0.5 * well_mean}
