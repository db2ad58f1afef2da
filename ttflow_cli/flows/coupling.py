"""Affine coupling layers (RealNVP) and the stack of them that is fine-tuned on the TT base.

A flow ``T`` maps base points ``z`` of shape ``(N, d)`` to ``x = T(z)`` and returns
``ladj = log|det dT/dz|`` of shape ``(N,)``. Flows act on the TT's reference
coordinates, where the box is ``[-1, 1]^d``, but every flow here is a bijection of
all of ``R^d``, so points outside the box are mapped and scored too.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor, nn


class Flow(nn.Module, ABC):
    """A bijection ``T`` of ``R^d`` with an exact log-determinant in both directions.

    Subclasses implement :meth:`forward` and :meth:`inverse` on batches and set
    :attr:`kind` and :attr:`hyperparameter_names`, which the registry uses to store
    the architecture as JSON.

    Attributes:
        kind: registry name of the flow family, for example ``"affine"``.
        hyperparameter_names: constructor arguments besides ``dim`` that, with
            ``dim``, rebuild the same architecture.
        dim: number of coordinates d.
    """

    kind: ClassVar[str]
    hyperparameter_names: ClassVar[tuple[str, ...]]
    dim: int

    @abstractmethod
    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Map base points to ``x = T(z)``.

        Args:
            z: base points, shape ``(N, d)``.

        Returns:
            ``x`` of shape ``(N, d)`` and ``ladj = log|det dT/dz|`` of shape ``(N,)``.
        """

    @abstractmethod
    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map points back to ``z = T^{-1}(x)``.

        Args:
            x: points, shape ``(N, d)``.

        Returns:
            ``z`` of shape ``(N, d)`` and ``log|det dT^{-1}/dx|`` of shape ``(N,)``,
            which equals ``-ladj`` of :meth:`forward` at ``z``.
        """

    def hyperparameters(self) -> dict[str, Any]:
        """Return the constructor arguments named in :attr:`hyperparameter_names`."""
        return {name: getattr(self, name) for name in self.hyperparameter_names}

    def check_input(self, points: Tensor) -> None:
        """Raise unless ``points`` has shape ``(N, dim)`` and the dtype of the parameters.

        Raises:
            ValueError: on a wrong shape.
            TypeError: on a dtype other than that of the parameters. Cast the
                module with ``flow.to(dtype)`` or the input with ``points.to(dtype)``.
        """
        if points.ndim != 2 or points.shape[1] != self.dim:
            raise ValueError(
                f"{type(self).__name__}: expected points of shape (N, {self.dim}); "
                f"got {tuple(points.shape)}"
            )
        parameter = next(self.parameters(), None)
        if parameter is not None and points.dtype != parameter.dtype:
            raise TypeError(
                f"{type(self).__name__}: points have dtype {points.dtype} but the flow "
                f"parameters are {parameter.dtype}; cast one with .to(dtype)"
            )


def coupling_masks(dim: int, layers: int) -> list[Tensor]:
    """Build the conditioning masks of a coupling stack, one boolean ``(d,)`` mask per layer.

    The masks cycle through four patterns: even coordinates, odd coordinates, first
    half, second half. Each pattern is followed by its complement, so two
    consecutive layers transform every coordinate. The parity pair lets neighbouring
    coordinates condition each other and the half pair lets distant ones do so.
    ``True`` marks a conditioning coordinate, which the layer passes unchanged.

    Args:
        dim: number of coordinates d, at least 2.
        layers: number of masks to return.

    Returns:
        ``layers`` boolean tensors of shape ``(d,)``, each with at least one ``True``
        and one ``False`` entry.
    """
    index = torch.arange(dim)
    even = index % 2 == 0
    first_half = index < dim // 2
    patterns = [even, ~even, first_half, ~first_half]
    return [patterns[layer % len(patterns)].clone() for layer in range(layers)]


def _conditioner(in_features: int, out_features: int, hidden: int, depth: int) -> nn.Sequential:
    """Build an MLP with ``depth`` SiLU hidden layers and a zero-initialized output layer."""
    widths = [in_features] + [hidden] * depth
    modules: list[nn.Module] = []
    for width_in, width_out in zip(widths[:-1], widths[1:]):
        modules.append(nn.Linear(width_in, width_out))
        modules.append(nn.SiLU())

    # A zero output layer gives shift 0 and log-scale 0, so the coupling starts as
    # the exact identity and training starts from the base distribution itself.
    output = nn.Linear(widths[-1], out_features)
    nn.init.zeros_(output.weight)
    nn.init.zeros_(output.bias)
    modules.append(output)
    return nn.Sequential(*modules)


class AffineCoupling(nn.Module):
    r"""Affine coupling layer: scale and shift some coordinates conditioned on the others.

    With ``c`` the coordinates where ``mask`` is ``True`` and ``u`` the others,

    .. math::

        x_c = z_c, \qquad x_u = z_u \odot e^{s(z_c)} + t(z_c), \qquad
        \log|\det \partial x / \partial z| = \textstyle\sum_u s(z_c),

    where ``t`` and the raw log-scale come from an MLP conditioner and the log-scale
    is bounded smoothly as ``s = max_log_scale * tanh(raw / max_log_scale)``. The
    inverse is ``z_u = (x_u - t(x_c)) e^{-s(x_c)}``. The conditioner's output layer
    is zero-initialized, so the layer starts as the identity with ``ladj == 0``.

    Args:
        mask: boolean tensor of shape ``(d,)`` where ``True`` marks the conditioning
            coordinates. It needs at least one ``True`` and one ``False`` entry.
        hidden: width of the conditioner's hidden layers.
        depth: number of hidden layers of the conditioner. With 0 it is one linear layer.
        max_log_scale: bound on ``|s|``, so one layer scales a coordinate by at most
            ``exp(max_log_scale)``.

    References:
        Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP",
        ICLR 2017, arXiv:1605.08803.
    """

    def __init__(self, mask: Tensor, *, hidden: int, depth: int, max_log_scale: float) -> None:
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.ndim != 1 or mask.all() or not mask.any():
            raise ValueError(
                "mask must be a 1-D boolean tensor with at least one True (conditioning) "
                f"and one False (transformed) entry; got {mask.tolist()}"
            )

        # The mask is fixed by the architecture, not learned: the buffers follow
        # .to(device) but stay out of state_dict, which then holds only weights.
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("condition_index", torch.nonzero(mask).flatten(), persistent=False)
        self.register_buffer("transform_index", torch.nonzero(~mask).flatten(), persistent=False)
        self.max_log_scale = float(max_log_scale)
        self.conditioner = _conditioner(
            in_features=self.condition_index.numel(),
            out_features=2 * self.transform_index.numel(),
            hidden=hidden,
            depth=depth,
        )

    def _shift_and_log_scale(self, conditioning: Tensor) -> tuple[Tensor, Tensor]:
        shift, raw_log_scale = self.conditioner(conditioning).chunk(2, dim=-1)
        log_scale = self.max_log_scale * torch.tanh(raw_log_scale / self.max_log_scale)
        return shift, log_scale

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``(N, d)`` base points to ``x`` and ``ladj`` of shape ``(N,)``."""
        shift, log_scale = self._shift_and_log_scale(z[:, self.condition_index])
        transformed = z[:, self.transform_index] * torch.exp(log_scale) + shift
        return z.index_copy(1, self.transform_index, transformed), log_scale.sum(dim=-1)

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``(N, d)`` points back to ``z`` and ``log|det dT^{-1}/dx|`` of shape ``(N,)``."""
        shift, log_scale = self._shift_and_log_scale(x[:, self.condition_index])
        restored = (x[:, self.transform_index] - shift) * torch.exp(-log_scale)
        return x.index_copy(1, self.transform_index, restored), -log_scale.sum(dim=-1)


def _require_int(name: str, value: object, minimum: int, reason: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}{reason}; got {value}")
    return value


def _require_positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number; got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be positive and finite; got {value}")
    return float(value)


class CouplingFlow(Flow):
    """Stack of affine coupling layers with alternating masks (see :func:`coupling_masks`).

    ``T = T_L o ... o T_1`` and ``ladj(z) = sum_l ladj_l(z_{l-1})`` with
    ``z_0 = z``. Every layer starts as the identity, so the stack does too.

    Args:
        dim: number of coordinates d. Coupling needs ``d >= 2``, because each layer
            conditions some coordinates on the others. Use no flow for ``d = 1``.
        layers: number of coupling layers, at least 2 so that every coordinate is
            transformed.
        hidden: width of each conditioner's hidden layers, at least 1.
        depth: number of hidden layers of each conditioner, at least 0.
        max_log_scale: bound on the log-scale of each layer (positive).

    Raises:
        ValueError: on ``dim < 2`` or another out-of-range argument.
        TypeError: on a non-integer count or a non-numeric ``max_log_scale``.

    References:
        Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP",
        ICLR 2017, arXiv:1605.08803.
    """

    kind: ClassVar[str] = "affine"
    hyperparameter_names: ClassVar[tuple[str, ...]] = ("layers", "hidden", "depth", "max_log_scale")

    def __init__(
        self, dim: int, *, layers: int, hidden: int, depth: int, max_log_scale: float
    ) -> None:
        super().__init__()
        self.dim = _require_int(
            "dim", dim, 2, " because a coupling layer conditions some coordinates on the others "
            "(use flow kind 'none' for a one-dimensional target)"
        )
        self.layers = _require_int("layers", layers, 2, " so that every coordinate is transformed")
        self.hidden = _require_int("hidden", hidden, 1)
        self.depth = _require_int("depth", depth, 0)
        self.max_log_scale = _require_positive_float("max_log_scale", max_log_scale)
        self.couplings = nn.ModuleList(
            AffineCoupling(mask, hidden=hidden, depth=depth, max_log_scale=self.max_log_scale)
            for mask in coupling_masks(self.dim, self.layers)
        )

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``(N, d)`` base points to ``x = T(z)`` and ``ladj`` of shape ``(N,)``."""
        self.check_input(z)
        x = z
        ladj = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for coupling in self.couplings:
            x, layer_ladj = coupling(x)
            ladj = ladj + layer_ladj
        return x, ladj

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``(N, d)`` points to ``z = T^{-1}(x)`` and ``log|det dT^{-1}/dx|`` of shape ``(N,)``."""
        self.check_input(x)
        z = x
        ladj_inverse = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for coupling in reversed(self.couplings):
            z, layer_ladj = coupling.inverse(z)
            ladj_inverse = ladj_inverse + layer_ladj
        return z, ladj_inverse
