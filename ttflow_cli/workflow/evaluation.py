"""Evaluation of a fitted sampler on fresh samples, in memory that does not grow with their number.

One pass over a :class:`SampleStream` feeds every estimator chunk by chunk. They are ESS,
log Z and free energy with delta-method errors, the ELBO, self-normalized averages of
the target's observables, a Poisson bootstrap of all of them, the Pareto k of the
weight tail, and optionally an independent Metropolis-Hastings chain. Each estimator keeps
log-shifted sums, so the results depend on the batch size only through rounding.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ttflow_cli.errors import ConfigError, TTFlowError
from ttflow_cli.estimators import (
    UNRELIABLE_K,
    BootstrapErrors,
    ChainObservables,
    ChainSummary,
    ElboAccumulator,
    ImportanceEstimate,
    LogWeightAccumulator,
    ObservableEstimate,
    PoissonBootstrap,
    SelfNormalizedAccumulator,
    TopLogWeights,
    pareto_k,
    poisson_multiplicities,
    tail_length,
)
from ttflow_cli.flows.model import FlowSampler
from ttflow_cli.targets.base import Modes, Target
from ttflow_cli.workflow.sampling import Chunk, Purpose, SampleStream, stream_seed

logger = logging.getLogger(__name__)

DEFAULT_BOOTSTRAP_REPLICATES = 200
"""Poisson bootstrap replicates: the standard error of a standard error is then about 5 %."""

MIN_RELIABLE_ESS = 100.0
"""Below this ESS an error bar is itself too uncertain to mean anything."""

ERROR_AGREEMENT = 0.2
"""Relative difference of the bootstrap and delta-method errors of log Z above which both are flagged."""

MISSED_MODE_FRACTION = 0.25
"""A sampler whose share of samples in a mode is below this fraction of the mode's exact mass misses it."""


