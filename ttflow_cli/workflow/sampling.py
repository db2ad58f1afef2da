"""Fresh samples from a fitted sampler as a stream whose values do not depend on the chunk size.

Samples are drawn in consecutive blocks of ``BLOCK_SIZE``. Block ``k`` comes from its own
generator, seeded from ``(seed, k)``, so sample ``i`` is the same whether the caller
processes 1,000 or 1,000,000 samples at a time. Other per-sample random numbers (bootstrap
multiplicities, Metropolis-Hastings uniforms) are drawn per block in the same way, from
``(seed, k, purpose)``. Chunk-invariant estimators on top of this stream then give the
same result, up to rounding, for every batch size.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ttflow_cli.flows.model import FlowSampler

BLOCK_SIZE = 4096
"""Samples per seeded block. Changing it changes which samples a seed gives."""


class Purpose(enum.IntEnum):
    """Purpose of a block generator's random numbers, mixed into its seed."""

    DRAW = 0
    BOOTSTRAP = 1
    METROPOLIS = 2


@dataclass(frozen=True)
class Block:
    """One seeded block inside a chunk: its global index and its rows ``start:stop`` in the chunk."""

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Chunk:
    """Consecutive samples ``x`` of shape ``(N, d)`` with ``log q(x)`` of shape ``(N,)``."""

    x: Tensor
    log_q: Tensor
    blocks: tuple[Block, ...]


def stream_seed(generator: torch.Generator) -> int:
    """Draw a 62-bit stream seed from ``generator``, so that a seeded caller stays reproducible."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))


class SampleStream:
    """Fresh samples of ``sampler`` in seeded blocks, grouped into chunks of whole blocks.

    Args:
        sampler: the fitted sampler.
        seed: non-negative integer that fixes every sample and per-block random number.
    """

    def __init__(self, sampler: FlowSampler, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"the stream seed must be a non-negative integer; got {seed}")
        self.sampler = sampler
        self.seed = seed

    def generator(self, block: int, purpose: Purpose, device: torch.device | str = "cpu") -> torch.Generator:
        """Return a generator on ``device`` seeded from ``(seed, block, purpose)``."""
        state = np.random.SeedSequence([self.seed, block, int(purpose)]).generate_state(1, dtype=np.uint64)
        return torch.Generator(device=device).manual_seed(int(state[0]))

    def chunks(self, count: int, batch_size: int) -> Iterator[Chunk]:
        """Yield ``count`` samples in chunks of ``max(1, batch_size // BLOCK_SIZE)`` blocks.

        Each block is drawn by one call of the sampler, so a block bounds the memory
        of the drawing and a chunk that of the caller's scoring.
        """
        if count < 0 or batch_size < 1:
            raise ValueError(f"expected count >= 0 and batch_size >= 1; got {count} and {batch_size}")
        blocks_per_chunk = max(1, batch_size // BLOCK_SIZE)
        block_count = -(-count // BLOCK_SIZE)
        for first in range(0, block_count, blocks_per_chunk):
            indices = range(first, min(first + blocks_per_chunk, block_count))
            yield self._draw_chunk(indices, count)

    def _draw_chunk(self, indices: range, count: int) -> Chunk:
        xs, log_qs, blocks = [], [], []
        start = 0
        with torch.no_grad():
            for index in indices:
                size = min(BLOCK_SIZE, count - index * BLOCK_SIZE)
                generator = self.generator(index, Purpose.DRAW, self.sampler.device)
                x, log_q = self.sampler.sample(size, generator)
                xs.append(x)
                log_qs.append(log_q)
                blocks.append(Block(index, start, start + size))
                start += size
        return Chunk(torch.cat(xs), torch.cat(log_qs), tuple(blocks))
