"""``ttflow fit``: cross approximation, flow fine-tuning, evaluation, run file.

The base of the flow is the defensive TT (``flow.base: tt``) or a Gaussian
(``flow.base: gaussian``), the baseline that shows what the TT buys. A standard
Gaussian base needs no cross approximation, so that stage is skipped for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ttflow_cli.config import Spec, resolve_box, spec_to_yaml
from ttflow_cli.errors import ConfigError
from ttflow_cli.flows import build_flow
from ttflow_cli.flows.gaussian import GaussianBase
from ttflow_cli.flows.model import BaseDistribution, FlowSampler
from ttflow_cli.runfile import FORMAT_NAME, check_destination, flatten_state_dict, write_run
from ttflow_cli.targets.base import Target
from ttflow_cli.train import TrainResult, TrainSettings, train_reverse_kl
from ttflow_cli.tt.box import Box
from ttflow_cli.tt.cross import CrossBudget, CrossResult, cross_approximate
from ttflow_cli.tt.defensive import DefensiveTT
from ttflow_cli.tt.symmetry import SignedPermutation, SymmetrizedBase, box_is_invariant, generate_group
from ttflow_cli.workflow.diagnostics import BoxCheck, SampleValidator, check_box
from ttflow_cli.workflow.evaluation import Evaluation, evaluate
from ttflow_cli.workflow.runstate import base_tree, flow_tree, tt_tree

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
TrainProgress = Callable[[int, dict[str, float]], None]

GAUSSIAN_FIT_SAMPLES = 4096
"""TT samples whose mean and covariance define the fitted Gaussian base."""


@dataclass
class FitReport:
    """Everything ``ttflow fit`` shows and stores.

    ``cross`` and ``box_check`` are ``None`` when the run needed no TT (a standard
    Gaussian base). ``evaluations`` counts target evaluations per stage: ``cross``,
    ``train`` and ``evaluate``.
    """

    run_path: Path
    cross: CrossResult | None
    box_check: BoxCheck | None
    box: Box
    train: TrainResult | None
    evaluation: Evaluation
    seconds: dict[str, float]
    evaluations: dict[str, int]


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
        RunFileError: ``run_path`` exists and ``overwrite`` is false, or it is a file
            of another kind, which ``overwrite`` never replaces (checked first).
    """
    check_destination(run_path, FORMAT_NAME, overwrite)
    torch.manual_seed(spec.seed)
    dtype = _DTYPES[spec.train.dtype]
    generator = torch.Generator(device=device).manual_seed(spec.seed)
    box = Box(resolve_box(spec, target))
    group = symmetry_group(spec, target, box, device) if spec.tt.symmetrize else None
    seconds: dict[str, float] = {}

    cross, box_check = None, None
    if spec.flow.base == "tt" or spec.flow.gaussian == "fitted":
        start = time.perf_counter()
        cross = _fit_tt(spec, target, box, device, generator)
        seconds["cross"] = time.perf_counter() - start
        box_check = check_box(cross.tt, lambda t: target.log_prob(box.to_x(t)),
                              torch.Generator().manual_seed(spec.seed))

    base, training_base = _build_base(spec, cross, target.dim, device, generator)
    if group is not None:
        base, training_base = SymmetrizedBase(base, group), SymmetrizedBase(training_base, group)
    flow = build_flow(spec.flow.kind, target.dim, layers=spec.flow.layers, hidden=spec.flow.hidden,
                      depth=spec.flow.depth, max_log_scale=spec.flow.max_log_scale,
                      bins=spec.flow.bins, tail_bound=spec.flow.tail_bound)
    sampler = FlowSampler(base, flow, box, dtype=dtype, device=device)
    train = None
    if flow is not None and spec.train.steps > 0:
        start = time.perf_counter()
        settings = TrainSettings(**spec.train.model_dump(exclude={"dtype"}))
        trained = FlowSampler(training_base, flow, box, dtype=dtype, device=device)
        train = train_reverse_kl(trained, target.log_prob, settings, generator, train_progress)
        seconds["train"] = time.perf_counter() - start

    start = time.perf_counter()
    evaluation = evaluate(sampler, target, spec.evaluate.samples, spec.evaluate.batch_size, generator)
    seconds["evaluate"] = time.perf_counter() - start
    evaluations = {
        "cross": cross.evaluations if cross is not None else 0,
        "train": train.target_evaluations if train is not None else 0,
        "evaluate": spec.evaluate.samples,
    }

    tree = _run_tree(spec, cross, box, base, sampler, train, evaluation, box_check, seconds,
                     evaluations, generator)
    write_run(run_path, tree, overwrite=overwrite, attrs={"command_line": command_line, "seed": spec.seed})
    return FitReport(run_path=run_path, cross=cross, box_check=box_check, box=box, train=train,
                     evaluation=evaluation, seconds=seconds, evaluations=evaluations)


