"""The run spec: one pydantic model per YAML section, with defaults and valid ranges.

A spec file looks like::

    name: gl1d
    target: {name: ginzburg_landau_1d, sites: 50, beta: 0.125}
    box: [-2.5, 2.5]          # optional; one interval for all coordinates, or d of them
    tt: {nodes: 32, max_rank: 24}
    flow: {kind: affine, layers: 8}
    train: {steps: 1000, learning_rate: 1.0e-3}
    evaluate: {samples: 100000}
    seed: 0

Every section except ``target`` may be left out. ``target`` is kept as a mapping here and
validated by :mod:`ttflow_cli.targets.registry`, whose parameter models depend on the
target's name.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from ttflow_cli.targets.params import Count, ParamsModel, Real

Interval = tuple[float, float]

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""A run name doubles as a file name: letters, digits, '-', '_', '.', at most 100 characters."""


class TTConfig(ParamsModel):
    """Cross approximation of the tensor-train base ``q0``."""

    nodes: Count = Field(32, ge=2, le=256, description="Gauss-Legendre nodes per axis")
    init_rank: Count = Field(4, ge=1, description="TT rank of the first sweep")
    max_rank: Count = Field(24, ge=1, description="largest TT rank after truncation")
    tolerance: Real = Field(1e-5, gt=0, lt=1, description="relative SVD truncation tolerance")
    sweeps: Count = Field(8, ge=1, description="maximum number of cross sweeps")
    max_evaluations: Count = Field(20_000_000, ge=1, description="budget of target evaluations")
    kick: Count = Field(2, ge=0, description="random enrichment columns per core and sweep")
    defensive: Real = Field(0.001, ge=0, lt=1, description="weight eps of the reference in the defensive mixture")
    validation_samples: Count = Field(4000, ge=100, description="samples for the ESS after each sweep")
    plateau: Real = Field(0.01, ge=0, description="stop when the ESS fraction gains less than this in a sweep")
    batch_size: Count = Field(200_000, ge=1, description="target evaluations per call")
    symmetrize: bool = Field(
        False, description="average the base over the target's declared symmetry group, so that "
        "every mirror image of a mode the cross approximation found gets the same mass")

    @field_validator("max_rank")
    @classmethod
    def _not_below_init_rank(cls, value: int, info: ValidationInfo) -> int:
        init_rank = info.data.get("init_rank")
        if init_rank is not None and value < init_rank:
            raise ValueError(f"must be at least init_rank ({init_rank}); got {value}")
        return value


class FlowConfig(ParamsModel):
    """Normalizing flow on top of the base distribution."""

    kind: Literal["affine", "spline", "none"] = Field(
        "affine", description="affine or rational-quadratic spline coupling layers, or no flow")
    base: Literal["tt", "gaussian"] = Field("tt", description="base distribution of the flow")
    gaussian: Literal["standard", "fitted"] = Field(
        "standard", description="with base gaussian: centred in the box with its faces at 3 standard "
        "deviations (no cross approximation), or mean and covariance of TT samples")
    layers: Count = Field(8, ge=2, description="number of coupling layers")
    hidden: Count = Field(128, ge=1, description="width of each conditioner's hidden layers")
    depth: Count = Field(2, ge=1, description="hidden layers per conditioner")
    max_log_scale: Real = Field(2.0, gt=0, description="bound on |log scale| of each affine coupling")
    bins: Count = Field(8, ge=2, le=999, description="bins of each rational-quadratic spline")
    tail_bound: Real = Field(
        1.5, gt=0, description="spline interval [-B, B] in box coordinates [-1, 1]; identity outside")


