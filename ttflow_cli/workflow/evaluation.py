"""Importance-sampling evaluation of a sampler against its target, in bounded memory."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ttflow_cli.estimators import ImportanceEstimate, LogWeightAccumulator
from ttflow_cli.flows.model import FlowSampler
from ttflow_cli.targets.base import Target


@dataclass(frozen=True)
class Evaluation:
    """Estimates from ``n`` fresh samples, with the exact log Z where the target knows it."""

    estimate: ImportanceEstimate
    elbo: float
    exact_log_z: float | None

    def to_dict(self) -> dict:
        """The JSON layout of ``ttflow evaluate --json``."""
        result = self.estimate.to_dict()
        result["elbo"] = self.elbo
        result["exact_log_z"] = self.exact_log_z
        return result


def evaluate(sampler: FlowSampler, target: Target, samples: int, batch_size: int,
             generator: torch.Generator) -> Evaluation:
    """Draw ``samples`` points in batches and accumulate ESS, log Z and the ELBO.

    Only one batch is held in memory; the log-sum-exp accumulation makes the result
    independent of ``batch_size`` up to rounding.
    """
    accumulator = LogWeightAccumulator()
    log_w_total = 0.0
    for x, log_q in sampler.sample_batches(samples, batch_size, generator):
        log_w = target.log_prob(x) - log_q
        accumulator.update(log_w)
        log_w_total += float(log_w.double().sum())
    estimate = accumulator.estimate(target.beta)
    return Evaluation(estimate=estimate, elbo=log_w_total / samples, exact_log_z=target.exact_log_z())
