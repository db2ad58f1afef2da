"""Ginzburg-Landau fields: a chain of sites (1D) and a square lattice (2D).

Both use the project's convention for a field ``u`` on the interior sites of a grid of
spacing ``h`` with fixed (Dirichlet) or periodic boundaries:

.. math::

    V(u) = \\sum_{\\text{bonds } (i, j)} \\frac{\\delta}{2} \\Big(\\frac{u_j - u_i}{h}\\Big)^2
         + \\sum_{\\text{sites } i} \\frac{1}{4 \\delta} (1 - u_i^2)^2,
    \\qquad \\tilde p(u) = e^{-\\beta V(u)}.

The onsite term has minima at ``u = +-1``. At low temperature (large ``beta``) the
field settles near one of them, so the density has well separated modes.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator
from torch import Tensor

from ttflow_cli.targets import transfer
from ttflow_cli.targets.base import Modes, Observable, Target
from ttflow_cli.targets.params import Count, ParamsModel, Real
from ttflow_cli.tt.symmetry import SignedPermutation

Boundary = Literal["dirichlet", "periodic"]

# Default box [-2.5, 2.5] per site. With delta = 0.04 and beta >= 0.1, the onsite factor
# at |u| = 2.5 is below e^-17. NOTE: hotter targets need a wider 'box' in the spec.
_BOX_HALF_WIDTH = 2.5
_BOX_MARGIN = 0.5


def _reject_with_periodic(value: float | None, info: ValidationInfo) -> float | None:
    if value is not None and info.data.get("boundary") == "periodic":
        raise ValueError(
            f"Dirichlet values are not used with boundary 'periodic'; "
            f"remove '{info.field_name}' or set boundary: dirichlet"
        )
    return value


class GinzburgLandau1DParams(ParamsModel):
    """Parameters of :class:`GinzburgLandau1D`."""

    sites: Count = Field(ge=1, description="number of interior sites N")
    beta: Real = Field(gt=0, description="inverse temperature")
    delta: Real = Field(0.04, gt=0, description="interface width; weights gradient vs onsite terms")
    boundary: Boundary = "dirichlet"
    left: Real | None = Field(None, description="u_0 for Dirichlet boundaries; default 0")
    right: Real | None = Field(None, description="u_{N+1} for Dirichlet boundaries; default 0")

    _no_values_with_periodic = field_validator("left", "right")(_reject_with_periodic)

    @model_validator(mode="after")
    def _fill_dirichlet_values(self) -> GinzburgLandau1DParams:
        if self.boundary == "dirichlet":
            self.left = 0.0 if self.left is None else self.left
            self.right = 0.0 if self.right is None else self.right
        return self


class GinzburgLandau2DParams(ParamsModel):
    """Parameters of :class:`GinzburgLandau2D`."""

    sites: Count = Field(ge=1, description="side L of the L x L lattice")
    beta: Real = Field(gt=0, description="inverse temperature")
    delta: Real = Field(0.04, gt=0)
    boundary: Boundary = "dirichlet"
    top: Real | None = Field(None, description="value above row 0 (Dirichlet); default 0")
    bottom: Real | None = Field(None, description="value below row L-1 (Dirichlet); default 0")
    left: Real | None = Field(None, description="value left of column 0 (Dirichlet); default 0")
    right: Real | None = Field(None, description="value right of column L-1 (Dirichlet); default 0")

    _no_values_with_periodic = field_validator("top", "bottom", "left", "right")(_reject_with_periodic)

    @model_validator(mode="after")
    def _fill_dirichlet_values(self) -> GinzburgLandau2DParams:
        if self.boundary == "dirichlet":
            for side in ("top", "bottom", "left", "right"):
                if getattr(self, side) is None:
                    setattr(self, side, 0.0)
        return self


def _onsite(u: Tensor, delta: float) -> Tensor:
    return (1.0 - u**2) ** 2 / (4.0 * delta)


def _box_around(values: list[float], sites: int) -> list[tuple[float, float]]:
    """``[-2.5, 2.5]`` per site, widened to include every boundary value plus a margin."""
    low = min([-_BOX_HALF_WIDTH] + [v - _BOX_MARGIN for v in values])
    high = max([_BOX_HALF_WIDTH] + [v + _BOX_MARGIN for v in values])
    return [(low, high)] * sites


def _field_modes(target: Target) -> Modes:
    """Split fields by the sign of their mean: the two ordered phases.

    A declared symmetry flips the sign of the mean field, so each phase then has
    exact mass 1/2; otherwise the masses are unknown.
    """

    def membership(x: Tensor) -> Tensor:
        positive = (x.mean(dim=1) > 0).to(x.dtype)
        return torch.stack([positive, 1.0 - positive], dim=1)

    exact = [0.5, 0.5] if target.symmetries() else None
    return Modes(["mean field > 0", "mean field < 0"], membership, exact)


def _field_observables(energy_per_site: Observable) -> dict[str, Observable]:
    return {
        "energy_per_site": energy_per_site,
        "magnetization": lambda x: x.mean(dim=1),
        "abs_magnetization": lambda x: x.mean(dim=1).abs(),
        "magnetization_squared": lambda x: x.mean(dim=1) ** 2,
    }


class GinzburgLandau1D(Target):
    """Ginzburg-Landau chain of ``N`` interior sites ``u_1..u_N``.

    .. math::

        V(u) = \\sum_{i=0}^{N} \\frac{\\delta}{2} \\Big(\\frac{u_{i+1} - u_i}{h}\\Big)^2
             + \\sum_{i=1}^{N} \\frac{1}{4 \\delta} (1 - u_i^2)^2,
        \\qquad \\log \\tilde p(u) = -\\beta V(u)

    Dirichlet: ``h = 1/(N+1)``, ``u_0 = left``, ``u_{N+1} = right``, so the chain has
    ``N + 1`` bonds. Periodic: the ``N`` sites sit on a ring of unit length,
    ``h = 1/N`` and ``u_{N+1} = u_1``, so the ring has ``N`` bonds.

    Args:
        **params: the fields of :class:`GinzburgLandau1DParams` (``sites``, ``beta``,
            ``delta``, ``boundary``, ``left``, ``right``).

    Raises:
        pydantic.ValidationError: for invalid parameters (a ``ValueError``).
    """

    def __init__(self, **params: object) -> None:
        self.params = GinzburgLandau1DParams(**params)
        self.dim = self.params.sites
        self.beta = self.params.beta
        periodic = self.params.boundary == "periodic"
        self.spacing = 1.0 / self.dim if periodic else 1.0 / (self.dim + 1)
        self.bond_coefficient = self.params.delta / (2.0 * self.spacing**2)

    def potential(self, x: Tensor) -> Tensor:
        """Compute the energy ``V(u)`` of each row, shape ``(N, d) -> (N,)``."""
        self.check_input(x)
        if self.params.boundary == "periodic":
            steps = torch.roll(x, shifts=-1, dims=1) - x
        else:
            left = torch.full_like(x[:, :1], self.params.left)
            right = torch.full_like(x[:, :1], self.params.right)
            steps = torch.diff(torch.cat([left, x, right], dim=1), dim=1)
        gradient = self.bond_coefficient * (steps**2).sum(dim=1)
        return gradient + _onsite(x, self.params.delta).sum(dim=1)

    def log_prob(self, x: Tensor) -> Tensor:
        """Compute ``-beta V(u)``, shape ``(N, d) -> (N,)``."""
        return -self.beta * self.potential(x)

    def default_box(self) -> list[tuple[float, float]]:
        """Return ``[-2.5, 2.5]`` per site, widened to cover Dirichlet values outside ``[-2, 2]``."""
        return _box_around(self._boundary_values(), self.dim)

    def observables(self) -> dict[str, Observable]:
        """Return the energy per site ``V/N`` and the magnetization ``m = mean_i u_i``, ``|m|``, ``m^2``."""
        return _field_observables(lambda x: self.potential(x) / self.dim)

    def modes(self) -> Modes:
        """Return the two phases, mean field above and below 0."""
        return _field_modes(self)

    def symmetries(self) -> list[SignedPermutation]:
        """Return the sign flip that exchanges the two ordered phases, where the boundary allows one.

        ``u -> -u`` on a ring or with both ends at 0; ``u_i -> -u_{N+1-i}`` (flip and
        reverse) when ``left = -right``.
        """
        n, p = self.dim, self.params
        flip = (-1,) * n
        if p.boundary == "periodic" or p.left == p.right == 0.0:
            return [SignedPermutation(tuple(range(n)), flip)]
        if p.left == -p.right:
            return [SignedPermutation(tuple(reversed(range(n))), flip)]
        return []

    def _boundary_values(self) -> list[float]:
        if self.params.boundary == "periodic":
            return []
        return [self.params.left, self.params.right]

    def _log_site(self, u: np.ndarray) -> np.ndarray:
        return -self.beta * (1.0 - u**2) ** 2 / (4.0 * self.params.delta)

    def _log_bond(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return -self.beta * self.bond_coefficient * (v - u) ** 2

    def quadrature_grid(self, nodes: int = 600) -> tuple[np.ndarray, np.ndarray]:
        """Build the Gauss-Legendre grid on ``[-L, L]`` for the transfer operator.

        ``L = max(3, L_0) + max |boundary value|``, where ``L_0`` is where the onsite
        factor ``exp(-beta (L_0^2 - 1)^2 / (4 delta))`` falls to ``e^{-40}``. Bond factors
        are at most 1, so the mass beyond ``L`` is negligible at every temperature.
        """
        onsite_edge = math.sqrt(1.0 + math.sqrt(160.0 * self.params.delta / self.beta))
        pinned = max([abs(v) for v in self._boundary_values()], default=0.0)
        half_width = max(3.0, onsite_edge) + pinned
        return transfer.gauss_legendre(nodes, -half_width, half_width)

    def exact_log_z(self, nodes: int = 600) -> float:
        """Compute ``log Z`` by the transfer operator on a grid of ``nodes`` points (float64).

        For the chains of ``targets/gl1d.yaml`` and ``targets/gl1d_beta1.yaml`` the default
        grid agrees with a 3000-node grid to about 1e-11. Raise ``nodes`` when
        ``beta * delta / h^2`` is so large that the bond kernel is narrower than the node spacing.
        """
        grid = self.quadrature_grid(nodes)
        if self.params.boundary == "periodic":
            return transfer.ring_log_z(self._log_site, self._log_bond, self.dim, grid)
        return transfer.open_chain_log_z(
            self._log_site, self._log_bond, self.dim, grid, self.params.left, self.params.right
        )

    def exact_site_moments(self, nodes: int = 600) -> tuple[np.ndarray, np.ndarray]:
        """Compute exact ``E[u_i]`` and ``E[u_i^2]`` per site, each of shape ``(N,)``."""
        grid = self.quadrature_grid(nodes)
        if self.params.boundary == "periodic":
            mean, second = transfer.ring_site_moments(self._log_site, self._log_bond, self.dim, grid)
            return np.full(self.dim, mean), np.full(self.dim, second)
        return transfer.open_chain_site_moments(
            self._log_site, self._log_bond, self.dim, grid, self.params.left, self.params.right
        )

    def exact_observables(self, nodes: int = 600) -> dict[str, float]:
        """Compute the exact averages of the observables by the transfer operator (float64).

        ``energy_per_site`` is ``E[V] / N`` and ``magnetization_squared`` is
        ``E[(sum_i u_i)^2] / N^2``, from the moments of additive observables along the
        chain. ``abs_magnetization`` is left out: the distribution of ``sum_i u_i`` has
        no cheap transfer-operator form, so no exact value is known.
        """
        grid = self.quadrature_grid(nodes)
        delta = self.params.delta

        def field(u: np.ndarray) -> np.ndarray:
            return u

        def onsite(u: np.ndarray) -> np.ndarray:
            return (1.0 - u**2) ** 2 / (4.0 * delta)

        def bond(u: np.ndarray, v: np.ndarray) -> np.ndarray:
            return self.bond_coefficient * (v - u) ** 2

        def no_bond(u: np.ndarray, v: np.ndarray) -> np.ndarray:
            return np.zeros(np.broadcast_shapes(np.shape(u), np.shape(v)))

        if self.params.boundary == "periodic":
            spectrum = transfer.ring_spectrum(self._log_site, self._log_bond, self.dim, grid)
            energy = transfer.ring_additive_mean(spectrum, onsite, bond)
            total = transfer.ring_additive_mean(spectrum, field, no_bond)
            total_squared = transfer.ring_site_sum_second_moment(spectrum, field)
        else:
            ends = (self.params.left, self.params.right)
            energy, _ = transfer.open_chain_additive_moments(
                self._log_site, self._log_bond, self.dim, grid, *ends, onsite, bond
            )
            total, total_squared = transfer.open_chain_additive_moments(
                self._log_site, self._log_bond, self.dim, grid, *ends, field, no_bond
            )
        return {
            "energy_per_site": energy / self.dim,
            "magnetization": total / self.dim,
            "magnetization_squared": total_squared / self.dim**2,
        }


class GinzburgLandau2D(Target):
    """Ginzburg-Landau field on an ``L x L`` lattice, coordinates in row-major order.

    ``x[:, i * L + j]`` is row ``i`` (row 0 at the top), column ``j``. The energy is the
    1D one with the gradient term summed over vertical and horizontal bonds:

    .. math::

        V(u) = \\frac{\\delta}{2 h^2} \\Big(\\sum_{\\text{vertical}} (u_{i+1,j} - u_{i,j})^2
             + \\sum_{\\text{horizontal}} (u_{i,j+1} - u_{i,j})^2\\Big)
             + \\sum_{i,j} \\frac{1}{4 \\delta} (1 - u_{i,j}^2)^2

    Dirichlet: ``h = 1/(L+1)``. Rows ``-1`` and ``L`` hold ``top`` and ``bottom``, columns
    ``-1`` and ``L`` hold ``left`` and ``right``, and the bonds to them count, so each
    direction has ``L (L + 1)`` bonds. Periodic: ``h = 1/L`` and ``L^2`` bonds per
    direction on the torus. The corners of the boundary frame touch no bond.

    Args:
        **params: the fields of :class:`GinzburgLandau2DParams`.

    Raises:
        pydantic.ValidationError: for invalid parameters (a ``ValueError``).
    """

    def __init__(self, **params: object) -> None:
        self.params = GinzburgLandau2DParams(**params)
        self.side = self.params.sites
        self.dim = self.side**2
        self.beta = self.params.beta
        periodic = self.params.boundary == "periodic"
        self.spacing = 1.0 / self.side if periodic else 1.0 / (self.side + 1)
        self.bond_coefficient = self.params.delta / (2.0 * self.spacing**2)

    def _bond_steps(self, grid: Tensor) -> tuple[Tensor, Tensor]:
        """Vertical and horizontal differences across every bond of ``(N, L, L)`` fields."""
        if self.params.boundary == "periodic":
            vertical = torch.roll(grid, shifts=-1, dims=1) - grid
            horizontal = torch.roll(grid, shifts=-1, dims=2) - grid
            return vertical, horizontal
        p = self.params
        top = torch.full_like(grid[:, :1, :], p.top)
        bottom = torch.full_like(grid[:, :1, :], p.bottom)
        left = torch.full_like(grid[:, :, :1], p.left)
        right = torch.full_like(grid[:, :, :1], p.right)
        vertical = torch.diff(torch.cat([top, grid, bottom], dim=1), dim=1)
        horizontal = torch.diff(torch.cat([left, grid, right], dim=2), dim=2)
        return vertical, horizontal

    def potential(self, x: Tensor) -> Tensor:
        """Compute the energy ``V(u)`` of each row, shape ``(N, L^2) -> (N,)``."""
        self.check_input(x)
        vertical, horizontal = self._bond_steps(x.reshape(-1, self.side, self.side))
        gradient = (vertical**2).sum(dim=(1, 2)) + (horizontal**2).sum(dim=(1, 2))
        return self.bond_coefficient * gradient + _onsite(x, self.params.delta).sum(dim=1)

    def log_prob(self, x: Tensor) -> Tensor:
        """Compute ``-beta V(u)``, shape ``(N, L^2) -> (N,)``."""
        return -self.beta * self.potential(x)

    def default_box(self) -> list[tuple[float, float]]:
        """Return ``[-2.5, 2.5]`` per site, widened to cover Dirichlet values outside ``[-2, 2]``."""
        p = self.params
        values = [] if p.boundary == "periodic" else [p.top, p.bottom, p.left, p.right]
        return _box_around(values, self.dim)

    def observables(self) -> dict[str, Observable]:
        """Return the energy per site ``V/L^2`` and the magnetization ``m = mean u``, ``|m|``, ``m^2``."""
        return _field_observables(lambda x: self.potential(x) / self.dim)

    def modes(self) -> Modes:
        """Return the two phases, mean field above and below 0."""
        return _field_modes(self)

    def symmetries(self) -> list[SignedPermutation]:
        """Return the sign flip that exchanges the two ordered phases, where the boundary allows one.

        ``u -> -u`` on a torus or with every boundary value 0. ``u_{ij} -> -u_{ji}``
        (transpose and flip) when ``top = -left`` and ``bottom = -right``: the
        transpose swaps the top with the left boundary and the bottom with the right.
        """
        side, p = self.side, self.params
        flip = (-1,) * self.dim
        if p.boundary == "periodic" or p.top == p.bottom == p.left == p.right == 0.0:
            return [SignedPermutation(tuple(range(self.dim)), flip)]
        if p.top == -p.left and p.bottom == -p.right:
            transpose = tuple(j * side + i for i in range(side) for j in range(side))
            return [SignedPermutation(transpose, flip)]
        return []