class TrainConfig(ParamsModel):
    """Reverse-KL fine-tuning of the flow."""

    steps: Count = Field(1000, ge=0, description="optimizer steps; 0 keeps the initial flow")
    batch_size: Count = Field(512, ge=1, description="base samples per step")
    learning_rate: Real = Field(1e-3, gt=0)
    clip_norm: Real = Field(10.0, gt=0, description="gradient norm clipping threshold")
    eval_every: Count = Field(100, ge=1, description="steps between held-out ESS estimates")
    eval_samples: Count = Field(4096, ge=2, description="samples per held-out estimate")
    patience: Count = Field(5, ge=0, description="evaluations without improvement before stopping; 0 never stops")
    anneal_steps: Count = Field(
        0, ge=0, description="first steps fit p~^tau with tau rising geometrically to 1; 0 turns annealing off")
    anneal_start: Real = Field(0.1, gt=0, le=1, description="initial tau of the annealing")
    gradient: Literal["path", "total"] = Field(
        "path", description="path derivative of log q (low variance near the optimum), or the plain "
        "reparameterized gradient")
    objective: Literal["reverse_kl", "forward_kl"] = Field(
        "reverse_kl", description="KL(q || p) by reparameterization, or KL(p || q) by self-normalized "
        "importance weights on the sampler's own points")
    dtype: Literal["float32", "float64"] = "float64"


class EvaluateConfig(ParamsModel):
    """Final importance-sampling estimates."""

    samples: Count = Field(100_000, ge=2, description="fresh samples for ESS, log Z and observables")
    batch_size: Count = Field(50_000, ge=1, description="samples drawn and scored per batch")
    observables: list[str] | None = Field(None, description="observables to report; default: all of the target's")
    bootstrap: Count = Field(200, ge=0, description="Poisson bootstrap replicates; 0 turns the bootstrap off")

    @field_validator("bootstrap")
    @classmethod
    def _enough_replicates(cls, value: int) -> int:
        if value == 1:
            raise ValueError("must be 0 (no bootstrap) or at least 2 replicates; got 1")
        return value


def _as_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError
    number = float(value)  # a string such as '1e3' (PyYAML reads it as text) parses here
    if not math.isfinite(number):
        raise ValueError
    return number


def _parse_interval(value: Any, where: str) -> Interval:
    try:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError
        low, high = _as_number(value[0]), _as_number(value[1])
    except ValueError:
        raise ValueError(f"{where}must be a pair [low, high] of finite numbers; got {value!r}") from None
    if not low < high:
        raise ValueError(f"{where}must have low < high; got {value!r}")
    return low, high


def parse_box(value: Any) -> Interval | list[Interval] | None:
    """Parse ``None``, one ``[low, high]`` pair, or a list of pairs (one per coordinate).

    Raises:
        ValueError: naming the bad entry, for anything else or when ``low >= high``.
    """
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"must be [low, high] or a list of [low, high] pairs, one per coordinate; got {value!r}")
    if all(not isinstance(item, (list, tuple)) for item in value):
        return _parse_interval(value, "")
    return [_parse_interval(item, f"entry {index} ") for index, item in enumerate(value)]


class Spec(ParamsModel):
    """A whole run spec. ``name`` is filled from the file name by the loader when omitted."""

    name: str | None = Field(None, description="run name, also used as a file name")
    target: dict[str, Any] = Field(description="'name: <built-in>' or 'plugin: file.py:Class', plus parameters")
    box: Interval | list[Interval] | None = Field(None, description="TT box; default: the target's")
    tt: TTConfig = Field(default_factory=TTConfig)
    flow: FlowConfig = Field(default_factory=FlowConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    seed: Count = Field(0, ge=0, description="seed of every random number generator")

    @field_validator("name")
    @classmethod
    def _safe_file_name(cls, value: str | None) -> str | None:
        if value is not None and not NAME_PATTERN.fullmatch(value):
            raise ValueError(
                "must be a safe file name: letters, digits, '-', '_' and '.', starting with "
                "a letter or digit, at most 100 characters"
            )
        return value

    @field_validator("box", mode="before")
    @classmethod
    def _parse_box(cls, value: Any) -> Interval | list[Interval] | None:
        return parse_box(value)

    @field_validator("tt", "flow", "train", "evaluate", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        # 'tt:' with every key commented out reads as null; treat it as all defaults.
        return {} if value is None else value
