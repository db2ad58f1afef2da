"""Variational fine-tuning of the flow by reverse Kullback-Leibler divergence.

.. math::

    L = \\mathbb{E}_{z \\sim q_0}\\big[\\log q_0(z) - \\log|\\det \\partial T/\\partial z|
        - \\log \\tilde p(T(z))\\big] = \\mathrm{KL}(q \\,\\|\\, p) - \\log Z,

estimated with fresh base samples every step, so ``-L`` is the ELBO, a lower bound on
``log Z``; ``L`` can be negative.

The default ``gradient="path"`` estimator differentiates ``log q`` only through the
sample ``x = T(z)``, not through the flow parameters at fixed ``x``. The dropped
term has expectation zero, and the remaining estimator has zero variance when
``q = p``. This matters on top of a good TT base, where the plain reparameterized
gradient ("total") is mostly noise and Adam would follow it away from the base.
Reference: Roeder, Wu, Duvenaud, "Sticking the landing: simple, lower-variance
gradient estimators for variational inference", NeurIPS 2017, arXiv:1703.09194.

``objective="forward_kl"`` minimizes ``KL(p || q)`` instead, with self-normalized
importance weights on the sampler's own points. It ignores points where ``q``
puts mass but ``p`` has none, because their weights vanish, and needs a base whose
weights are already informative (a good TT).

With annealing, the first ``anneal_steps`` steps fit the tempered target
``p~^tau`` instead, with ``tau`` rising geometrically from ``anneal_start`` to 1:
a flat early target lets a flow on a narrow base spread out before the modes sharpen.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from ttflow_cli.errors import NumericalError
from ttflow_cli.estimators import estimate_from_log_weights
from ttflow_cli.flows.model import FlowSampler

logger = logging.getLogger(__name__)

LogDensity = Callable[[Tensor], Tensor]
Progress = Callable[[int, dict[str, float]], None]

OBJECTIVES = ("reverse_kl", "forward_kl")
"""``reverse_kl``: ``KL(q || p)`` by reparameterization; ``forward_kl``: ``KL(p || q)``
by self-normalized importance weights on the sampler's own points."""

GRADIENT_ESTIMATORS = ("path", "total")
"""``path``: path derivative of ``log q`` (sticking the landing); ``total``: the plain
reparameterized gradient."""


@dataclass(frozen=True)
class TrainSettings:
    """Budget and guards of one training run (the ``train`` section of a spec)."""

    steps: int = 1000
    batch_size: int = 512
    learning_rate: float = 1e-3
    clip_norm: float = 10.0
    eval_every: int = 100
    eval_samples: int = 4096
    patience: int = 5
    anneal_steps: int = 0
    anneal_start: float = 0.1
    gradient: str = "path"
    objective: str = "reverse_kl"

    def __post_init__(self) -> None:
        if self.gradient not in GRADIENT_ESTIMATORS:
            raise ValueError(
                f"gradient must be one of {', '.join(GRADIENT_ESTIMATORS)}; got {self.gradient!r}"
            )
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}; got {self.objective!r}")

    def inverse_temperature(self, step: int) -> float:
        """Exponent ``tau`` of the tempered target ``p~^tau`` at ``step`` (1-based)."""
        if step > self.anneal_steps:
            return 1.0
        return self.anneal_start ** (1.0 - (step - 1) / self.anneal_steps)


@dataclass
class TrainResult:
    """History and outcome of training. On return the flow has the best weights.

    ``history`` has one entry per step: ``step``, ``loss`` (NaN for a skipped step),
    ``elbo`` of the training batch against the untempered target, ``learning_rate``,
    ``inverse_temperature`` and the running count ``skipped``. ``validation`` has one
    entry per held-out estimate: ``step``, ``ess_fraction``, ``elbo`` and ``log_z``.
    """

    stop_reason: str
    steps: int
    best_step: int
    best_ess_fraction: float
    skipped_steps: int
    seconds: float
    target_evaluations: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    validation: dict[str, list[float]] = field(default_factory=dict)
    optimizer_state: dict = field(default_factory=dict)

    def history_arrays(self) -> dict[str, np.ndarray]:
        """Per-step and per-validation columns for the run file."""
        arrays = {name: np.asarray(values) for name, values in self.history.items()}
        arrays.update({f"validation_{name}": np.asarray(values) for name, values in self.validation.items()})
        return arrays


