"""Example target plugin: a scalar phi^4 field on an L x L periodic lattice.

A spec uses it with::

    target:
      plugin: phi4_lattice.py:Phi4Lattice   # relative to the spec file
      sites: 4
      kappa: 0.25
      lam: 0.5

The lattice action, in the hopping-parameter form, is

    S(phi) = sum_x [ -2 kappa sum_{mu=1,2} phi_x phi_{x+mu} + phi_x^2 + lam (phi_x^2 - 1)^2 ]

with periodic neighbours ``x + mu`` and ``log p~ = -S``. The hopping term favours equal
neighbours, so larger ``kappa`` orders the field; larger ``lam`` pins ``|phi|`` near 1.
A plugin is any file that defines a subclass of ``Target`` like this one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ttflow_cli.targets.base import Target
from ttflow_cli.tt.symmetry import SignedPermutation


class Phi4Lattice(Target):
    """Lattice phi^4 field with ``d = L^2`` coordinates in row-major order.

    Args:
        sites: side ``L`` of the lattice, a positive integer.
        kappa: hopping parameter.
        lam: quartic coupling, non-negative.

    Raises:
        TypeError: if ``sites`` is not an integer.
        ValueError: if ``sites < 1`` or ``lam < 0``.
    """

    def __init__(self, sites: int, kappa: float, lam: float) -> None:
        if isinstance(sites, bool) or not isinstance(sites, int):
            raise TypeError(f"sites must be an integer; got {sites!r}")
        if sites < 1:
            raise ValueError(f"sites must be a positive integer; got {sites}")
        if lam < 0:
            raise ValueError(f"lam must be non-negative so that the action is bounded below; got {lam}")
        self.side = sites
        self.dim = sites * sites
        self.kappa = float(kappa)
        self.lam = float(lam)

    def action(self, x: Tensor) -> Tensor:
        """Compute the action ``S`` of each row, shape ``(N, L^2) -> (N,)``."""
        self.check_input(x)
        phi = x.reshape(-1, self.side, self.side)
        neighbours = torch.roll(phi, shifts=-1, dims=1) + torch.roll(phi, shifts=-1, dims=2)
        hopping = -2.0 * self.kappa * phi * neighbours
        local = phi**2 + self.lam * (phi**2 - 1.0) ** 2
        return (hopping + local).sum(dim=(1, 2))

    def log_prob(self, x: Tensor) -> Tensor:
        """Compute ``-S(phi)``, shape ``(N, L^2) -> (N,)``."""
        return -self.action(x)

    def default_box(self) -> list[tuple[float, float]]:
        """Return ``[-3, 3]`` per site."""
        return [(-3.0, 3.0)] * self.dim

    def observables(self) -> dict[str, Callable[[Tensor], Tensor]]:
        """Return the action per site and the magnetization ``m = mean phi`` and ``|m|``."""
        return {
            "action_per_site": lambda x: self.action(x) / self.dim,
            "magnetization": lambda x: x.mean(dim=1),
            "abs_magnetization": lambda x: x.mean(dim=1).abs(),
        }

    def symmetries(self) -> list[SignedPermutation]:
        """Return the global flip ``phi -> -phi``, which leaves the action unchanged.

        With ``tt.symmetrize: true`` the base then gives the two ordered phases equal mass.
        """
        return [SignedPermutation(tuple(range(self.dim)), (-1,) * self.dim)]
