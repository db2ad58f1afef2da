"""Polynomial bases on [-1, 1]: the orthonormal Legendre basis of the TT cores and the
Chebyshev series used to evaluate and invert them quickly.

The cores store coefficients in the orthonormal Legendre basis
``phi_j = sqrt((2j + 1) / 2) P_j``, in which the squared TT is exactly normalized.
Evaluating a series needs the basis at arbitrary points; for Chebyshev polynomials that
is one vectorized call, ``T_m(s) = cos(m arccos s)``, instead of a recurrence with one
kernel launch per degree. So every Legendre series is converted once, exactly, to a
Chebyshev series of the same degree.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the ``n``-point Gauss-Legendre rule on [-1, 1] (float64)."""
    return np.polynomial.legendre.leggauss(n)


def orthonormal_legendre(s: np.ndarray, n: int) -> np.ndarray:
    """Values ``phi_j(s)`` for ``j < n``, shape ``(*s.shape, n)``, in float64."""
    s = np.asarray(s, dtype=np.float64)
    values = np.empty(s.shape + (n,), dtype=np.float64)
    previous, current = np.zeros_like(s), np.ones_like(s)
    for j in range(n):
        values[..., j] = current * math.sqrt((2 * j + 1) / 2)
        previous, current = current, ((2 * j + 1) * s * current - j * previous) / (j + 1)
    return values


def chebyshev_nodes(count: int) -> np.ndarray:
    """Chebyshev-Gauss nodes ``cos(pi (q + 1/2) / count)``, float64."""
    return np.cos(np.pi * (np.arange(count) + 0.5) / count)


def chebyshev_coefficients(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Chebyshev coefficients from values at :func:`chebyshev_nodes` along ``axis``.

    Exact for a polynomial of degree below the number of nodes (discrete orthogonality
    of the cosines). Returns as many coefficients as there are nodes.
    """
    values = np.moveaxis(np.asarray(values, dtype=np.float64), axis, 0)
    count = values.shape[0]
    angles = np.pi * np.outer(np.arange(count), np.arange(count) + 0.5) / count
    transform = 2.0 / count * np.cos(angles)
    transform[0] /= 2.0
    coefficients = np.tensordot(transform, values, axes=(1, 0))
    return np.moveaxis(coefficients, 0, axis)


def legendre_to_chebyshev(n: int) -> np.ndarray:
    """Matrix ``L`` of shape ``(n, n)`` with ``phi_j = sum_m L[j, m] T_m``."""
    values = orthonormal_legendre(chebyshev_nodes(n), n)
    return chebyshev_coefficients(values, axis=0).T


def antiderivative_matrix(degree: int) -> np.ndarray:
    """Matrix ``A`` of shape ``(degree + 1, degree + 2)`` mapping the Chebyshev
    coefficients of ``p`` to those of ``F(s) = integral of p from -1 to s``.
    """
    a = np.zeros((degree + 1, degree + 2))
    for m in range(degree + 1):
        if m == 0:
            a[0, 1] = 1.0
        elif m == 1:
            a[1, 0] = 0.25
            a[1, 2] = 0.25
        else:
            a[m, m + 1] = 1.0 / (2 * (m + 1))
            a[m, m - 1] = -1.0 / (2 * (m - 1))
    # Choose the constant so that F(-1) = 0, using T_k(-1) = (-1)^k.
    signs = (-1.0) ** np.arange(degree + 2)
    a[:, 0] -= a @ signs
    return a


def chebyshev_basis(s: Tensor, count: int) -> Tensor:
    """``T_m(s)`` for ``m < count``, shape ``(*s.shape, count)``; ``s`` is clamped to [-1, 1]."""
    theta = torch.arccos(s.clamp(-1.0, 1.0))
    degrees = torch.arange(count, dtype=s.dtype, device=s.device)
    return torch.cos(theta.unsqueeze(-1) * degrees)
