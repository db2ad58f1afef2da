"""The sampler a run produces: base distribution, optional flow, and the box map."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch
from torch import Tensor

from ttflow_cli.flows.coupling import Flow
from ttflow_cli.tt.box import Box


class BaseDistribution(Protocol):
    """A density on reference coordinates that can be sampled exactly."""

    dim: int

    def sample(self, count: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
               ) -> tuple[Tensor, Tensor]: ...

    def log_prob(self, t: Tensor) -> Tensor: ...


class FlowSampler:
    """``x = box(T(z))`` with ``z`` from the base, and the exact density of ``x``.

    .. math::

        \\log q(x) = \\log q_0(z) - \\log|\\det \\partial T / \\partial z| - \\log|\\det \\partial x / \\partial t|

    The base is fixed: gradients reach only the flow parameters.
    """

    def __init__(self, base: BaseDistribution, flow: Flow | None, box: Box,
                 dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"):
        if base.dim != box.dim or (flow is not None and flow.dim != box.dim):
            raise ValueError(
                f"dimensions differ: base {base.dim}, box {box.dim}, flow {flow.dim if flow else '-'}"
            )
        self.base = base
        self.flow = flow.to(dtype=dtype, device=device) if flow is not None else None
        self.box = box
        self.dtype = dtype
        self.device = torch.device(device)

    @property
    def dim(self) -> int:
        return self.box.dim

    def sample(self, count: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``count`` points ``x`` (N, d) with ``log q(x)`` (N,); differentiable in the flow."""
        z, log_q0 = self.base.sample(count, generator, dtype=self.dtype, device=self.device)
        if self.flow is None:
            t, ladj = z, torch.zeros_like(log_q0)
        else:
            t, ladj = self.flow(z)
        return self.box.to_x(t), log_q0 - ladj - self.box.log_jacobian

    def sample_batches(self, count: int, batch_size: int,
                       generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(x, log_q)`` batches without gradients, ``count`` points in all."""
        with torch.no_grad():
            for start in range(0, count, batch_size):
                yield self.sample(min(batch_size, count - start), generator)
