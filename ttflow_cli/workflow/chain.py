"""An unweighted chain of target samples: independent Metropolis-Hastings with the fitted sampler as proposal."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ttflow_cli.estimators import ChainObservables, ChainSummary
from ttflow_cli.estimators.mcmc import chain_rows
from ttflow_cli.flows.model import FlowSampler
from ttflow_cli.targets.base import Target
from ttflow_cli.workflow.evaluation import observable_values, select_observables
from ttflow_cli.workflow.sampling import Purpose, SampleStream, stream_seed


@dataclass(frozen=True)
class Chain:
    """The states of a chain and its summary.

    Attributes:
        arrays: ``x`` of shape ``(N, d)`` and ``log_q``, ``log_p``, ``log_w`` and
            ``accepted`` of shape ``(N,)``, one row per step. A rejected step repeats
            the previous state. ``accepted`` is true where a step moved to a new state,
            and at step 0.
        summary: acceptance rate and the ``tau_int`` of each observable.
    """

    arrays: dict[str, np.ndarray]
    summary: ChainSummary


def draw_chain(sampler: FlowSampler, target: Target, count: int, batch_size: int,
               generator: torch.Generator, observables: Sequence[str] | None = None) -> Chain:
    """Run ``count`` steps of independent Metropolis-Hastings with ``sampler`` as proposal.

    The proposals and uniforms come from a :class:`SampleStream` seeded by one draw from
    ``generator``, so the chain does not depend on ``batch_size``. The states are
    returned in memory: ``count`` rows of ``d + 4`` numbers.

    Raises:
        ConfigError: an unknown observable name.
        NumericalError: a NaN or ``+inf`` log weight, or a non-finite observable.
    """
    names = select_observables(target, observables)
    stream = SampleStream(sampler, stream_seed(generator))
    tracker = ChainObservables(names)
    columns: dict[str, list[Tensor]] = {"x": [], "log_q": [], "log_p": [], "log_w": [], "accepted": []}
    previous: dict[str, Tensor] | None = None
    for chunk in stream.chunks(count, batch_size):
        log_p = target.log_prob(chunk.x)
        proposal = {"x": chunk.x, "log_q": chunk.log_q, "log_p": log_p, "log_w": log_p - chunk.log_q}
        proposal = {name: value.detach().cpu() for name, value in proposal.items()}
        values = observable_values(target, names, chunk.x)
        for block in chunk.blocks:
            rows = slice(block.start, block.stop)
            uniforms = torch.rand(block.size, generator=stream.generator(block.index, Purpose.METROPOLIS),
                                  dtype=torch.float64)
            states = tracker.update(proposal["log_w"][rows], torch.log(uniforms), values[rows])
            for name, value in proposal.items():
                columns[name].append(chain_rows(states, value[rows], previous[name] if previous else None))
            columns["accepted"].append(torch.from_numpy(states == np.arange(block.size)))
            previous = {name: columns[name][-1][-1] for name in proposal}
    arrays = {name: torch.cat(parts).numpy() for name, parts in columns.items()}
    return Chain(arrays=arrays, summary=tracker.summary())
