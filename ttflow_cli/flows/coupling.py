"""The flow interface, coupling masks and conditioners, and affine coupling layers (RealNVP).

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


def conditioner_mlp(in_features: int, out_features: int, hidden: int, depth: int) -> nn.Sequential:
    """Build an MLP with ``depth`` SiLU hidden layers and a zero-initialized output layer."""
    widths = [in_features] + [hidden] * depth
    modules: list[nn.Module] = []
    for width_in, width_out in zip(widths[:-1], widths[1:]):
        modules.append(nn.Linear(width_in, width_out))
        modules.append(nn.SiLU())

    # A zero output layer makes every coupling parameter 0, which each coupling maps
    # to the identity, so training starts from the base distribution itself.
    output = nn.Linear(widths[-1], out_features)
    nn.init.zeros_(output.weight)
    nn.init.zeros_(output.bias)
    modules.append(output)
    return nn.Sequential(*modules)


class MaskedCoupling(nn.Module, ABC):
    """Coupling layer skeleton: the coordinates where ``mask`` is ``True`` pass unchanged
    and condition an elementwise bijection of the others.

    The conditioner is an MLP (see :func:`conditioner_mlp`) with
    ``parameters_per_coordinate`` outputs per transformed coordinate. Subclasses
    implement :meth:`transform`.

    Args:
        mask: boolean tensor of shape ``(d,)`` where ``True`` marks the conditioning
            coordinates. It needs at least one ``True`` and one ``False`` entry.
        parameters_per_coordinate: conditioner outputs per transformed coordinate.
        hidden: width of the conditioner's hidden layers.
        depth: number of hidden layers of the conditioner. With 0 it is one linear layer.
    """

    def __init__(self, mask: Tensor, *, parameters_per_coordinate: int, hidden: int, depth: int) -> None:
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
        self.conditioner = conditioner_mlp(
            in_features=self.condition_index.numel(),
            out_features=parameters_per_coordinate * self.transform_index.numel(),
            hidden=hidden,
            depth=depth,
        )

    @abstractmethod
    def transform(self, values: Tensor, parameters: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        """Apply the elementwise bijection (or its inverse) to the transformed coordinates.

        Args:
            values: transformed coordinates, shape ``(N, m)``.
            parameters: conditioner output, shape ``(N, m * parameters_per_coordinate)``.
            inverse: apply the inverse bijection.

        Returns:
            The new values, shape ``(N, m)``, and the log-determinant of this direction,
            shape ``(N,)``.
        """

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``(N, d)`` base points to ``x`` and ``ladj`` of shape ``(N,)``."""
        parameters = self.conditioner(z[:, self.condition_index])
        transformed, ladj = self.transform(z[:, self.transform_index], parameters, inverse=False)
        return z.index_copy(1, self.transform_index, transformed), ladj

    def inverse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``(N, d)`` points back to ``z`` and ``log|det dT^{-1}/dx|`` of shape ``(N,)``."""
        parameters = self.conditioner(x[:, self.condition_index])
        restored, ladj_inverse = self.transform(x[:, self.transform_index], parameters, inverse=True)
        return x.index_copy(1, self.transform_index, restored), ladj_inverse


class AffineCoupling(MaskedCoupling):
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
        super().__init__(mask, parameters_per_coordinate=2, hidden=hidden, depth=depth)
        self.max_log_scale = float(max_log_scale)

    def transform(self, values: Tensor, parameters: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        """Scale and shift ``values`` (N, m), or undo it; returns the values and ``(N,)`` ladj."""
        shift, raw_log_scale = parameters.chunk(2, dim=-1)
        log_scale = self.max_log_scale * torch.tanh(raw_log_scale / self.max_log_scale)
        if inverse:
            return (values - shift) * torch.exp(-log_scale), -log_scale.sum(dim=-1)
        return values * torch.exp(log_scale) + shift, log_scale.sum(dim=-1)


def require_int(name: str, value: object, minimum: int, reason: str = "") -> int:
    """Return ``value`` if it is an integer of at least ``minimum``; ``reason`` ends the error."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}{reason}; got {value}")
    return value


def require_positive_float(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a positive finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number; got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be positive and finite; got {value}")
    return float(value)


class CouplingStack(Flow):
    """Composition ``T = T_L o ... o T_1`` of coupling layers with alternating masks.

    ``ladj(z) = sum_l ladj_l(z_{l-1})`` with ``z_0 = z``. Subclasses validate their
    own hyperparameters, call :meth:`_check_common`, and fill :attr:`couplings` with
    one layer per mask of :func:`coupling_masks`; every layer starts as the identity,
    so the stack does too.
    """

    couplings: nn.ModuleList

    def _check_common(self, dim: int, layers: int, hidden: int, depth: int) -> None:
        self.dim = require_int(
            "dim", dim, 2, " because a coupling layer conditions some coordinates on the others "
            "(use flow kind 'none' for a one-dimensional target)"
        )
        self.layers = require_int("layers", layers, 2, " so that every coordinate is transformed")
        self.hidden = require_int("hidden", hidden, 1)
        self.depth = require_int("depth", depth, 0)

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


class CouplingFlow(CouplingStack):
    """Stack of affine coupling layers with alternating masks (see :func:`coupling_masks`).

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
        self._check_common(dim, layers, hidden, depth)
        self.max_log_scale = require_positive_float("max_log_scale", max_log_scale)
        self.couplings = nn.ModuleList(
            AffineCoupling(mask, hidden=hidden, depth=depth, max_log_scale=self.max_log_scale)
            for mask in coupling_masks(self.dim, self.layers)
        )
