"""The interface every target implements, built-in or plugin."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ttflow_cli.tt.symmetry import SignedPermutation

Observable = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Modes:
    """Named modes of a target, for checking that a sampler covers each of them.

    Attributes:
        names: one name per mode.
        membership: maps points ``(N, d)`` to memberships ``(N, K)`` in ``[0, 1]``
            whose rows sum to 1: a hard 0/1 label, or a posterior responsibility.
        exact: the exact average membership of each mode under the normalized
            target (its mass), or ``None`` where it is unknown.
    """

    names: list[str]
    membership: Callable[[Tensor], Tensor]
    exact: list[float] | None = None


class Target(ABC):
    """An unnormalized log-density on R^d.

    Subclasses set :attr:`dim` and implement :meth:`log_prob` and :meth:`default_box`.
    ``log_prob`` must be vectorized over the batch and compute in the dtype and on
    the device of its input.

    Attributes:
        dim: number of coordinates d.
        beta: inverse temperature when ``log_prob = -beta * energy``, else ``None``.
            The free energy ``F = -log Z / beta`` is reported only when it is set.
    """

    dim: int
    beta: float | None = None

    @abstractmethod
    def log_prob(self, x: Tensor) -> Tensor:
        """Unnormalized log-density ``log p~(x)``, shape ``(N, d) -> (N,)``."""

    @abstractmethod
    def default_box(self) -> list[tuple[float, float]]:
        """Intervals ``[(low_1, high_1), ..., (low_d, high_d)]`` holding nearly all the mass."""

    def exact_log_z(self) -> float | None:
        """Exact ``log Z = log of the integral of exp(log_prob)`` over R^d, where known."""
        return None

    def observables(self) -> dict[str, Observable]:
        """Named functions ``(N, d) -> (N,)`` whose averages the evaluation reports."""
        return {}

    def exact_observables(self) -> dict[str, float]:
        """Exact averages under the normalized target of those observables where they are known."""
        return {}

    def modes(self) -> Modes | None:
        """Return the target's named modes, or ``None`` when it declares none.

        ``ttflow evaluate`` reports, per mode, the sampler's own share of samples and
        the importance-weighted estimate of its mass, beside the exact mass.
        """
        return None

    def symmetries(self) -> list[SignedPermutation]:
        """Generators of a group of signed permutations that leave ``log_prob`` unchanged.

        ``tt.symmetrize: true`` averages the base over the group they generate, which
        puts equal mass on every mirror image of a mode the cross approximation found.
        Declare only exact symmetries: ``ttflow fit`` checks them on random points.
        """
        return []

    def energy(self, x: Tensor) -> Tensor:
        """Energy ``-log_prob / beta`` where ``beta`` is set, else ``-log_prob``."""
        scale = self.beta if self.beta is not None else 1.0
        return -self.log_prob(x) / scale

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` has shape ``(N, dim)`` and a floating dtype."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected input of shape (N, {self.dim}); got {tuple(x.shape)}")
        if not torch.is_floating_point(x):
            raise TypeError(f"expected a floating-point tensor; got {x.dtype}")