def train_reverse_kl(sampler: FlowSampler, log_prob: LogDensity, settings: TrainSettings,
                     generator: torch.Generator, progress: Progress | None = None) -> TrainResult:
    """Fit ``sampler.flow`` by Adam on ``settings.objective``, with the guards real runs need.

    A step whose loss or gradient is not finite is skipped and counted, and gradients
    are clipped to ``clip_norm``. Every ``eval_every`` steps the ESS fraction of
    ``eval_samples`` fresh samples is measured against the untempered target and the
    best weights are kept. Training stops after ``patience`` validations without
    improvement, counted only once annealing has ended. The learning rate follows a
    cosine decay to 5% of its start over ``steps``.

    Raises:
        ValueError: the sampler has no flow.
        NumericalError: every step was skipped.
    """
    flow = sampler.flow
    if flow is None:
        raise ValueError("the sampler has no flow to train")
    counted = _CountingLogDensity(log_prob)
    optimizer = torch.optim.Adam(flow.parameters(), lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=max(settings.steps, 1), eta_min=0.05 * settings.learning_rate
    )
    history: dict[str, list[float]] = {
        "step": [], "loss": [], "elbo": [], "learning_rate": [], "inverse_temperature": [], "skipped": [],
    }
    validation: dict[str, list[float]] = {"step": [], "ess_fraction": [], "elbo": [], "log_z": []}
    best_score = _validate(sampler, counted, settings, generator, validation, step=0)
    best_state, best_step = copy.deepcopy(flow.state_dict()), 0
    stale, skipped, stop_reason, step = 0, 0, "steps", 0
    start = time.perf_counter()

    for step in range(1, settings.steps + 1):
        inverse_temperature = settings.inverse_temperature(step)
        outcome = _step(sampler, counted, optimizer, settings, generator, inverse_temperature)
        skipped += outcome is None
        if outcome is not None:
            schedule.step()
        loss, elbo = outcome if outcome is not None else (math.nan, math.nan)
        history["step"].append(step)
        history["loss"].append(loss)
        history["elbo"].append(elbo)
        history["learning_rate"].append(optimizer.param_groups[0]["lr"])
        history["inverse_temperature"].append(inverse_temperature)
        history["skipped"].append(skipped)
        if step % settings.eval_every and step != settings.steps:
            continue
        score = _validate(sampler, counted, settings, generator, validation, step)
        if progress is not None:
            progress(step, {"loss": loss, "ess_fraction": score})
        if score > best_score:
            best_score, best_state, best_step, stale = score, copy.deepcopy(flow.state_dict()), step, 0
        elif step > settings.anneal_steps:
            stale += 1
        if settings.patience and stale >= settings.patience:
            stop_reason = "no improvement"
            break

    if skipped == step and step > 0:
        raise NumericalError(
            f"every one of {step} training steps had a non-finite loss or gradient; "
            "lower train.learning_rate or check the target's log_prob"
        )
    flow.load_state_dict(best_state)
    return TrainResult(
        stop_reason=stop_reason, steps=step, best_step=best_step, best_ess_fraction=best_score,
        skipped_steps=skipped, seconds=time.perf_counter() - start,
        target_evaluations=counted.evaluations, history=history,
        validation=validation, optimizer_state=optimizer.state_dict(),
    )


class _CountingLogDensity:
    """``log_prob`` wrapper that counts the points it scores."""

    def __init__(self, log_prob: LogDensity):
        self.log_prob = log_prob
        self.evaluations = 0

    def __call__(self, x: Tensor) -> Tensor:
        self.evaluations += x.shape[0]
        return self.log_prob(x)


def _step(sampler: FlowSampler, log_prob: LogDensity, optimizer: torch.optim.Optimizer,
          settings: TrainSettings, generator: torch.Generator,
          inverse_temperature: float) -> tuple[float, float] | None:
    """One optimizer step; returns ``(loss, elbo)``, or ``None`` when the step was skipped."""
    optimizer.zero_grad(set_to_none=True)
    objective = _forward_kl if settings.objective == "forward_kl" else _reverse_kl
    loss, elbo = objective(sampler, log_prob, settings, generator, inverse_temperature)
    if not torch.isfinite(loss):
        return None
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(sampler.flow.parameters(), settings.clip_norm)
    if not torch.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        return None
    optimizer.step()
    return float(loss.detach()), elbo


