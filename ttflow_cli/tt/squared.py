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
_BRACKET_CELLS = 32
# Newton refinements after the full steps, for the points still moving; bisection
# fallbacks need up to about 40 to reach rounding from a whole cell.
_MAX_NEWTON_STEPS = 40
_FULL_NEWTON_STEPS = 2
# A point whose last Newton step moved it less than this is converged: Newton
# converges quadratically, so the remaining error is about the square of the step.
_STEP_TOLERANCE = {torch.float64: 1e-8, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}
# Newton steps on the cubic Hermite interpolant that give the starting point.
_HERMITE_STEPS = 3


@dataclass
class _SamplingTables:
    """Per-core precomputed Chebyshev tables for one dtype and device."""

    evaluation: list[Tensor]  # (r0, n * r1): G_k in the Chebyshev basis, flattened
    # (r0 (r0 + 1) / 2, 2 M + 1 + 2 (cells + 1)) per pair a <= a': Chebyshev
    # coefficients of the conditional density (M) and CDF (M + 1), then the CDF and
    # the density at the bracketing grid, so one product per core gives all four.
    conditional: list[Tensor]
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
        cores = round_cores(cores, tolerance=0.0, max_rank=10**9, normalize=True)
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
        return cls(round_cores(cores, tolerance, max_rank, normalize=True))

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
        """Solve ``F_k(s | v) = u F_k(1 | v)`` for ``s`` in [-1, 1], batched.

        The grid brackets each root; cubic Hermite interpolation of the CDF in the
        bracketing cell starts within about 1e-7 of it, and Newton steps on the exact
        Chebyshev series finish the job, each on the points not yet converged.
        """
        upper = torch.triu_indices(v.shape[1], v.shape[1], device=v.device)
        table = (v[:, upper[0]] * v[:, upper[1]]) @ tables.conditional[k]
        points = tables.grid_points.shape[0]
        degree = (table.shape[1] - 2 * points - 1) // 2
        density = table[:, :degree]
        cdf = table[:, degree:2 * degree + 1]
        cdf_grid = table[:, 2 * degree + 1:2 * degree + 1 + points]
        density_grid = table[:, 2 * degree + 1 + points:]
        target = u * cdf_grid[:, -1]

        s, low, high = _hermite_start(cdf_grid, density_grid, target, tables.grid_points)
        # From the Hermite start (about 1e-6 off) two Newton steps on every point
        # reach rounding; only the few points still moving iterate further.
        for _ in range(_FULL_NEWTON_STEPS):
            previous = s
            s, low, high = _newton_step(s, low, high, cdf, density, target)
        moving = torch.nonzero((s - previous).abs() > _STEP_TOLERANCE[v.dtype]).squeeze(1)
        for _ in range(_MAX_NEWTON_STEPS):
            if moving.numel() == 0:
                break
            point, lo, hi = s[moving], low[moving], high[moving]
            updated, low[moving], high[moving] = _newton_step(
                point, lo, hi, cdf[moving], density[moving], target[moving]
            )
            s[moving] = updated
            moving = moving[(updated - point).abs() > _STEP_TOLERANCE[v.dtype]]
        return s

    def _sampling_tables(self, dtype: torch.dtype, device: torch.device) -> _SamplingTables:
        key = (dtype, torch.device(device))
        if key not in self._tables:
            self._tables[key] = build_sampling_tables(self.cores, dtype, device)
        return self._tables[key]


def _newton_step(s: Tensor, low: Tensor, high: Tensor, cdf: Tensor, density: Tensor,
                 target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One safeguarded Newton step on the exact Chebyshev CDF; narrows the bracket."""
    basis = chebyshev.chebyshev_basis(s, cdf.shape[1])
    residual = torch.einsum("bm,bm->b", cdf, basis) - target
    slope = torch.einsum("bm,bm->b", density, basis[:, :density.shape[1]])
    below = residual < 0
    low = torch.where(below, s, low)
    high = torch.where(below, high, s)
    step = s - residual / slope
    # A Newton step that leaves the bracket falls back to bisection.
    # The bracket end equal to s must count as inside, or a converged point would
    # be bisected away from its root.
    inside = (step >= low) & (step <= high) & (slope > 0)
    return torch.where(inside, step, 0.5 * (low + high)), low, high


def _hermite_start(cdf_grid: Tensor, density_grid: Tensor, target: Tensor,
                   grid_points: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Bracketing cell of each root and a start from the cubic Hermite interpolant
    of the CDF in that cell (values and slopes at both ends)."""
    last = grid_points.shape[0] - 1
    # Counting grid values below the target finds the cell even where rounding
    # makes the computed CDF decrease slightly.
    cell = (cdf_grid < target.unsqueeze(1)).sum(1).clamp(1, last).unsqueeze(1)
    low, high = grid_points[cell - 1].squeeze(1), grid_points[cell].squeeze(1)
    f0, f1 = cdf_grid.gather(1, cell - 1).squeeze(1), cdf_grid.gather(1, cell).squeeze(1)
    width = high - low
    m0 = density_grid.gather(1, cell - 1).squeeze(1) * width
    m1 = density_grid.gather(1, cell).squeeze(1) * width
    span = f1 - f0
    tau = ((target - f0) / torch.where(span > 0, span, torch.ones_like(span))).clamp(0, 1)
    for _ in range(_HERMITE_STEPS):
        t2, t3 = tau * tau, tau * tau * tau
        value = f0 * (2 * t3 - 3 * t2 + 1) + m0 * (t3 - 2 * t2 + tau) + f1 * (3 * t2 - 2 * t3) + m1 * (t3 - t2)
        slope = 6 * (f0 - f1) * (t2 - tau) + m0 * (3 * t2 - 4 * tau + 1) + m1 * (3 * t2 - 2 * tau)
        step = tau - (value - target) / torch.where(slope > 0, slope, torch.ones_like(slope))
        tau = torch.where(slope > 0, step, tau).clamp(0, 1)
    return low + tau * width, low, high


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

    grid_points = torch.cos(torch.linspace(math.pi, 0.0, _BRACKET_CELLS + 1, dtype=torch.float64))
    grid_points[0], grid_points[-1] = -1.0, 1.0
    grid = chebyshev.chebyshev_basis(grid_points, degree + 2).T
    evaluation, conditional = [], []
    for core in cores:
        core = core.detach().to(dtype=torch.float64, device="cpu")
        r0, _, r1 = core.shape
        cheb = torch.einsum("ajb,jm->amb", core, to_chebyshev)
        evaluation.append(cheb.reshape(r0, n * r1))
        values = torch.einsum("ajb,qj->aqb", core, legendre_at_nodes)
        products = torch.einsum("aqb,cqb->acq", values, values).numpy()
        coefficients = torch.as_tensor(chebyshev.chebyshev_coefficients(products, axis=2))
        cdf_coefficients = coefficients @ antiderivative
        both = torch.cat([coefficients, cdf_coefficients, cdf_coefficients @ grid,
                          coefficients @ grid[:degree + 1]], dim=2)
        # v^T S v sums each off-diagonal pair twice.
        upper = torch.triu_indices(r0, r0)
        factor = torch.where(upper[0] == upper[1], 1.0, 2.0).to(torch.float64)
        conditional.append(both[upper[0], upper[1]] * factor[:, None])

    def cast(x: Tensor) -> Tensor:
        return x.to(dtype=dtype, device=device).contiguous()

    return _SamplingTables(
        evaluation=[cast(x) for x in evaluation],
        conditional=[cast(x) for x in conditional],
        grid_points=cast(grid_points),
    )