@dataclass(frozen=True)
class ModeShares:
    """Per mode: the sampler's own share of samples and the weighted estimate of the mode's mass.

    Attributes:
        names: the target's mode names.
        sampler_shares: average membership over the sampler's samples, unweighted.
            It shows where the sampler puts its samples, whatever the weights.
        estimates: importance-weighted averages of the memberships, which estimate
            each mode's mass under the target.
        exact: exact masses, or ``None`` where the target does not know them.
    """

    names: list[str]
    sampler_shares: list[float]
    estimates: list[ObservableEstimate]
    exact: list[float] | None

    def missed(self) -> list[str]:
        """Return the modes whose sampler share is below :data:`MISSED_MODE_FRACTION` of their exact mass."""
        if self.exact is None:
            return []
        return [name for name, share, mass in zip(self.names, self.sampler_shares, self.exact)
                if share < MISSED_MODE_FRACTION * mass]

    def to_dict(self) -> dict:
        """Return ``{name: {sampler_share, mean, err, exact, missed}}``; ``missed`` is null without exact masses."""
        exact = self.exact or [None] * len(self.names)
        missed = set(self.missed())
        return {
            name: {"sampler_share": share, "mean": estimate.mean, "err": estimate.err, "exact": mass,
                   "missed": (name in missed) if mass is not None else None}
            for name, share, estimate, mass in zip(self.names, self.sampler_shares, self.estimates, exact)
        }

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Evaluation:
    """Estimates from fresh samples, with exact values where the target provides them.

    Attributes:
        estimate: ESS, log Z and free energy with delta-method errors.
        elbo: ``mean(log_w)``, a lower bound on log Z.
        exact_log_z: the target's exact log Z, or ``None``.
        elbo_err: standard error of the ELBO, or ``None``.
        bootstrap: Poisson-bootstrap errors, or ``None`` when not requested.
        pareto_k: shape of the weight tail (see :mod:`ttflow_cli.estimators.pareto`),
            or ``None`` when it cannot be estimated.
        observables: self-normalized averages by name.
        exact_observables: exact averages of those observables where known.
        chain: independent Metropolis-Hastings summary, or ``None`` when not requested.
        free_energy_err_bootstrap: bootstrap error of log Z divided by ``beta``, or
            ``None`` without a bootstrap or ``beta``.
        beta: the target's inverse temperature, or ``None``.
        max_weight_fraction: the largest weight divided by the sum of all weights
            (``1 / N`` for equal weights), or ``None`` when unknown.
        modes: per-mode shares, or ``None`` when the target declares no modes.
    """

    estimate: ImportanceEstimate
    elbo: float
    exact_log_z: float | None
    elbo_err: float | None = None
    bootstrap: BootstrapErrors | None = None
    pareto_k: float | None = None
    observables: dict[str, ObservableEstimate] = field(default_factory=dict)
    exact_observables: dict[str, float] = field(default_factory=dict)
    chain: ChainSummary | None = None
    free_energy_err_bootstrap: float | None = None
    beta: float | None = None
    max_weight_fraction: float | None = None
    modes: ModeShares | None = None

    @property
    def log_z_err_bootstrap(self) -> float | None:
        """Bootstrap standard error of log Z, or ``None`` without a bootstrap."""
        return self.bootstrap.log_z_err if self.bootstrap is not None else None

    @property
    def exact_free_energy(self) -> float | None:
        """``-exact_log_z / beta``, or ``None`` when either is unknown."""
        if self.exact_log_z is None or self.beta is None:
            return None
        return -self.exact_log_z / self.beta

    def errors_disagree(self) -> bool:
        """Return whether the bootstrap error of log Z differs from the delta-method one by more than 20 %."""
        delta, bootstrap = self.estimate.log_z_err, self.log_z_err_bootstrap
        if bootstrap is None:
            return False
        return abs(bootstrap - delta) > ERROR_AGREEMENT * max(delta, bootstrap)

    def warnings(self) -> list[str]:
        """Return one sentence per reason not to trust the error bars."""
        messages = []
        estimate = self.estimate
        if estimate.ess < MIN_RELIABLE_ESS:
            messages.append(
                f"the ESS is {estimate.ess:.1f}, below {MIN_RELIABLE_ESS:.0f}: the error bars of log Z and of "
                "the observables are not reliable; draw more samples or improve the fit"
            )
        if self.pareto_k is not None and self.pareto_k > UNRELIABLE_K:
            share = "" if self.max_weight_fraction is None else (
                f" (the largest weight is {self.max_weight_fraction:.2g} of the sum of weights)")
            messages.append(
                f"Pareto k of the weight tail is {self.pareto_k:.2f}, above {UNRELIABLE_K}: the weights look "
                f"heavy-tailed, so larger weights than any drawn so far may exist and both error estimates "
                f"may understate the error{share}"
            )
        if self.errors_disagree():
            messages.append(
                f"the delta-method ({estimate.log_z_err:.3g}) and bootstrap ({self.log_z_err_bootstrap:.3g}) "
                f"errors of log Z differ by more than {ERROR_AGREEMENT:.0%}; quote the larger one"
            )
        missed = self.modes.missed() if self.modes is not None else []
        if missed:
            listed = ", ".join(missed[:3]) + (f" and {len(missed) - 3} more modes" if len(missed) > 3 else "")
            messages.append(
                f"the sampler puts less than {MISSED_MODE_FRACTION:.0%} of their exact mass on {listed}: "
                "importance weights cannot restore mass the sampler does not sample, so log Z and the "
                "observables are biased, and the error bars do not show it. With a Gaussian base, use "
                "flow.base: tt; for a target that declares a symmetry, tt.symmetrize: true; otherwise "
                "raise tt.max_rank or tt.nodes"
            )
        if self.chain is not None:
            unconverged = [name for name, item in self.chain.observables.items()
                           if item.tau_int is not None and not item.converged]
            if unconverged:
                messages.append(
                    f"the autocorrelation window did not converge for {', '.join(unconverged)}: "
                    "tau_int and the chain errors are underestimated"
                )
        return messages

    def to_dict(self) -> dict:
        """Return the JSON layout of ``ttflow evaluate --json``."""
        result = self.estimate.to_dict()
        result["elbo"] = self.elbo
        result["exact_log_z"] = self.exact_log_z
        result["elbo_err"] = self.elbo_err
        result["log_z_err_bootstrap"] = self.log_z_err_bootstrap
        result["free_energy_err_bootstrap"] = self.free_energy_err_bootstrap
        result["bootstrap_replicates"] = self.bootstrap.replicates if self.bootstrap is not None else 0
        result["pareto_k"] = self.pareto_k
        result["max_weight_fraction"] = self.max_weight_fraction
        result["observables"] = {name: item.to_dict() for name, item in self.observables.items()}
        result["mcmc"] = self.chain.to_dict() if self.chain is not None else None
        result["modes"] = self.modes.to_dict() if self.modes is not None else None
        result["exact"] = {
            "log_z": self.exact_log_z,
            "free_energy": self.exact_free_energy,
            "observables": dict(self.exact_observables),
        }
        result["warnings"] = self.warnings()
        return result


