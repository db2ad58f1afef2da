r"""Independent Metropolis-Hastings with the model as proposal, run chunk by chunk.

Proposals ``x' ~ q`` are independent of the current state ``x``, and the normalized
target ``p = p~ / Z`` is left invariant by accepting ``x'`` with probability

.. math::

    \alpha(x \to x') = \min\Big(1, \frac{w(x')}{w(x)}\Big), \qquad w = \tilde p / q,

so only importance weights enter and ``Z`` cancels. The chain starts at the first
proposal: it is a draw from ``q``, which is already close to the target for a fitted
sampler, so no burn-in is discarded. When ``p / q`` is bounded by ``W``, the chain is
uniformly ergodic with rate ``1 - 1/W`` (Mengersen and Tweedie). A chain that sticks
for long stretches after one very large weight shows that ``p / q`` is not bounded
in practice, and its ``tau_int`` is then large.

References:
    Tierney, "Markov chains for exploring posterior distributions", Annals of
    Statistics 22 (1994) 1701-1728.
    Mengersen and Tweedie, "Rates of convergence of the Hastings and Metropolis
    algorithms", Annals of Statistics 24 (1996) 101-121.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ttflow_cli.estimators.autocorrelation import MAX_LAG, AutocovarianceAccumulator
from ttflow_cli.estimators.observables import check_observable_values

PREVIOUS_STATE = -1
"""Index returned for steps that stay at the state reached before the current chunk."""


class IndependenceChain:
    """The state of an independent Metropolis-Hastings chain, advanced one chunk at a time.

    Attributes:
        steps: chain length so far; the first proposal is step 0.
        accepted: accepted proposals among the ``steps - 1`` transitions.
    """

    def __init__(self) -> None:
        self.steps = 0
        self.accepted = 0
        self._current_log_w = -math.inf

    @property
    def acceptance(self) -> float | None:
        """Fraction of accepted transitions, or ``None`` before the first transition."""
        transitions = self.steps - 1
        return self.accepted / transitions if transitions > 0 else None

    def advance(self, log_w: Tensor, log_u: Tensor) -> np.ndarray:
        """Run the chain over a chunk of proposals and return the state after each step.

        Args:
            log_w: importance log weights of the proposals, shape ``(N,)``.
            log_u: logs of independent ``U(0, 1)`` draws, one per proposal, shape ``(N,)``.

        Returns:
            int64 array of shape ``(N,)``: entry ``i`` is the index, within this chunk,
            of the state after step ``i``, or ``PREVIOUS_STATE`` while the chain is
            still at a state from an earlier chunk.
        """
        if log_w.shape != log_u.shape or log_w.ndim != 1:
            raise ValueError(f"expected log_w and log_u of the same shape (N,); got {tuple(log_w.shape)} and {tuple(log_u.shape)}")
        proposals = log_w.detach().cpu().double().tolist()
        thresholds = log_u.detach().cpu().double().tolist()
        states = np.empty(len(proposals), dtype=np.int64)

        # A plain loop: each step depends on the previous acceptance, and Python floats
        # make it about 0.2 s per million steps, far below the cost of drawing proposals.
        current = self._current_log_w
        state = PREVIOUS_STATE
        accepted = 0
        first = self.steps == 0
        for i, candidate in enumerate(proposals):
            if first:
                accept, first = True, False
            elif candidate == -math.inf:
                accept = False  # zero target density: never accepted
            elif current == -math.inf:
                accept = True  # leave a start of zero density at once
                accepted += 1
            else:
                accept = thresholds[i] < candidate - current
                accepted += accept
            if accept:
                current, state = candidate, i
            states[i] = state

        self._current_log_w = current
        self.steps += len(proposals)
        self.accepted += accepted
        return states


def chain_rows(states: np.ndarray, chunk_values: Tensor, previous_row: Tensor | None) -> Tensor:
    """Gather the rows of the chain states from a chunk of proposals.

    Args:
        states: output of :meth:`IndependenceChain.advance` for the chunk.
        chunk_values: per-proposal values, shape ``(N, ...)``.
        previous_row: value of the state before the chunk, shape ``(...)``, or ``None``
            when the chain starts in this chunk.

    Returns:
        Values of the chain after every step, shape ``(N, ...)``.
    """
    if previous_row is None:
        if states.size and states[0] == PREVIOUS_STATE:
            raise ValueError("the chain starts in this chunk, so no step can stay at a previous state")
        stacked = chunk_values
        index = torch.from_numpy(states)
    else:
        stacked = torch.cat([previous_row.unsqueeze(0).to(chunk_values), chunk_values])
        index = torch.from_numpy(states + 1)
    return stacked[index.to(stacked.device)]


@dataclass(frozen=True)
class ChainObservable:
    """Average of one observable along the chain.

    Attributes:
        mean: chain average.
        err: ``sqrt(tau_int Var / N)``, or ``None`` when ``tau_int`` is undefined.
        tau_int: integrated autocorrelation time, or ``None`` for a constant series.
        converged: whether Sokal's window was reached within ``MAX_LAG``; when false,
            ``tau_int`` and ``err`` are likely too small.
    """

    mean: float
    err: float | None
    tau_int: float | None
    converged: bool

    def to_dict(self) -> dict[str, float | bool | None]:
        """Return ``{mean, err, tau_int, converged}``."""
        return {"mean": self.mean, "err": self.err, "tau_int": self.tau_int, "converged": self.converged}


@dataclass(frozen=True)
class ChainSummary:
    """Acceptance and observable statistics of an independent Metropolis-Hastings chain."""

    steps: int
    acceptance: float | None
    observables: dict[str, ChainObservable]

    def to_dict(self) -> dict:
        """Return ``{steps, acceptance, tau_int: {name: tau}, observables: {name: {...}}}``."""
        return {
            "steps": self.steps,
            "acceptance": self.acceptance,
            "tau_int": {name: item.tau_int for name, item in self.observables.items()},
            "observables": {name: item.to_dict() for name, item in self.observables.items()},
        }


class ChainObservables:
    """Run an independent Metropolis-Hastings chain and accumulate observables along it.

    Memory is bounded by :data:`MAX_LAG` per observable, whatever the chain length.
    """

    def __init__(self, names: list[str], max_lag: int = MAX_LAG) -> None:
        self.names = list(names)
        self.chain = IndependenceChain()
        self._series = AutocovarianceAccumulator(len(self.names), max_lag) if self.names else None
        self._current: Tensor | None = None

    def update(self, log_w: Tensor, log_u: Tensor, values: Tensor) -> np.ndarray:
        """Advance the chain over proposals with log weights ``(N,)`` and observables ``(N, K)``.

        Returns:
            The chain states, as from :meth:`IndependenceChain.advance`.
        """
        states = self.chain.advance(log_w, log_u)
        # Only a chain that starts at a zero-density proposal visits one. Its
        # observables count as 0 for that one step instead of a possible NaN.
        values = check_observable_values(self.names, values.detach().cpu(), log_w.detach().cpu())
        rows = chain_rows(states, values, self._current)
        if rows.shape[0]:
            self._current = rows[-1].clone()
        if self._series is not None:
            self._series.update(rows.numpy())
        return states

    def summary(self) -> ChainSummary:
        """Return the acceptance rate and, per observable, the chain average, error and ``tau_int``."""
        observables: dict[str, ChainObservable] = {}
        if self._series is not None and self._series.n:
            means = self._series.means()
            for name, mean, time in zip(self.names, means, self._series.times()):
                if time is None:
                    observables[name] = ChainObservable(float(mean), None, None, False)
                    continue
                err = math.sqrt(time.tau_int * time.variance / self._series.n)
                observables[name] = ChainObservable(float(mean), err, time.tau_int, time.converged)
        return ChainSummary(steps=self.chain.steps, acceptance=self.chain.acceptance, observables=observables)
