"""Operations on lists of TT cores: orthogonalization, rounding, norms.

A core has shape ``(r_{k-1}, n, r_k)`` with ``r_0 = r_d = 1``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def right_orthogonalize(cores: list[Tensor], normalize: bool = False) -> list[Tensor]:
    """Return cores 2..d right-orthonormal, with the whole norm moved into core 1.

    Right-orthonormal means ``sum_{j,b} C[a, j, b] C[a', j, b] = delta_{a a'}``.
    With ``normalize`` the carried factor is rescaled at every step, so the result
    has unit norm: the norm of a product of hundreds of cores can overflow.
    """
    cores = list(cores)
    for k in range(len(cores) - 1, 0, -1):
        r0, n, r1 = cores[k].shape
        q, r = torch.linalg.qr(cores[k].reshape(r0, n * r1).T)
        if normalize:
            r = _unit(r)
        cores[k] = q.T.reshape(-1, n, r1)
        cores[k - 1] = torch.einsum("anb,cb->anc", cores[k - 1], r)
    return cores


def _unit(matrix: Tensor) -> Tensor:
    """``matrix`` scaled to unit Frobenius norm; a zero matrix stays zero."""
    norm = torch.linalg.norm(matrix)
    return matrix / norm if norm > 0 else matrix


def _truncation_rank(singular_values: Tensor, threshold: float, max_rank: int) -> int:
    """Smallest rank whose discarded tail has Frobenius norm at most ``threshold``."""
    tails = torch.cumsum(singular_values.flip(0) ** 2, 0).flip(0).sqrt()
    rank = int((tails > threshold).sum())
    return max(1, min(rank, max_rank))


def round_cores(cores: list[Tensor], tolerance: float, max_rank: int, normalize: bool = False) -> list[Tensor]:
    """TT-SVD rounding to a relative Frobenius tolerance and a maximum rank.

    Returns right-orthonormal cores 2..d (the norm stays in core 1, or is 1 with
    ``normalize``).

    References:
        Oseledets, "Tensor-train decomposition", SIAM J. Sci. Comput. 33 (2011).
    """
    cores = right_orthogonalize(cores, normalize)
    d = len(cores)
    norm = float(torch.linalg.norm(cores[0]))
    threshold = tolerance * norm / max(d - 1, 1) ** 0.5
    for k in range(d - 1):
        r0, n, r1 = cores[k].shape
        u, s, vh = torch.linalg.svd(cores[k].reshape(r0 * n, r1), full_matrices=False)
        rank = _truncation_rank(s, threshold, max_rank)
        cores[k] = u[:, :rank].reshape(r0, n, rank)
        carry = s[:rank, None] * vh[:rank]
        if normalize:
            carry = _unit(carry)
        cores[k + 1] = torch.einsum("ab,bnc->anc", carry, cores[k + 1])
    return right_orthogonalize(cores, normalize)


def ranks(cores: list[Tensor]) -> list[int]:
    """TT ranks ``[r_0, r_1, ..., r_d]``."""
    return [cores[0].shape[0]] + [core.shape[2] for core in cores]