def select_observables(target: Target, names: Sequence[str] | None) -> list[str]:
    """Return the observables to report: ``names`` in order, or all that the target declares.

    Raises:
        ConfigError: a name is not one of the target's observables.
    """
    declared = list(target.observables())
    if names is None:
        return declared
    unknown = [name for name in names if name not in declared]
    if unknown:
        available = ", ".join(declared) if declared else "none"
        raise ConfigError(
            f"evaluate.observables: unknown observable {unknown[0]!r} for {type(target).__name__}; "
            f"available: {available}"
        )
    return list(dict.fromkeys(names))


def observable_values(target: Target, names: list[str], x: Tensor) -> Tensor:
    """Evaluate the named observables at ``x`` of shape ``(N, d)`` into an ``(N, K)`` float64 CPU tensor.

    Raises:
        TTFlowError: an observable returns a shape other than ``(N,)``.
    """
    functions = target.observables()
    columns = []
    for name in names:
        value = functions[name](x)
        if value.shape != (x.shape[0],):
            raise TTFlowError(
                f"observable {name!r} of {type(target).__name__} returned shape {tuple(value.shape)} "
                f"for {x.shape[0]} samples; expected ({x.shape[0]},)"
            )
        columns.append(value.detach().to(device="cpu", dtype=torch.float64))
    if not columns:
        return torch.zeros(x.shape[0], 0, dtype=torch.float64)
    return torch.stack(columns, dim=1)


class _Accumulators:
    """Every estimator of one evaluation, fed chunk by chunk."""

    def __init__(self, stream: SampleStream, names: list[str], samples: int, bootstrap: int, mcmc: bool,
                 target_modes: Modes | None) -> None:
        self.stream = stream
        self.weights = LogWeightAccumulator()
        self.elbo = ElboAccumulator()
        self.averages = SelfNormalizedAccumulator(names)
        self.top = TopLogWeights(tail_length(samples) + 1)
        self.bootstrap = PoissonBootstrap(bootstrap, names) if bootstrap else None
        self.chain = ChainObservables(names) if mcmc else None
        self.modes = target_modes
        if target_modes is not None:
            self.mode_sums = torch.zeros(len(target_modes.names), dtype=torch.float64)
            self.mode_averages = SelfNormalizedAccumulator(list(target_modes.names))

    def update(self, chunk: Chunk, log_w: Tensor, values: Tensor) -> None:
        if self.modes is not None:
            membership = self.modes.membership(chunk.x).detach().to(device="cpu", dtype=torch.float64)
            self.mode_sums += membership.sum(dim=0)
            self.mode_averages.update(log_w, membership)
        self.weights.update(log_w)
        self.elbo.update(log_w)
        self.averages.update(log_w, values)
        self.top.update(log_w)
        if self.bootstrap is None and self.chain is None:
            return
        log_w = log_w.detach().to(device="cpu", dtype=torch.float64)
        for block in chunk.blocks:
            rows = slice(block.start, block.stop)
            if self.bootstrap is not None:
                generator = self.stream.generator(block.index, Purpose.BOOTSTRAP)
                counts = poisson_multiplicities(self.bootstrap.replicates, block.size, generator)
                self.bootstrap.update(log_w[rows], values[rows], counts)
            if self.chain is not None:
                generator = self.stream.generator(block.index, Purpose.METROPOLIS)
                log_u = torch.log(torch.rand(block.size, generator=generator, dtype=torch.float64))
                self.chain.update(log_w[rows], log_u, values[rows])


