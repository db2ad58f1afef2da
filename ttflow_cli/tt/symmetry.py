"""Symmetrized bases: average a base distribution over a target's symmetry group.

A target whose density is invariant under a finite group ``G`` of signed
permutations of its coordinates, ``p(g x) = p(x)``, has the same mass in every
image of a mode. A cross approximation that found one mode of a mirror pair can
be completed exactly by averaging it over the group:

.. math::

    q_G(t) = \\frac{1}{|G|} \\sum_{g \\in G} q_0(g\\, t).

Every ``g`` permutes and flips coordinates, so it maps ``[-1, 1]^d`` onto itself
with unit Jacobian and ``q_G`` is normalized. Sampling draws ``t ~ q_0`` and a
uniform group element ``g`` and returns ``g^{-1} t``. Then ``log q_G`` is evaluated
at the returned point, which costs ``|G|`` evaluations of ``log q_0``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from ttflow_cli.flows.model import BaseDistribution

MAX_GROUP_ORDER = 64
"""Largest group a base is averaged over; each element costs one ``log q_0`` per point."""


@dataclass(frozen=True)
class SignedPermutation:
    """The map ``(g x)_i = sign_i * x_{permutation_i}``.

    Attributes:
        permutation: ``d`` integers, a permutation of ``0..d-1``.
        sign: ``d`` entries, each ``+1`` or ``-1``.
    """

    permutation: tuple[int, ...]
    sign: tuple[int, ...]

    def __post_init__(self) -> None:
        if sorted(self.permutation) != list(range(len(self.permutation))):
            raise ValueError(f"invalid permutation of 0..{len(self.permutation) - 1}: {self.permutation}")
        if len(self.sign) != len(self.permutation) or any(s not in (1, -1) for s in self.sign):
            raise ValueError(f"invalid signs {self.sign}: expected {len(self.permutation)} entries of +1 or -1")

    @classmethod
    def from_arrays(cls, permutation: Sequence[int] | np.ndarray,
                    sign: Sequence[float] | np.ndarray) -> SignedPermutation:
        return cls(tuple(int(i) for i in permutation), tuple(int(round(float(s))) for s in sign))

    @classmethod
    def identity(cls, dim: int) -> SignedPermutation:
        return cls(tuple(range(dim)), (1,) * dim)

    @property
    def dim(self) -> int:
        return len(self.permutation)

    def apply(self, x: Tensor) -> Tensor:
        """``g x`` for rows ``x`` of shape ``(N, d)``, in the dtype and device of ``x``."""
        index = torch.tensor(self.permutation, device=x.device)
        sign = torch.tensor(self.sign, dtype=x.dtype, device=x.device)
        return x[:, index] * sign

    def compose(self, other: SignedPermutation) -> SignedPermutation:
        """``self after other``: ``(self.compose(other)) x = self(other(x))``."""
        permutation = tuple(other.permutation[p] for p in self.permutation)
        sign = tuple(s * other.sign[p] for s, p in zip(self.sign, self.permutation))
        return SignedPermutation(permutation, sign)

    def inverse(self) -> SignedPermutation:
        permutation = [0] * self.dim
        sign = [1] * self.dim
        for i, (p, s) in enumerate(zip(self.permutation, self.sign)):
            permutation[p] = i
            sign[p] = s
        return SignedPermutation(tuple(permutation), tuple(sign))


def generate_group(generators: Sequence[SignedPermutation], dim: int) -> list[SignedPermutation]:
    """Return every product of ``generators``, the identity first.

    Raises:
        ValueError: a generator has the wrong dimension, or the group has more than
            :data:`MAX_GROUP_ORDER` elements.
    """
    for generator in generators:
        if generator.dim != dim:
            raise ValueError(f"a symmetry acts on {generator.dim} coordinates; the target has {dim}")
    group = [SignedPermutation.identity(dim)]
    seen = set(group)
    frontier = list(group)
    while frontier:
        element = frontier.pop()
        for generator in generators:
            product = generator.compose(element)
            if product not in seen:
                if len(group) == MAX_GROUP_ORDER:
                    raise ValueError(f"the symmetry group has more than {MAX_GROUP_ORDER} elements; "
                                     "declare fewer generators")
                seen.add(product)
                group.append(product)
                frontier.append(product)
    return group


def box_is_invariant(group: Sequence[SignedPermutation], low: Tensor, high: Tensor) -> bool:
    """Check whether every element maps the box ``[low, high]`` onto itself.

    Then each element acts on box coordinates ``t`` in ``[-1, 1]^d`` as the same signed
    permutation it is on ``x``, which is what :class:`SymmetrizedBase` relies on.
    """
    for element in group:
        image_low = torch.where(torch.tensor(element.sign) > 0, low[list(element.permutation)],
                                -high[list(element.permutation)])
        image_high = torch.where(torch.tensor(element.sign) > 0, high[list(element.permutation)],
                                 -low[list(element.permutation)])
        scale = torch.maximum(high.abs(), low.abs()).clamp_min(1.0)
        if not (torch.allclose(image_low / scale, low / scale, atol=1e-12)
                and torch.allclose(image_high / scale, high / scale, atol=1e-12)):
            return False
    return True


class SymmetrizedBase:
    """The average of ``base`` over a group of signed permutations of ``[-1, 1]^d``.

    Args:
        base: any base distribution on box coordinates.
        group: every element of the group (closed under composition), for example
            from :func:`generate_group`.
    """

    def __init__(self, base: BaseDistribution, group: Sequence[SignedPermutation]):
        if not group:
            raise ValueError("the symmetry group is empty; pass at least the identity")
        if any(element.dim != base.dim for element in group):
            raise ValueError(f"every group element must act on the base's {base.dim} coordinates")
        self.base = base
        self.group = list(group)

    @property
    def dim(self) -> int:
        return self.base.dim

    def log_prob(self, t: Tensor) -> Tensor:
        """``log q_G(t)``, shape ``(N, d) -> (N,)``."""
        images = torch.stack([self.base.log_prob(element.apply(t)) for element in self.group])
        return torch.logsumexp(images, dim=0) - math.log(len(self.group))

    def sample(self, count: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
               ) -> tuple[Tensor, Tensor]:
        """Draw ``count`` points; returns ``(t, log_q_G(t))``."""
        # NOTE: the base's log q_0 of t is dropped and computed again among the |G| images
        # below; reusing it would save one evaluation per point.
        t, _ = self.base.sample(count, generator, dtype=dtype, device=device)
        choice = torch.randint(len(self.group), (count,), generator=generator, device=device)
        moved = t.clone()
        for index, element in enumerate(self.group):
            rows = choice == index
            if index and bool(rows.any()):
                moved[rows] = element.inverse().apply(t[rows])
        return moved, self.log_prob(moved)
