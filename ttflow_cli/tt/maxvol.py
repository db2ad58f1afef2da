"""Maximum-volume row selection for cross approximation."""

from __future__ import annotations

import torch
from torch import Tensor


def maxvol(a: Tensor, tolerance: float = 1.05, max_iterations: int = 200) -> Tensor:
    """Select ``r`` rows of a tall matrix whose square submatrix has nearly maximal volume.

    Starts from the pivots of an LU factorization and swaps rows until every entry of
    ``a @ inv(a[rows])`` is at most ``tolerance`` in absolute value.

    Args:
        a: matrix of shape ``(m, r)`` with ``m >= r`` and full column rank.
        tolerance: stopping threshold, at least 1.
        max_iterations: maximum number of row swaps.

    Returns:
        Row indices, shape ``(r,)``, int64.

    References:
        Goreinov, Oseledets, Savostyanov, Tyrtyshnikov, Zamarashkin, "How to find a good
        submatrix", in Matrix Methods: Theory, Algorithms and Applications (2010).
    """
    m, r = a.shape
    if m < r:
        raise ValueError(f"maxvol needs at least as many rows as columns; got shape {(m, r)}")
    if m == r:
        return torch.arange(m, device=a.device)

    permutation, _, _ = torch.linalg.lu(a)
    rows = permutation.argmax(dim=0)[:r]
    coefficients = torch.linalg.solve(a[rows].T, a.T).T

    for _ in range(max_iterations):
        flat = coefficients.abs().argmax()
        i, j = divmod(int(flat), r)
        pivot = coefficients[i, j]
        if pivot.abs() <= tolerance:
            break
        rows[j] = i
        row = coefficients[i].clone()
        row[j] -= 1.0
        coefficients -= torch.outer(coefficients[:, j] / pivot, row)
    return rows