def evaluate(sampler: FlowSampler, target: Target, samples: int, batch_size: int,
             generator: torch.Generator, *, observables: Sequence[str] | None = None,
             bootstrap: int = DEFAULT_BOOTSTRAP_REPLICATES, mcmc: bool = False,
             progress: Progress | None = None) -> Evaluation:
    """Draw ``samples`` fresh points and estimate everything in one pass.

    Args:
        sampler: the fitted sampler.
        target: its target.
        samples: number of fresh samples ``N >= 1``.
        batch_size: samples scored at once, rounded down to whole blocks of
            :data:`~ttflow_cli.workflow.sampling.BLOCK_SIZE` (at least one). It sets the
            memory, not the result.
        generator: one draw from it seeds the sample stream.
        observables: names to report; ``None`` reports all the target declares.
        bootstrap: Poisson bootstrap replicates; 0 turns the bootstrap off, else at least 2.
        mcmc: also run an independent Metropolis-Hastings chain over the same proposals.
        progress: called with the number of samples done after each chunk.

    Raises:
        ConfigError: an unknown observable name.
        NumericalError: a non-finite log weight or observable, or no sample of positive weight.
    """
    if samples < 1:
        raise ValueError(f"samples must be a positive integer; got {samples}")
    names = select_observables(target, observables)
    stream = SampleStream(sampler, stream_seed(generator))
    state = _Accumulators(stream, names, samples, bootstrap, mcmc, target.modes())
    done = 0
    for chunk in stream.chunks(samples, batch_size):
        log_w = target.log_prob(chunk.x) - chunk.log_q
        state.update(chunk, log_w, observable_values(target, names, chunk.x))
        done += chunk.x.shape[0]
        logger.debug("evaluated %d of %d samples", done, samples)
        if progress is not None:
            progress(done)

    elbo, elbo_err = state.elbo.estimate()
    errors = state.bootstrap.errors() if state.bootstrap is not None else None
    exact = target.exact_observables()
    beta = target.beta
    estimate = state.weights.estimate(beta)
    top = state.top.values
    # sum w = N exp(log Z), so the largest weight's share is exp(max log_w - log Z - log N).
    max_weight_fraction = math.exp(float(top[0]) - estimate.log_z - math.log(samples))
    return Evaluation(
        estimate=estimate,
        elbo=elbo,
        exact_log_z=target.exact_log_z(),
        elbo_err=elbo_err,
        bootstrap=errors,
        pareto_k=pareto_k(top, samples),
        observables=_with_bootstrap(state.averages.estimates(), errors),
        exact_observables={name: exact[name] for name in names if name in exact},
        chain=state.chain.summary() if state.chain is not None else None,
        free_energy_err_bootstrap=errors.log_z_err / beta if errors is not None and beta is not None else None,
        beta=beta,
        max_weight_fraction=max_weight_fraction,
        modes=_mode_shares(state, samples),
    )


def _mode_shares(state: _Accumulators, samples: int) -> ModeShares | None:
    if state.modes is None:
        return None
    estimates = state.mode_averages.estimates()
    return ModeShares(
        names=list(state.modes.names),
        sampler_shares=(state.mode_sums / samples).tolist(),
        estimates=[estimates[name] for name in state.modes.names],
        exact=list(state.modes.exact) if state.modes.exact is not None else None,
    )


def _with_bootstrap(estimates: dict[str, ObservableEstimate],
                    errors: BootstrapErrors | None) -> dict[str, ObservableEstimate]:
    if errors is None:
        return estimates
    return {
        name: ObservableEstimate(item.mean, item.err, errors.observable_errs[name])
        for name, item in estimates.items()
    }