SYMMETRY_CHECK_POINTS = 256
"""Random points in the box on which a declared symmetry must leave ``log p~`` unchanged."""


def symmetry_group(spec: Spec, target: Target, box: Box, device: torch.device) -> list[SignedPermutation]:
    """Generate the group of the target's symmetries and check it against the box and the density.

    Raises:
        ConfigError: the target declares no symmetry, the box is not mapped onto
            itself, or ``log p~`` changes under a declared symmetry (a wrong plugin).
    """
    name = spec.target.get("name") or spec.target.get("plugin")
    generators = target.symmetries()
    if not generators:
        raise ConfigError(f"tt.symmetrize: the target {name} declares no symmetry; "
                          "set tt.symmetrize: false or declare symmetries() in a plugin")
    try:
        group = generate_group(generators, target.dim)
    except ValueError as exc:
        raise ConfigError(f"tt.symmetrize: the symmetries of the target {name} are invalid: {exc}") from exc
    if not box_is_invariant(group, box.low, box.high):
        raise ConfigError(f"box: the target {name} is symmetric, but the box is not mapped onto itself by "
                          "its symmetries; use the same interval for the coordinates they exchange, "
                          "symmetric about 0 where they flip signs")
    checker = torch.Generator().manual_seed(spec.seed)
    t = 2 * torch.rand(SYMMETRY_CHECK_POINTS, target.dim, generator=checker, dtype=torch.float64) - 1
    x = box.to_x(t).to(device)
    with torch.no_grad():
        reference = target.log_prob(x)
        for index, element in enumerate(generators):
            moved = target.log_prob(element.apply(x))
            tolerance = 1e-9 * (1.0 + reference.abs())
            if not bool(((moved - reference).abs() <= tolerance).all()):
                worst = float((moved - reference).abs().max())
                raise ConfigError(f"tt.symmetrize: symmetry {index} of the target {name} changes "
                                  f"log p~ by up to {worst:.3g} on random points; it is not a symmetry")
    return group


def _build_base(spec: Spec, cross: CrossResult | None, dim: int, device: torch.device,
                generator: torch.Generator) -> tuple[BaseDistribution, BaseDistribution]:
    """Build the base that evaluation samples from and the one that training samples from."""
    if cross is None:  # a standard Gaussian base, the only one fitted without a TT
        gaussian = GaussianBase.standard(dim)
        return gaussian, gaussian
    tt = cross.tt.to(device=device)
    if spec.flow.base == "gaussian":
        t, _ = DefensiveTT(tt, 0.0).sample(GAUSSIAN_FIT_SAMPLES, generator, dtype=torch.float64, device=device)
        gaussian = GaussianBase.fit(t)
        return gaussian, gaussian
    # Training draws from the TT alone: a defensive uniform point in d dimensions
    # has log p~ hundreds below the typical set, and its gradient would swamp
    # the loss. The mixture is used again for every importance weight.
    return DefensiveTT(tt, spec.tt.defensive), DefensiveTT(tt, 0.0)


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


def _run_tree(spec: Spec, cross: CrossResult | None, box: Box, base: BaseDistribution,
              sampler: FlowSampler, train: TrainResult | None, evaluation: Evaluation,
              box_check: BoxCheck | None, seconds: dict[str, float], evaluations: dict[str, int],
              generator: torch.Generator) -> dict:
    tree: dict = {"config": {"yaml": spec_to_yaml(spec)}}
    if cross is not None and box_check is not None:
        tt_group = tt_tree(cross.tt, box, spec.tt.defensive)
        tt_group.update({
            "stop_reason": cross.stop_reason,
            "evaluations": cross.evaluations,
            "history": cross.history_arrays(),
            "box_check_coordinates": np.asarray(box_check.coordinates, dtype=np.int64),
            "box_check_face_ratio": np.asarray(box_check.face_ratio, dtype=np.float64),
            "box_check_band_mass": np.asarray(box_check.band_mass, dtype=np.float64),
        })
        tree["tt"] = tt_group
    tree["base"] = base_tree(base, box)

    train_group: dict = {"rng_state": generator.get_state().cpu().numpy()}
    if train is not None:
        train_group.update({
            "stop_reason": train.stop_reason, "steps": train.steps, "best_step": train.best_step,
            "best_ess_fraction": train.best_ess_fraction,
            "skipped_steps": train.skipped_steps, "history": train.history_arrays(),
            "optimizer": flatten_state_dict(train.optimizer_state),
        })
    results = evaluation.to_dict()
    results.update({
        "method": "importance sampling",
        "base": spec.flow.base,
        **{f"seconds_{k}": v for k, v in seconds.items()},
        **{f"evaluations_{k}": v for k, v in evaluations.items()},
        "evaluations": sum(evaluations.values()),
    })
    tree.update({"flow": flow_tree(sampler.flow), "train": train_group, "results": results})
    return tree
