"""Banana density: pairs of coordinates bent along a parabola (a Rosenbrock-type target).

Each pair ``(x_1, x_2) = (x[2k], x[2k+1])`` contributes

.. math::

    \\log \\tilde p = -\\frac{x_1^2}{2 s^2} - \\frac{1}{2} \\big(x_2 - b (x_1^2 - s^2)\\big)^2 .

The shear ``y = x_2 - b (x_1^2 - s^2)`` has unit Jacobian and turns the pair into
independent ``N(0, s^2)`` and ``N(0, 1)``, so each pair contributes ``log(2 pi s)`` to
``log Z``.
"""

from __future__ import annotations

import math

from pydantic import Field, field_validator
from torch import Tensor

from ttflow_cli.targets.base import Observable, Target
from ttflow_cli.targets.params import Count, ParamsModel, Real

# The default box spans this many standard deviations of x_1 and of the sheared y;
# each drops a mass fraction of 5.7e-7 per pair.
_BOX_SIGMAS = 5.0


class BananaParams(ParamsModel):
    """Parameters of :class:`Banana`."""

    dim: Count = Field(ge=2, description="number of coordinates d, even")
    curvature: Real = Field(0.25, description="b: how strongly x_2 bends with x_1^2")
    scale: Real = Field(2.0, gt=0, description="s: standard deviation of x_1")

    @field_validator("dim")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be an even integer, because coordinates come in pairs")
        return value


class Banana(Target):
    """Product of ``d/2`` independent banana-shaped pairs (see the module docstring).

    Args:
        **params: the fields of :class:`BananaParams` (``dim``, ``curvature``, ``scale``).

    Raises:
        pydantic.ValidationError: for invalid parameters (a ``ValueError``).
    """

    def __init__(self, **params: object) -> None:
        self.params = BananaParams(**params)
        self.dim = self.params.dim
        self.beta = None

    def log_prob(self, x: Tensor) -> Tensor:
        """Compute the sum of the pair log-densities, shape ``(N, d) -> (N,)``."""
        self.check_input(x)
        s, b = self.params.scale, self.params.curvature
        x1, x2 = x[:, 0::2], x[:, 1::2]
        sheared = x2 - b * (x1**2 - s**2)
        return -(0.5 * (x1 / s) ** 2 + 0.5 * sheared**2).sum(dim=1)

    def exact_log_z(self) -> float:
        """Return ``(d/2) log(2 pi s)``."""
        return 0.5 * self.dim * math.log(2.0 * math.pi * self.params.scale)

    def default_box(self) -> list[tuple[float, float]]:
        """Return ``x_1`` within 5 s, and ``x_2`` over the parabola's range there plus 5."""
        s, b = self.params.scale, self.params.curvature
        reach = _BOX_SIGMAS * s
        bend = sorted([-b * s**2, b * (reach**2 - s**2)])
        x1_box = (-reach, reach)
        x2_box = (bend[0] - _BOX_SIGMAS, bend[1] + _BOX_SIGMAS)
        return [x1_box, x2_box] * (self.dim // 2)

    def observables(self) -> dict[str, Observable]:
        """Return the energy ``-log p~`` and the mean of the coordinates."""
        return {"energy": lambda x: -self.log_prob(x), "mean": lambda x: x.mean(dim=1)}

    def exact_observables(self) -> dict[str, float]:
        """Return ``E[energy] = d/2`` and ``E[mean] = 0``.

        In the sheared coordinates the energy is half the sum of ``d`` squared standard
        normals, and ``E[x_2] = b (E[x_1^2] - s^2) = 0``.
        """
        return {"energy": 0.5 * self.dim, "mean": 0.0}
