"""Rational-quadratic spline coupling layers with identity tails (neural spline flows).

Each transformed coordinate goes through a monotonic rational-quadratic spline on
``[-B, B]`` with ``K`` bins whose widths, heights and interior knot derivatives come
from the conditioner. Outside ``[-B, B]`` the map is the identity, and the knot
derivatives at ``+-B`` are fixed to 1, so the map and its derivative are continuous.
Flows act in reference coordinates, where the TT box is ``[-1, 1]^d``, so ``B`` a
little above 1 covers the whole box.

References:
    Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", NeurIPS 2019,
    arXiv:1906.04032.
    Gregory, Delbourgo, "Piecewise rational quadratic interpolation to monotonic
    data", IMA Journal of Numerical Analysis 2 (1982).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ttflow_cli.flows.coupling import (
    CouplingStack,
    MaskedCoupling,
    coupling_masks,
    require_int,
    require_positive_float,
)

# Lower bounds on every bin width, bin height (as fractions of 2B) and knot derivative.
# They keep the spline strictly monotonic and its inverse well conditioned.
MIN_BIN_SIZE = 1e-3
MIN_DERIVATIVE = 1e-3
# softplus(raw + offset) + MIN_DERIVATIVE equals 1 at raw = 0, so a zero-initialized
# conditioner gives unit derivatives, equal bins, and therefore the identity map.
_DERIVATIVE_OFFSET = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


def _knots(raw_sizes: Tensor, bound: float) -> tuple[Tensor, Tensor]:
    """Bin sizes ``(..., K)`` and knot positions ``(..., K + 1)`` on ``[-bound, bound]``."""
    bins = raw_sizes.shape[-1]
    fractions = MIN_BIN_SIZE + (1.0 - MIN_BIN_SIZE * bins) * torch.softmax(raw_sizes, dim=-1)
    knots = F.pad(torch.cumsum(fractions, dim=-1), (1, 0), value=0.0)
    knots = 2.0 * bound * knots - bound
    # Pin the end knots exactly, because the cumulative sum drifts by rounding.
    knots[..., 0] = -bound
    knots[..., -1] = bound
    return knots[..., 1:] - knots[..., :-1], knots


def rational_quadratic_spline(
    inputs: Tensor,
    raw_widths: Tensor,
    raw_heights: Tensor,
    raw_derivatives: Tensor,
    *,
    bound: float,
    inverse: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""Apply monotonic rational-quadratic splines elementwise, with identity tails.

    In bin ``k`` with ``xi = (x - x_k) / w_k``, slope ``s_k = h_k / w_k`` and knot
    derivatives ``d_k``, ``d_{k+1}``:

    .. math::

        y = y_k + \frac{h_k (s_k \xi^2 + d_k \xi (1 - \xi))}
                       {s_k + (d_{k+1} + d_k - 2 s_k) \xi (1 - \xi)}.

    The inverse solves the quadratic in ``xi`` with the cancellation-free root
    ``xi = 2c / (-b - sqrt(b^2 - 4ac))``.

    Args:
        inputs: values, shape ``(N, m)``.
        raw_widths: unnormalized bin widths, shape ``(N, m, K)``.
        raw_heights: unnormalized bin heights, shape ``(N, m, K)``.
        raw_derivatives: unnormalized derivatives at the ``K - 1`` interior knots,
            shape ``(N, m, K - 1)``.
        bound: half-width ``B`` of the spline interval ``[-B, B]``.
        inverse: apply the inverse spline.

    Returns:
        Outputs of shape ``(N, m)`` and the elementwise log absolute derivative of the
        direction applied, shape ``(N, m)``; both are finite for every finite input.
    """
    inside = (inputs >= -bound) & (inputs <= bound)
    # Points outside are clamped before the spline so that the unused branch of
    # torch.where stays finite, because a NaN there would leak into the gradients.
    clamped = inputs.clamp(-bound, bound)

    widths, knots_x = _knots(raw_widths, bound)
    heights, knots_y = _knots(raw_heights, bound)
    derivatives = MIN_DERIVATIVE + F.softplus(raw_derivatives + _DERIVATIVE_OFFSET)
    derivatives = F.pad(derivatives, (1, 1), value=1.0)

    search_knots = knots_y if inverse else knots_x
    bin_index = (clamped[..., None] >= search_knots[..., 1:-1]).sum(dim=-1, keepdim=True)

    def pick(table: Tensor, offset: int = 0) -> Tensor:
        return table.gather(-1, bin_index + offset).squeeze(-1)

    x_k, y_k, width, height = pick(knots_x), pick(knots_y), pick(widths), pick(heights)
    d_k, d_k1 = pick(derivatives), pick(derivatives, 1)
    slope = height / width
    curvature = d_k1 + d_k - 2.0 * slope

    if inverse:
        shifted = clamped - y_k
        a = height * (slope - d_k) + shifted * curvature
        b = height * d_k - shifted * curvature
        c = -slope * shifted
        discriminant = (b.square() - 4.0 * a * c).clamp_min(0.0)
        xi = (2.0 * c / (-b - discriminant.sqrt())).clamp(0.0, 1.0)
        outputs = x_k + xi * width
    else:
        xi = ((clamped - x_k) / width).clamp(0.0, 1.0)

    product = xi * (1.0 - xi)
    denominator = slope + curvature * product
    if not inverse:
        outputs = y_k + height * (slope * xi.square() + d_k * product) / denominator

    derivative_numerator = slope.square() * (
        d_k1 * xi.square() + 2.0 * slope * product + d_k * (1.0 - xi).square()
    )
    log_derivative = derivative_numerator.log() - 2.0 * denominator.log()
    if inverse:
        log_derivative = -log_derivative

    outputs = torch.where(inside, outputs, inputs)
    log_derivative = torch.where(inside, log_derivative, torch.zeros_like(log_derivative))
    return outputs, log_derivative


