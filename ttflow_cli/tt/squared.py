"""The squared functional tensor train: an exactly normalized density on [-1, 1]^d.

.. math::

    q_0(t) = \\big(G_1(t_1) G_2(t_2) \\cdots G_d(t_d)\\big)^2, \\qquad
    G_k(s) = \\sum_j C_k[:, j, :] \\, \\phi_j(s),

with ``phi_j`` the orthonormal Legendre basis. Cores 2..d are right-orthonormal and
the coefficient tensor has unit Frobenius norm, so ``q_0`` integrates to 1.

References:
    Khoo, Lindsey, Zhao, "Tensorizing flows: a tool for variational inference",
    arXiv:2305.02460 (2023).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ttflow_cli.tt import chebyshev
from ttflow_cli.tt.cores import ranks, round_cores

# Grid cells used to bracket each inverse-CDF root before Newton refinement.
_BRACKET_CELLS = 64
# Newton refinements after bracketing; from the interpolated start each roughly
# squares the relative error, so 3 to 5 reach rounding and the rest is a safeguard.
_MAX_NEWTON_STEPS = 12


@dataclass
class _SamplingTables:
    """Per-core precomputed Chebyshev tables for one dtype and device."""

    evaluation: list[Tensor]  # (r0, n * r1): G_k in the Chebyshev basis, flattened
    # (r0 (r0 + 1) / 2, 2 M + 1): density and CDF coefficients per pair a <= a'
    conditional: list[Tensor]
    grid: Tensor  # (M + 1, cells + 1): T_m at the bracketing grid
    grid_points: Tensor  # (cells + 1,)


class SquaredTT:
    """Squared functional TT density on ``[-1, 1]^d``.

    Args:
        cores: Legendre coefficient cores, shapes ``(r_{k-1}, n, r_k)``. They are
            right-orthogonalized and scaled to unit norm here, so any TT works.
    """

    def __init__(self, cores: list[Tensor]):
        if not cores:
            raise ValueError("a tensor train needs at least one core")
        cores = round_cores(cores, tolerance=0.0, max_rank=10**9)
        norm = torch.linalg.norm(cores[0])
        if not torch.isfinite(norm) or norm == 0:
            raise ValueError(f"the TT coefficient tensor has norm {float(norm)}; cannot normalize")
        cores[0] = cores[0] / norm
        self.cores = cores
        self._tables: dict[tuple[torch.dtype, torch.device], _SamplingTables] = {}

    @classmethod
    def from_grid_cores(
        cls, grid_cores: list[Tensor], tolerance: float, max_rank: int
    ) -> SquaredTT:
        """Build from cores of values on Gauss-Legendre nodes (the cross approximation).

        Each core is projected onto the orthonormal Legendre basis by Gauss quadrature,
        which reproduces the interpolating polynomial exactly, then rounded.
        """
        n = grid_cores[0].shape[1]
        nodes, weights = chebyshev.gauss_legendre(n)
        projection = orthonormal_projection(nodes, weights, grid_cores[0])
        cores = [torch.einsum("ji,aib->ajb", projection, core) for core in grid_cores]
        return cls(round_cores(cores, tolerance, max_rank))

    @property
    def dim(self) -> int:
        return len(self.cores)

    @property
    def nodes(self) -> int:
        """Number of basis functions per coordinate (polynomial degree + 1)."""
        return self.cores[0].shape[1]

    @property
    def ranks(self) -> list[int]:
        return ranks(self.cores)

    @property
    def dtype(self) -> torch.dtype:
        return self.cores[0].dtype

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> SquaredTT:
        """Copy with cores converted (sampling tables are rebuilt lazily)."""
        copy = object.__new__(SquaredTT)
        copy.cores = [core.to(dtype=dtype, device=device) for core in self.cores]
        copy._tables = {}
        return copy

    def log_prob(self, t: Tensor) -> Tensor:
        """``log q_0(t)``, shape ``(N, d) -> (N,)``; ``-inf`` outside ``[-1, 1]^d``."""
        log_q = torch.zeros(t.shape[0], dtype=t.dtype, device=t.device)
        if t.shape[0] == 0:
            return log_q
        tables = self._sampling_tables(t.dtype, t.device)
        v = torch.ones(t.shape[0], 1, dtype=t.dtype, device=t.device)
        for k in range(self.dim):
            v, log_step = self._advance(v, tables.evaluation[k], t[:, k])
            log_q = log_q + log_step
        inside = (t.abs() <= 1).all(dim=1)
        return torch.where(inside, log_q, torch.full_like(log_q, -math.inf))

    def sample(self, count: int, generator: torch.Generator | None = None,
               dtype: torch.dtype | None = None, device: torch.device | str | None = None
               ) -> tuple[Tensor, Tensor]:
        """Draw exact samples by inverting each conditional CDF.

        Returns:
            ``(t, log_q)`` with ``t`` of shape ``(count, d)`` and ``log_q = log q_0(t)``
            computed at exactly the returned points.
        """
        dtype = dtype or self.dtype
        device = torch.device(device) if device is not None else self.cores[0].device
        t = torch.empty(count, self.dim, dtype=dtype, device=device)
        log_q = torch.zeros(count, dtype=dtype, device=device)
        if count == 0:
            return t, log_q
        tables = self._sampling_tables(dtype, device)
        uniforms = torch.rand(count, self.dim, generator=generator, dtype=dtype, device=device)
        v = torch.ones(count, 1, dtype=dtype, device=device)
        for k in range(self.dim):
            t[:, k] = self._invert_conditional(v, k, uniforms[:, k], tables)
            v, log_step = self._advance(v, tables.evaluation[k], t[:, k])
            log_q = log_q + log_step
        return t, log_q

    def marginals(self, s: Tensor) -> Tensor:
        """Densities of every coordinate alone at points ``s`` of shape ``(G,)``; returns ``(d, G)``.

        One left-to-right pass of Gram matrices; the right-orthonormal cores integrate
        out every later coordinate exactly.
        """
        flat = s.to(dtype=self.dtype, device=self.cores[0].device)
        basis = torch.as_tensor(
            chebyshev.orthonormal_legendre(flat.cpu().numpy(), self.nodes),
            dtype=self.dtype, device=flat.device,
        )
        gram = torch.ones(1, 1, dtype=self.dtype, device=flat.device)
        rows = []
        for core in self.cores:
            values = torch.einsum("gj,ajb->gab", basis, core)
            rows.append(torch.einsum("ac,gab,gcb->g", gram, values, values))
            gram = torch.einsum("ab,ajc,bjd->cd", gram, core, core)
        density = torch.stack(rows)
        return torch.where(flat.abs() <= 1, density, torch.zeros_like(density))

    def _advance(self, v: Tensor, evaluation: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """One contraction step: ``v <- v G_k(s)`` normalized, and log of the squared norm.

        ``v`` has unit norm on entry, so the squared norm of ``v G_k(s)`` is the
        conditional density of ``s`` given the earlier coordinates.
        """
        n = self.nodes
        weights = (v @ evaluation).view(v.shape[0], n, -1)
        basis = chebyshev.chebyshev_basis(s, n)
        v_next = torch.einsum("bjr,bj->br", weights, basis)
        squared_norm = (v_next * v_next).sum(dim=1)
        norm = squared_norm.sqrt()
        # A zero density leaves v at zero and log q at -inf, without dividing by zero.
        v_next = v_next / torch.where(norm > 0, norm, torch.ones_like(norm)).unsqueeze(1)
        return v_next, torch.log(squared_norm)

    def _invert_conditional(self, v: Tensor, k: int, u: Tensor, tables: _SamplingTables) -> Tensor:
        """Solve ``F_k(s | v) = u F_k(1 | v)`` for ``s`` in [-1, 1], batched."""
        upper = torch.triu_indices(v.shape[1], v.shape[1], device=v.device)
        pairs = v[:, upper[0]] * v[:, upper[1]]
        coefficients = pairs @ tables.conditional[k]
        degree = tables.grid.shape[0] - 1
        density, cdf = coefficients[:, :degree], coefficients[:, degree:]
        target = u * cdf.sum(dim=1)

        s, low, high, r_low, r_high = self._bracket(cdf, target, tables)
        # The CDF is a sum of 2n terms of size up to its total, so rounding alone
        # leaves a residual of a few hundred ulps.
        tolerance = 256 * torch.finfo(v.dtype).eps * float(target.abs().max().clamp_min(1.0))
        # Iterate on the unconverged points only: after three steps almost all are done.
        active = torch.arange(s.shape[0], device=s.device)
        for _ in range(_MAX_NEWTON_STEPS):
            point = s[active]
            basis = chebyshev.chebyshev_basis(point, degree + 1)
            residual = torch.einsum("bm,bm->b", cdf[active], basis) - target[active]
            open_ = residual.abs() > tolerance
            if not bool(open_.any()):
                break
            active, point, residual, basis = active[open_], point[open_], residual[open_], basis[open_]
            slope = torch.einsum("bm,bm->b", density[active], basis[:, :degree])
            below = residual < 0
            low[active] = torch.where(below, point, low[active])
            r_low[active] = torch.where(below, residual, r_low[active])
            high[active] = torch.where(below, high[active], point)
            r_high[active] = torch.where(below, r_high[active], residual)
            lo, hi = low[active], high[active]
            step = point - residual / slope
            # Newton overshoots the bracket where the CDF bends away from the root;
            # the secant through the bracket ends then stays inside it.
            gap = r_high[active] - r_low[active]
            secant = lo - r_low[active] * (hi - lo) / torch.where(gap > 0, gap, torch.ones_like(gap))
            inside = (step > lo) & (step < hi) & (slope > 0)
            s[active] = torch.where(inside, step, secant.clamp(lo, hi))
        return s

    @staticmethod
    def _bracket(cdf: Tensor, target: Tensor, tables: _SamplingTables) -> tuple[Tensor, ...]:
        """Grid cell holding each root, its residuals, and a start by linear interpolation."""
        cdf_grid = cdf @ tables.grid
        # Counting grid values below the target finds the cell even where rounding
        # makes the computed CDF decrease slightly.
        cell = (cdf_grid < target.unsqueeze(1)).sum(1)
        cell = cell.clamp(1, tables.grid_points.shape[0] - 1)
        low, high = tables.grid_points[cell - 1], tables.grid_points[cell]
        f_low = cdf_grid.gather(1, (cell - 1).unsqueeze(1)).squeeze(1)
        f_high = cdf_grid.gather(1, cell.unsqueeze(1)).squeeze(1)
        span = f_high - f_low
        fraction = ((target - f_low) / torch.where(span > 0, span, torch.ones_like(span))).clamp(0, 1)
        start = low + fraction * (high - low)
        return start, low, high, f_low - target, f_high - target

    def _sampling_tables(self, dtype: torch.dtype, device: torch.device) -> _SamplingTables:
        key = (dtype, torch.device(device))
        if key not in self._tables:
            self._tables[key] = build_sampling_tables(self.cores, dtype, device)
        return self._tables[key]


def orthonormal_projection(nodes: np.ndarray, weights: np.ndarray, like: Tensor) -> Tensor:
    """Matrix ``P[j, i] = w_i phi_j(t_i)`` taking node values to Legendre coefficients."""
    basis = chebyshev.orthonormal_legendre(nodes, len(nodes))
    return torch.as_tensor(basis.T * weights, dtype=like.dtype, device=like.device)


def build_sampling_tables(cores: list[Tensor], dtype: torch.dtype, device: torch.device) -> _SamplingTables:
    """Precompute, in float64, the Chebyshev tables that sampling and ``log_prob`` use.

    For core ``k`` the conditional density given a unit left vector ``v`` is
    ``p(s) = sum_{a a'} v_a v_a' S_{a a'}(s)`` with ``S(s) = G_k(s) G_k(s)^T``, a
    polynomial of degree ``2n - 2``; its Chebyshev coefficients (and those of its
    antiderivative) are stored per ``(a, a')`` so that one matrix product per sample
    gives the conditional density and CDF.
    """
    n = cores[0].shape[1]
    degree = 2 * n - 2
    to_chebyshev = torch.as_tensor(chebyshev.legendre_to_chebyshev(n), dtype=torch.float64)
    quadrature = chebyshev.chebyshev_nodes(degree + 1)
    legendre_at_nodes = torch.as_tensor(chebyshev.orthonormal_legendre(quadrature, n))
    antiderivative = torch.as_tensor(chebyshev.antiderivative_matrix(degree))

    evaluation, conditional = [], []
    for core in cores:
        core = core.detach().to(dtype=torch.float64, device="cpu")
        r0, _, r1 = core.shape
        cheb = torch.einsum("ajb,jm->amb", core, to_chebyshev)
        evaluation.append(cheb.reshape(r0, n * r1))
        values = torch.einsum("ajb,qj->aqb", core, legendre_at_nodes)
        products = torch.einsum("aqb,cqb->acq", values, values).numpy()
        coefficients = torch.as_tensor(chebyshev.chebyshev_coefficients(products, axis=2))
        both = torch.cat([coefficients, coefficients @ antiderivative], dim=2)
        # v^T S v sums each off-diagonal pair twice.
        upper = torch.triu_indices(r0, r0)
        factor = torch.where(upper[0] == upper[1], 1.0, 2.0).to(torch.float64)
        conditional.append(both[upper[0], upper[1]] * factor[:, None])

    grid_points = torch.cos(torch.linspace(math.pi, 0.0, _BRACKET_CELLS + 1, dtype=torch.float64))
    grid_points[0], grid_points[-1] = -1.0, 1.0
    grid = chebyshev.chebyshev_basis(grid_points, degree + 2).T

    def cast(x: Tensor) -> Tensor:
        return x.to(dtype=dtype, device=device).contiguous()

    return _SamplingTables(
        evaluation=[cast(x) for x in evaluation],
        conditional=[cast(x) for x in conditional],
        grid=cast(grid),
        grid_points=cast(grid_points),
    )