def _reverse_kl(sampler: FlowSampler, log_prob: LogDensity, settings: TrainSettings,
                generator: torch.Generator, inverse_temperature: float) -> tuple[Tensor, float]:
    """Tempered reverse-KL loss ``mean(log q - tau log p~)`` and the batch ELBO."""
    if settings.gradient == "path":
        x, log_q = _sample_path_gradient(sampler, settings.batch_size, generator)
    else:
        x, log_q = sampler.sample(settings.batch_size, generator)
    log_p = log_prob(x)
    loss = (log_q - inverse_temperature * log_p).mean()
    return loss, float((log_p - log_q).detach().mean())


def _forward_kl(sampler: FlowSampler, log_prob: LogDensity, settings: TrainSettings,
                generator: torch.Generator, inverse_temperature: float) -> tuple[Tensor, float]:
    """Importance-weighted forward-KL loss ``-sum_i wbar_i log q(x_i)`` and the batch ELBO.

    The points ``x_i ~ q`` are held fixed and ``wbar`` are their self-normalized
    weights ``p~^tau / q``, so the gradient estimates that of ``KL(p || q)``.
    """
    with torch.no_grad():
        z, _ = sampler.base.sample(settings.batch_size, generator, dtype=sampler.dtype, device=sampler.device)
        t, _ = sampler.flow(z)
    z_back, ladj_inverse = sampler.flow.inverse(t)
    log_q = sampler.base.log_prob(z_back) + ladj_inverse - sampler.box.log_jacobian
    log_p = log_prob(sampler.box.to_x(t))
    weights = torch.softmax((inverse_temperature * log_p - log_q).detach(), dim=0)
    loss = -(weights * log_q).sum()
    return loss, float((log_p - log_q).detach().mean())


class _Inverse(nn.Module):
    """Module whose forward is ``flow.inverse``, so that ``functional_call`` can run it."""

    def __init__(self, flow: nn.Module):
        super().__init__()
        self.flow = flow

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.flow.inverse(x)


def _sample_path_gradient(sampler: FlowSampler, count: int,
                          generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Draw ``(x, log q(x))`` where ``log q`` depends on the parameters only through ``x``.

    ``log q(x) = log q0(T^{-1}(x)) + log|det dT^{-1}/dx|`` is evaluated with detached
    copies of the flow parameters, so its gradient is the path derivative. The base's
    ``log_prob`` must be differentiable in its input.
    """
    flow = sampler.flow
    with torch.no_grad():
        z, _ = sampler.base.sample(count, generator, dtype=sampler.dtype, device=sampler.device)
    t, _ = flow(z)
    detached = {f"flow.{name}": value.detach() for name, value in flow.named_parameters()}
    z_back, ladj_inverse = torch.func.functional_call(_Inverse(flow), detached, (t,))
    log_q_t = sampler.base.log_prob(z_back) + ladj_inverse
    return sampler.box.to_x(t), log_q_t - sampler.box.log_jacobian


def _validate(sampler: FlowSampler, log_prob: LogDensity, settings: TrainSettings,
              generator: torch.Generator, validation: dict[str, list[float]], step: int) -> float:
    """Held-out ESS fraction on fresh samples; appends to ``validation``."""
    with torch.no_grad():
        x, log_q = sampler.sample(settings.eval_samples, generator)
        log_w = log_prob(x) - log_q
    try:
        estimate = estimate_from_log_weights(log_w)
    except NumericalError:
        logger.warning("held-out weights at step %d were not finite; scored as ESS 0", step)
        estimate = None
    finite = log_w[torch.isfinite(log_w)]
    validation["step"].append(step)
    validation["ess_fraction"].append(estimate.ess_fraction if estimate else 0.0)
    validation["elbo"].append(float(finite.mean()) if finite.numel() else -math.inf)
    validation["log_z"].append(estimate.log_z if estimate else math.nan)
    return estimate.ess_fraction if estimate else 0.0
