"""Tests of reverse-KL flow training on a TT base: history, best weights and the
guards against non-finite losses, in float64."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch

from ttflow_cli.errors import NumericalError
from ttflow_cli.flows import build_flow
from ttflow_cli.flows.model import FlowSampler
from ttflow_cli.train import TrainResult, TrainSettings, train_reverse_kl
from ttflow_cli.tt.box import Box
from ttflow_cli.tt.cross import CrossBudget, cross_approximate
from ttflow_cli.tt.defensive import DefensiveTT

DIM = 2
BOX = [(-5.0, 5.0)] * DIM
# Precision matrix of a correlated Gaussian target, whose mass lies well inside BOX.
PRECISION = torch.tensor([[1.0, 0.6], [0.6, 2.0]], dtype=torch.float64)
STEPS = 30
EVAL_EVERY = 10
SETTINGS = TrainSettings(steps=STEPS, batch_size=64, learning_rate=1e-3, eval_every=EVAL_EVERY,
                         eval_samples=256, patience=0)


def gaussian_log_prob(x: torch.Tensor) -> torch.Tensor:
    """Unnormalized ``log p~(x) = -x^T P x / 2``, ``(N, 2) -> (N,)``."""
    return -0.5 * torch.einsum("ni,ij,nj->n", x, PRECISION.to(x.dtype), x)


@pytest.fixture(scope="module")
def base() -> DefensiveTT:
    """Defensive TT base fitted to the Gaussian by cross approximation."""
    box = Box(BOX)
    budget = CrossBudget(max_rank=6, tolerance=1e-6, sweeps=2)
    result = cross_approximate(lambda t: gaussian_log_prob(box.to_x(t)), DIM, 12, budget)
    return DefensiveTT(result.tt, defensive=0.01)


def make_sampler(base: DefensiveTT) -> FlowSampler:
    torch.manual_seed(0)  # the conditioners' first layers are initialized randomly
    flow = build_flow("affine", DIM, layers=2, hidden=16, depth=1, max_log_scale=2.0)
    return FlowSampler(base, flow, Box(BOX), dtype=torch.float64, device="cpu")


def train(sampler: FlowSampler, log_prob: Callable[[torch.Tensor], torch.Tensor],
          progress: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    return train_reverse_kl(sampler, log_prob, SETTINGS, torch.Generator().manual_seed(0), progress)


class NaNEveryOtherBatch:
    """``log_prob`` wrapper that poisons one point of every second training batch.

    Training batches are the calls with gradients enabled; the held-out validation
    runs under ``torch.no_grad`` and is left alone.
    """

    def __init__(self, log_prob: Callable[[torch.Tensor], torch.Tensor]):
        self.log_prob = log_prob
        self.training_calls = 0
        self.poisoned = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        values = self.log_prob(x)
        if not torch.is_grad_enabled():
            return values
        self.training_calls += 1
        if self.training_calls % 2 == 0:
            self.poisoned += 1
            values = values.clone()
            values[0] = math.nan
        return values


def test_train_history_lengths(base: DefensiveTT) -> None:
    result = train(make_sampler(base), gaussian_log_prob)

    assert result.stop_reason == "steps"
    assert result.steps == STEPS
    assert result.skipped_steps == 0
    for name, values in result.history.items():
        assert len(values) == STEPS, name
    assert result.history["step"] == list(range(1, STEPS + 1))
    for name, values in result.validation.items():
        assert len(values) == STEPS // EVAL_EVERY + 1, name
    assert result.validation["step"] == [0, 10, 20, 30]
    assert all(math.isfinite(loss) for loss in result.history["loss"])


def test_train_keeps_best_weights(base: DefensiveTT) -> None:
    sampler = make_sampler(base)
    # The progress callback runs right after each validation, so these are the
    # weights that each held-out ESS was measured with.
    snapshots = {0: copy.deepcopy(sampler.flow.state_dict())}

    def record(step: int, values: dict[str, float]) -> None:
        snapshots[step] = copy.deepcopy(sampler.flow.state_dict())

    result = train(sampler, gaussian_log_prob, record)
    ess = result.validation["ess_fraction"]
    final_state = sampler.flow.state_dict()

    assert result.best_ess_fraction >= ess[0]
    assert result.best_ess_fraction == max(ess)
    assert ess[result.validation["step"].index(result.best_step)] == result.best_ess_fraction
    assert final_state.keys() == snapshots[result.best_step].keys()
    for name, value in final_state.items():
        assert torch.equal(value, snapshots[result.best_step][name]), name


def test_train_skips_nan_batches(base: DefensiveTT) -> None:
    log_prob = NaNEveryOtherBatch(gaussian_log_prob)

    result = train(make_sampler(base), log_prob)
    nan_losses = sum(math.isnan(loss) for loss in result.history["loss"])

    assert result.steps == STEPS
    assert log_prob.poisoned == STEPS // 2
    assert result.skipped_steps == STEPS // 2
    assert result.history["skipped"][-1] == STEPS // 2
    assert nan_losses == STEPS // 2
    assert math.isfinite(result.best_ess_fraction)


def test_train_all_nan_raises(base: DefensiveTT) -> None:
    def nan_log_prob(x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x[:, 0], math.nan)

    with pytest.raises(NumericalError, match=f"every one of {STEPS} training steps"):
        train(make_sampler(base), nan_log_prob)


def test_train_without_flow_raises(base: DefensiveTT) -> None:
    sampler = FlowSampler(base, None, Box(BOX), dtype=torch.float64, device="cpu")

    with pytest.raises(ValueError, match="no flow to train"):
        train(sampler, gaussian_log_prob)
