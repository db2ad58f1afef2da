"""Transfer-operator quadrature for one-dimensional chains with nearest-neighbour bonds.

A chain density factorizes as

.. math::

    \\tilde p(u) = \\prod_{\\text{bonds } (i, j)} e^{b(u_i, u_j)} \\prod_{i=1}^{N} e^{s(u_i)},

with a log bond factor ``b`` and a log site factor ``s``. Integrating the sites one at a
time on an ``n``-node Gauss-Legendre grid turns ``Z`` into products of ``(n, n)``
matrices: ``O(N n^2)`` work for an open chain, one symmetric eigendecomposition for a
ring. Everything runs in float64 NumPy and in log space with explicit shifts, so no
factor is exponentiated before its maximum is subtracted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]
SiteLogFactor = Callable[[Array], Array]
BondLogFactor = Callable[[Array, Array], Array]


@functools.lru_cache(maxsize=8)
def _legendre_rule(nodes: int) -> tuple[Array, Array]:
    """Gauss-Legendre rule on ``[-1, 1]``, cached: 600 nodes take an eigendecomposition of 600 x 600."""
    t, w = np.polynomial.legendre.leggauss(nodes)
    t.flags.writeable = False
    w.flags.writeable = False
    return t, w


def gauss_legendre(nodes: int, low: float, high: float) -> tuple[Array, Array]:
    """Gauss-Legendre nodes and weights on ``[low, high]``, both of shape ``(nodes,)``."""
    if nodes < 1:
        raise ValueError(f"expected at least 1 quadrature node; got {nodes}")
    if not low < high:
        raise ValueError(f"expected low < high; got [{low}, {high}]")
    t, w = _legendre_rule(nodes)
    half = 0.5 * (high - low)
    return low + half * (t + 1.0), half * w


def _shifted_log(values: Array) -> tuple[Array, float]:
    """Split log-values into ``exp(values - shift)`` and the shift ``max(values)``."""
    shift = float(np.max(values))
    return np.exp(values - shift), shift


def _log_matvec(log_v: Array, kernel: Array, kernel_shift: float) -> Array:
    """``log(exp(log_v) @ exp(log_kernel))`` for ``kernel = exp(log_kernel - kernel_shift)``."""
    v, v_shift = _shifted_log(log_v)
    with np.errstate(divide="ignore"):
        # An entry that underflows to 0 is below 1e-308 of the largest; log gives -inf.
        return np.log(v @ kernel) + v_shift + kernel_shift


def _chain_operators(
    log_site: SiteLogFactor, log_bond: BondLogFactor, grid: tuple[Array, Array]
) -> tuple[Array, Array, float]:
    """Log site mass ``s(u_j) + log w_j``, shifted bond kernel and its shift."""
    u, w = grid
    kernel, kernel_shift = _shifted_log(log_bond(u[:, None], u[None, :]))
    return log_site(u) + np.log(w), kernel, kernel_shift


def _forward_messages(
    log_site: SiteLogFactor,
    log_bond: BondLogFactor,
    sites: int,
    grid: tuple[Array, Array],
    left: float,
) -> list[Array]:
    """Log-messages ``forward[k][j]``: sites before site ``k`` (0-based) integrated out.

    Site ``k`` is pinned to node ``j``, and its own factor and weight are included.
    """
    u, _ = grid
    log_mass, kernel, kernel_shift = _chain_operators(log_site, log_bond, grid)
    forward = [log_bond(np.full_like(u, left), u) + log_mass]
    for _ in range(sites - 1):
        forward.append(_log_matvec(forward[-1], kernel, kernel_shift) + log_mass)
    return forward


def _backward_messages(
    log_site: SiteLogFactor,
    log_bond: BondLogFactor,
    sites: int,
    grid: tuple[Array, Array],
    right: float,
) -> list[Array]:
    """Log-messages ``backward[k][j]``: sites after site ``k`` integrated out, bond to ``right`` included."""
    u, _ = grid
    log_mass, kernel, kernel_shift = _chain_operators(log_site, log_bond, grid)
    backward = [log_bond(u, np.full_like(u, right))]
    for _ in range(sites - 1):
        backward.append(_log_matvec(backward[-1] + log_mass, kernel.T, kernel_shift))
    backward.reverse()
    return backward


def _check_sites(sites: int) -> None:
    if sites < 1:
        raise ValueError(f"expected at least 1 site; got {sites}")


def _log_sum(log_values: Array) -> float:
    values, shift = _shifted_log(log_values)
    return float(np.log(np.sum(values)) + shift)


def open_chain_log_z(
    log_site: SiteLogFactor,
    log_bond: BondLogFactor,
    sites: int,
    grid: tuple[Array, Array],
    left: float,
    right: float,
) -> float:
    """Compute ``log Z`` of a chain of ``sites`` free sites between fixed end values.

    .. math::

        Z = \\int e^{b(\\ell, u_1)} \\prod_{i=1}^{N} e^{s(u_i)}
            \\prod_{i=1}^{N-1} e^{b(u_i, u_{i+1})} \\, e^{b(u_N, r)} \\, du

    Args:
        log_site: ``s``, vectorized over an array of site values.
        log_bond: ``b(u, v)``, vectorized with broadcasting.
        sites: number of free sites ``N >= 1``.
        grid: quadrature nodes and weights, each of shape ``(n,)``. They must cover
            the mass of every site; the integral outside them is dropped.
        left: fixed value ``u_0``.
        right: fixed value ``u_{N+1}``.

    Returns:
        The natural log of the quadrature estimate of ``Z``.
    """
    _check_sites(sites)
    u, _ = grid
    last = _forward_messages(log_site, log_bond, sites, grid, left)[-1]
    return _log_sum(last + log_bond(u, np.full_like(u, right)))


def open_chain_site_moments(
    log_site: SiteLogFactor,
    log_bond: BondLogFactor,
    sites: int,
    grid: tuple[Array, Array],
    left: float,
    right: float,
) -> tuple[Array, Array]:
    """Compute exact ``E[u_i]`` and ``E[u_i^2]`` for every site of an open chain.

    Arguments are those of :func:`open_chain_log_z`. The marginal of site ``i`` on
    the grid is the product of the forward and backward messages at that site.

    Returns:
        ``(mean, second_moment)``, each of shape ``(sites,)``.
    """
    _check_sites(sites)
    u, _ = grid
    forward = _forward_messages(log_site, log_bond, sites, grid, left)
    backward = _backward_messages(log_site, log_bond, sites, grid, right)
    mean = np.empty(sites)
    second = np.empty(sites)
    for i in range(sites):
        marginal, _ = _shifted_log(forward[i] + backward[i])
        marginal /= marginal.sum()
        mean[i] = marginal @ u
        second[i] = marginal @ u**2
    return mean, second


def _ring_kernel(
    log_site: SiteLogFactor, log_bond: BondLogFactor, grid: tuple[Array, Array]
) -> tuple[Array, float]:
    """Build the symmetrized transfer matrix ``sqrt(m_i) e^{b_ij} sqrt(m_j)`` and its log-shift.

    ``m = w e^{s}`` is the site mass. The matrix is returned divided by ``e^shift``,
    with ``shift`` the largest log-entry, and exactly symmetric.
    """
    u, w = grid
    half_mass = 0.5 * (log_site(u) + np.log(w))
    log_kernel = half_mass[:, None] + log_bond(u[:, None], u[None, :]) + half_mass[None, :]
    kernel, shift = _shifted_log(log_kernel)
    return 0.5 * (kernel + kernel.T), shift


def _ring_check(log_bond: BondLogFactor, grid: tuple[Array, Array], sites: int) -> None:
    _check_sites(sites)
    u, _ = grid
    probe = u[:: max(1, len(u) // 7)]
    if not np.allclose(log_bond(probe[:, None], probe[None, :]), log_bond(probe[None, :], probe[:, None])):
        raise ValueError("a ring needs a symmetric bond factor b(u, v) = b(v, u)")


def ring_log_z(
    log_site: SiteLogFactor, log_bond: BondLogFactor, sites: int, grid: tuple[Array, Array]
) -> float:
    """Compute ``log Z`` of a ring of ``sites`` sites, ``log trace(T^N)``.

    .. math::

        Z = \\int \\prod_{i=1}^{N} e^{s(u_i)} e^{b(u_i, u_{i+1})} \\, du,
        \\qquad u_{N+1} = u_1

    ``T`` is the symmetrized transfer matrix, so ``trace(T^N) = sum_k lambda_k^N``.
    A one-site ring has the self-bond ``b(u, u)`` and a two-site ring two bonds between
    its sites, as in the energy of a periodic chain built with ``roll``.

    Args:
        log_site: ``s``, vectorized over an array of site values.
        log_bond: ``b(u, v)``, symmetric and vectorized with broadcasting.
        sites: number of sites ``N >= 1``.
        grid: quadrature nodes and weights, each of shape ``(n,)``.

    Returns:
        The natural log of the quadrature estimate of ``Z``.
    """
    _ring_check(log_bond, grid, sites)
    kernel, shift = _ring_kernel(log_site, log_bond, grid)
    eigenvalues = np.linalg.eigvalsh(kernel)
    largest = eigenvalues[-1]
    ratio_sum = np.sum((eigenvalues / largest) ** sites)
    return float(sites * (np.log(largest) + shift) + np.log(ratio_sum))


def ring_site_moments(
    log_site: SiteLogFactor, log_bond: BondLogFactor, sites: int, grid: tuple[Array, Array]
) -> tuple[float, float]:
    """Compute exact ``E[u]`` and ``E[u^2]`` at one site of a ring (all sites are alike).

    The mass at node ``j`` is the diagonal entry ``(T^N)_jj = sum_k lambda_k^N psi_k(j)^2``.
    Arguments are those of :func:`ring_log_z`.
    """
    _ring_check(log_bond, grid, sites)
    u, _ = grid
    kernel, _ = _ring_kernel(log_site, log_bond, grid)
    eigenvalues, eigenvectors = np.linalg.eigh(kernel)
    powers = (eigenvalues / eigenvalues[-1]) ** sites
    mass = (eigenvectors**2) @ powers
    mass /= mass.sum()
    return float(mass @ u), float(mass @ u**2)


def open_chain_additive_moments(
    log_site: SiteLogFactor,
    log_bond: BondLogFactor,
    sites: int,
    grid: tuple[Array, Array],
    left: float,
    right: float,
    site_term: SiteLogFactor,
    bond_term: BondLogFactor,
) -> tuple[float, float]:
    """Compute ``E[A]`` and ``E[A^2]`` of an additive observable on an open chain.

    .. math::

        A(u) = \\sum_{i=1}^{N} a(u_i) + \\sum_{i=0}^{N} e(u_i, u_{i+1}),
        \\qquad u_0 = \\ell, \\; u_{N+1} = r

    Besides the forward message ``F`` (the measure with the sites before ``k``
    integrated out), two more messages carry ``A_k`` and ``A_k^2`` of the partial sum
    up to site ``k`` under the same measure. Adding site ``k + 1`` with increment
    ``d = e(u_k, u_{k+1}) + a(u_{k+1})`` updates them as
    ``G' = (G + F d) K m`` and ``H' = (H + 2 G d + F d^2) K m``, with the bond kernel ``K``
    and the site mass ``m``. All three share one scale per step, so only ratios are
    formed and nothing overflows.

    Args:
        log_site, log_bond, sites, grid, left, right: as for :func:`open_chain_log_z`.
        site_term: ``a``, vectorized over an array of site values.
        bond_term: ``e(u, v)``, vectorized with broadcasting; it also applies to the
            bonds to ``left`` and ``right``.

    Returns:
        ``(E[A], E[A^2])`` on the quadrature grid.
    """
    _check_sites(sites)
    u, _ = grid
    log_mass, kernel, _ = _chain_operators(log_site, log_bond, grid)
    mass = np.exp(log_mass - np.max(log_mass))
    site = site_term(u)
    bond = bond_term(u[:, None], u[None, :])
    kernel_bond = kernel * bond
    kernel_bond2 = kernel * bond**2

    left_values = np.full_like(u, left)
    forward, _ = _shifted_log(log_bond(left_values, u))
    forward = forward * mass
    increment = bond_term(left_values, u) + site
    first = forward * increment
    second = forward * increment**2
    for _ in range(sites - 1):
        moved = forward @ kernel
        moved_first = first @ kernel
        moved_bond = forward @ kernel_bond
        second = mass * (
            second @ kernel + 2.0 * (first @ kernel_bond) + 2.0 * site * moved_first
            + forward @ kernel_bond2 + 2.0 * site * moved_bond + site**2 * moved
        )
        first = mass * (moved_first + moved_bond + site * moved)
        forward = mass * moved
        scale = np.max(forward)
        forward, first, second = forward / scale, first / scale, second / scale

    right_values = np.full_like(u, right)
    closing, _ = _shifted_log(log_bond(u, right_values))
    last_bond = bond_term(u, right_values)
    norm = forward @ closing
    mean = (first + forward * last_bond) @ closing / norm
    second_moment = (second + 2.0 * first * last_bond + forward * last_bond**2) @ closing / norm
    return float(mean), float(second_moment)


@dataclass(frozen=True)
class RingSpectrum:
    """Eigendecomposition of the symmetrized transfer matrix of a ring, scaled to a top eigenvalue of 1.

    Attributes:
        sites: number of sites ``N``.
        nodes: quadrature nodes, shape ``(n,)``.
        kernel: symmetrized transfer matrix divided by its largest eigenvalue, ``(n, n)``.
        ratios: eigenvalues divided by the largest, ascending, ``(n,)``.
        vectors: orthonormal eigenvectors as columns, ``(n, n)``.
    """

    sites: int
    nodes: Array
    kernel: Array
    ratios: Array
    vectors: Array


def ring_spectrum(
    log_site: SiteLogFactor, log_bond: BondLogFactor, sites: int, grid: tuple[Array, Array]
) -> RingSpectrum:
    """Diagonalize the transfer matrix of a ring once, for :func:`ring_additive_mean` and
    :func:`ring_site_sum_second_moment`. Arguments are those of :func:`ring_log_z`."""
    _ring_check(log_bond, grid, sites)
    kernel, _ = _ring_kernel(log_site, log_bond, grid)
    eigenvalues, eigenvectors = np.linalg.eigh(kernel)
    largest = eigenvalues[-1]
    return RingSpectrum(sites, grid[0], kernel / largest, eigenvalues / largest, eigenvectors)


def ring_additive_mean(spectrum: RingSpectrum, site_term: SiteLogFactor, bond_term: BondLogFactor) -> float:
    """Compute ``E[A]`` for ``A = sum_i a(u_i) + sum_i e(u_i, u_{i+1})`` on a ring.

    All sites and bonds are alike, so ``E[A] = N (E[a(u_1)] + E[e(u_1, u_2)])``, with
    ``E[e] = trace((T o E) T^(N-1)) / trace(T^N)`` for the symmetrized transfer matrix
    ``T`` and the elementwise product ``T o E``. ``bond_term`` must be symmetric.
    """
    u, sites = spectrum.nodes, spectrum.sites
    vectors, ratios = spectrum.vectors, spectrum.ratios
    norm = np.sum(ratios**sites)
    site_mean = (vectors**2 * site_term(u)[:, None]).sum(axis=0) @ ratios**sites / norm
    bonded = spectrum.kernel * bond_term(u[:, None], u[None, :])
    bond_diagonal = np.sum(vectors * (bonded @ vectors), axis=0)
    bond_mean = bond_diagonal @ ratios ** (sites - 1) / norm
    return float(sites * (site_mean + bond_mean))


def ring_site_sum_second_moment(spectrum: RingSpectrum, site_term: SiteLogFactor) -> float:
    """Compute ``E[S^2]`` for ``S = sum_i a(u_i)`` on a ring, from the two-point function.

    ``E[S^2] = N sum_{r=0}^{N-1} E[a(u_1) a(u_{1+r})]``, and with ``T = V diag(lambda) V^T``
    and ``M = V^T diag(a) V``,
    ``E[a(u_1) a(u_{1+r})] = sum_{kl} M_kl^2 lambda_l^r lambda_k^(N-r) / sum_k lambda_k^N``.
    """
    u, sites = spectrum.nodes, spectrum.sites
    vectors, ratios = spectrum.vectors, spectrum.ratios
    squared = (vectors.T @ (site_term(u)[:, None] * vectors)) ** 2
    total = 0.0
    for r in range(sites):
        total += ratios ** (sites - r) @ squared @ ratios**r
    return float(sites * total / np.sum(ratios**sites))