class SplineCoupling(MaskedCoupling):
    """Coupling layer that maps each transformed coordinate through its own conditioned
    rational-quadratic spline (see :func:`rational_quadratic_spline`).

    The conditioner emits ``3K - 1`` numbers per transformed coordinate: ``K``
    widths, ``K`` heights and ``K - 1`` interior derivatives. Its zero-initialized
    output layer makes the layer the identity up to rounding.

    Args:
        mask: boolean tensor of shape ``(d,)`` where ``True`` marks the conditioning
            coordinates.
        hidden: width of the conditioner's hidden layers.
        depth: number of hidden layers of the conditioner.
        bins: number of spline bins K.
        tail_bound: half-width B of the spline interval; the layer is the identity
            outside ``[-B, B]``.
    """

    def __init__(self, mask: Tensor, *, hidden: int, depth: int, bins: int, tail_bound: float) -> None:
        super().__init__(mask, parameters_per_coordinate=3 * bins - 1, hidden=hidden, depth=depth)
        self.bins = bins
        self.tail_bound = tail_bound

    def transform(self, values: Tensor, parameters: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        """Apply the splines (or their inverses) to ``values`` (N, m); returns ``(N,)`` ladj."""
        parameters = parameters.view(values.shape[0], values.shape[1], 3 * self.bins - 1)
        raw_widths, raw_heights, raw_derivatives = parameters.split(
            [self.bins, self.bins, self.bins - 1], dim=-1
        )
        outputs, log_derivative = rational_quadratic_spline(
            values, raw_widths, raw_heights, raw_derivatives, bound=self.tail_bound, inverse=inverse
        )
        return outputs, log_derivative.sum(dim=-1)


class SplineFlow(CouplingStack):
    """Stack of rational-quadratic spline couplings with alternating masks.

    Args:
        dim: number of coordinates d, at least 2.
        layers: number of coupling layers, at least 2 so that every coordinate is
            transformed.
        hidden: width of each conditioner's hidden layers, at least 1.
        depth: number of hidden layers of each conditioner, at least 0.
        bins: number of spline bins K, at least 2.
        tail_bound: half-width B of the spline interval in reference coordinates
            (positive). Points outside ``[-B, B]`` pass a layer unchanged.

    Raises:
        ValueError: on ``dim < 2`` or another out-of-range argument.
        TypeError: on a non-integer count or a non-numeric ``tail_bound``.

    References:
        Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", NeurIPS 2019,
        arXiv:1906.04032.
    """

    kind: ClassVar[str] = "spline"
    hyperparameter_names: ClassVar[tuple[str, ...]] = ("layers", "hidden", "depth", "bins", "tail_bound")

    def __init__(
        self, dim: int, *, layers: int, hidden: int, depth: int, bins: int, tail_bound: float
    ) -> None:
        super().__init__()
        self._check_common(dim, layers, hidden, depth)
        self.bins = require_int("bins", bins, 2)
        self.tail_bound = require_positive_float("tail_bound", tail_bound)
        if self.bins * MIN_BIN_SIZE >= 1.0:
            raise ValueError(
                f"bins must be below {round(1 / MIN_BIN_SIZE)} so that every bin can "
                f"have its minimum size; got {self.bins}"
            )
        self.couplings = nn.ModuleList(
            SplineCoupling(mask, hidden=hidden, depth=depth, bins=self.bins, tail_bound=self.tail_bound)
            for mask in coupling_masks(self.dim, self.layers)
        )
