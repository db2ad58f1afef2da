"""``ttflow fit``: cross approximation, flow fine-tuning, evaluation, run file."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ttflow_cli.config import Spec, resolve_box, spec_to_yaml
from ttflow_cli.errors import ConfigError, RunFileError
from ttflow_cli.flows import build_flow
from ttflow_cli.flows.model import FlowSampler
from ttflow_cli.runfile import flatten_state_dict, write_run
from ttflow_cli.targets.base import Target
from ttflow_cli.train import TrainResult, TrainSettings, train_reverse_kl
from ttflow_cli.tt.box import Box
from ttflow_cli.tt.cross import CrossBudget, CrossResult, cross_approximate
from ttflow_cli.tt.defensive import DefensiveTT
from ttflow_cli.workflow.diagnostics import BoxCheck, SampleValidator, check_box
from ttflow_cli.workflow.evaluation import Evaluation, evaluate
from ttflow_cli.workflow.runstate import flow_tree, tt_tree

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
TrainProgress = Callable[[int, dict[str, float]], None]


@dataclass
class FitReport:
    """Everything ``ttflow fit`` shows and stores."""

    run_path: Path
    cross: CrossResult
    box_check: BoxCheck
    box: Box
    train: TrainResult | None
    evaluation: Evaluation
    seconds: dict[str, float]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; an unavailable ``cuda`` is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device: expected auto, cpu or cuda; got {name!r}")
    return torch.device(name)


def default_run_path(spec: Spec) -> Path:
    """``runs/<name>/run.h5`` under the working directory."""
    return Path("runs") / str(spec.name) / "run.h5"


def fit(spec: Spec, target: Target, run_path: Path, *, device: torch.device, overwrite: bool = False,
        command_line: str = "", train_progress: TrainProgress | None = None) -> FitReport:
    """Fit a TT base and flow to ``target`` and write ``run_path`` atomically.

    Raises:
        RunFileError: ``run_path`` exists and ``overwrite`` is false (checked first).
    """
    if run_path.exists() and not overwrite:
        raise RunFileError(f"{run_path}: run file already exists; pass --overwrite to replace it or choose another --out")
    torch.manual_seed(spec.seed)
    dtype = _DTYPES[spec.train.dtype]
    generator = torch.Generator(device=device).manual_seed(spec.seed)
    box = Box(resolve_box(spec, target))
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    cross = _fit_tt(spec, target, box, device, generator)
    seconds["cross"] = time.perf_counter() - start
    box_check = check_box(cross.tt)

    base = DefensiveTT(cross.tt.to(device=device), spec.tt.defensive)
    flow = build_flow(spec.flow.kind, target.dim, layers=spec.flow.layers, hidden=spec.flow.hidden,
                      depth=spec.flow.depth, max_log_scale=spec.flow.max_log_scale)
    sampler = FlowSampler(base, flow, box, dtype=dtype, device=device)
    train = None
    if flow is not None and spec.train.steps > 0:
        start = time.perf_counter()
        settings = TrainSettings(**spec.train.model_dump(exclude={"dtype"}))
        # Training draws from the TT alone: a defensive uniform point in d dimensions
        # has log p~ hundreds below the typical set, and its gradient would swamp
        # the loss. The mixture is used again for every importance weight.
        trained = FlowSampler(DefensiveTT(base.tt, 0.0), flow, box, dtype=dtype, device=device)
        train = train_reverse_kl(trained, target.log_prob, settings, generator, train_progress)
        seconds["train"] = time.perf_counter() - start

    start = time.perf_counter()
    evaluation = evaluate(sampler, target, spec.evaluate.samples, spec.evaluate.batch_size, generator)
    seconds["evaluate"] = time.perf_counter() - start

    tree = _run_tree(spec, cross, box, sampler, train, evaluation, box_check, seconds, generator)
    write_run(run_path, tree, overwrite=overwrite, attrs={"command_line": command_line, "seed": spec.seed})
    return FitReport(run_path=run_path, cross=cross, box_check=box_check, box=box, train=train,
                     evaluation=evaluation, seconds=seconds)


def _fit_tt(spec: Spec, target: Target, box: Box, device: torch.device,
            generator: torch.Generator) -> CrossResult:
    """Cross approximation in float64 on the run's device, validated by ESS."""

    def log_prob_t(t: torch.Tensor) -> torch.Tensor:
        return target.log_prob(box.to_x(t))

    budget = CrossBudget(
        max_rank=spec.tt.max_rank, tolerance=spec.tt.tolerance, sweeps=spec.tt.sweeps,
        max_evaluations=spec.tt.max_evaluations, init_rank=spec.tt.init_rank, kick=spec.tt.kick,
        plateau=spec.tt.plateau, batch_size=spec.tt.batch_size,
    )
    validate = SampleValidator(log_prob_t, spec.tt.defensive, spec.tt.validation_samples, generator, device)
    cross_generator = torch.Generator().manual_seed(spec.seed)
    return cross_approximate(log_prob_t, target.dim, spec.tt.nodes, budget, validate=validate,
                             generator=cross_generator, dtype=torch.float64, device=device)


def _run_tree(spec: Spec, cross: CrossResult, box: Box, sampler: FlowSampler, train: TrainResult | None,
              evaluation: Evaluation, box_check: BoxCheck, seconds: dict[str, float],
              generator: torch.Generator) -> dict:
    tt_group = tt_tree(cross.tt, box, spec.tt.defensive)
    tt_group.update({
        "stop_reason": cross.stop_reason,
        "evaluations": cross.evaluations,
        "history": cross.history_arrays(),
        "box_check_coordinates": box_check.coordinates,
        "box_check_face_ratio": box_check.face_ratio,
    })
    train_group: dict = {"rng_state": generator.get_state().cpu().numpy()}
    if train is not None:
        train_group.update({
            "stop_reason": train.stop_reason, "steps": train.steps, "best_step": train.best_step,
            "skipped_steps": train.skipped_steps, "history": train.history_arrays(),
            "optimizer": flatten_state_dict(train.optimizer_state),
        })
    results = evaluation.to_dict()
    results.update({"method": "importance sampling", **{f"seconds_{k}": v for k, v in seconds.items()}})
    return {
        "config": {"yaml": spec_to_yaml(spec)},
        "tt": tt_group,
        "flow": flow_tree(sampler.flow),
        "train": train_group,
        "results": results,
    }
