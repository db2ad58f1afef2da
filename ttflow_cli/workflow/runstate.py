"""Translation between a fitted sampler and the tree stored in a run file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from ttflow_cli.config import Spec, spec_from_text
from ttflow_cli.errors import ConfigError, RunFileError
from ttflow_cli.flows import Flow, flow_architecture, flow_from_architecture
from ttflow_cli.flows.gaussian import GaussianBase
from ttflow_cli.flows.model import BaseDistribution, FlowSampler
from ttflow_cli.runfile import read_run
from ttflow_cli.targets.base import Target
from ttflow_cli.tt.box import Box
from ttflow_cli.tt.defensive import DefensiveTT
from ttflow_cli.tt.squared import SquaredTT
from ttflow_cli.tt.symmetry import SignedPermutation, SymmetrizedBase

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def tt_tree(tt: SquaredTT, box: Box, defensive: float) -> dict:
    """The ``/tt`` group: cores, ranks, basis and box."""
    return {
        "cores": [core.detach().cpu().numpy() for core in tt.cores],
        "ranks": np.asarray(tt.ranks, dtype=np.int64),
        "basis": "orthonormal Legendre on [-1, 1]",
        "nodes": tt.nodes,
        "box_low": box.low.numpy(),
        "box_high": box.high.numpy(),
        "defensive": defensive,
    }


def base_tree(base: BaseDistribution, box: Box) -> dict:
    """The ``/base`` group: which base the flow sits on, the box, and a Gaussian's parameters.

    A TT base stores only its kind here; its cores are in ``/tt``. A symmetrized
    base adds every element of its group as rows of ``symmetry_permutations`` and
    ``symmetry_signs``.
    """
    group: dict = {"box_low": box.low.numpy(), "box_high": box.high.numpy()}
    if isinstance(base, SymmetrizedBase):
        group["symmetry_permutations"] = np.asarray([g.permutation for g in base.group], dtype=np.int64)
        group["symmetry_signs"] = np.asarray([g.sign for g in base.group], dtype=np.int64)
        base = base.base
    if isinstance(base, GaussianBase):
        group.update({"kind": "gaussian", "mean": base.mean.numpy(), "scale_tril": base.scale_tril.numpy()})
    else:
        group["kind"] = "tt"
    return group


def flow_tree(flow: Flow | None) -> dict:
    """The ``/flow`` group: architecture as JSON and weights as plain arrays."""
    if flow is None:
        return {"kind": "none"}
    return {
        "kind": flow.kind,
        "architecture": json.dumps(flow_architecture(flow)),
        "state": {name: value.detach().cpu().numpy() for name, value in flow.state_dict().items()},
    }


@dataclass
class RestoredRun:
    """A sampler and its target rebuilt from a run file."""

    spec: Spec
    target: Target
    sampler: FlowSampler
    results: dict


def plugin_named_in(config_yaml: str) -> str | None:
    """The plugin a stored spec names, read without running anything."""
    data = yaml.safe_load(config_yaml)
    target = data.get("target", {}) if isinstance(data, dict) else {}
    return target.get("plugin") if isinstance(target, dict) else None


def restore_run(path: Path, device: torch.device, allow_plugin: bool = False) -> RestoredRun:
    """Rebuild the sampler of a run file on ``device``.

    Raises:
        RunFileError: the file is missing, not a run file, or incomplete.
        ConfigError: the run names a plugin and ``allow_plugin`` is false, because
            loading a plugin executes its code.
    """
    run = read_run(path, groups=["config", "flow", "results"])
    config_yaml = run.tree["config"]["yaml"]
    plugin = plugin_named_in(config_yaml)
    if plugin and not allow_plugin:
        raise ConfigError(
            f"{path}: the run's target is the plugin {plugin}; loading it runs its code, "
            "so pass --allow-plugin if you trust that file"
        )
    spec, target = spec_from_text(config_yaml, source=str(path), spec_dir=path.parent)
    dtype = _DTYPES[spec.train.dtype]
    # The spec names the base; a TT base lives in /tt, a Gaussian one in /base.
    base_group_name = "tt" if spec.flow.base == "tt" else "base"
    groups = read_run(path, groups=sorted({base_group_name, "base"})).tree
    base_group = groups[base_group_name]
    box = Box(list(zip(base_group["box_low"].tolist(), base_group["box_high"].tolist())))
    if box.dim != target.dim:
        raise RunFileError(f"{path}: the stored box has {box.dim} coordinates but the target has {target.dim}")
    base = _restore_base(path, base_group_name, base_group, device)
    symmetries = _restore_symmetries(path, groups["base"], box.dim)
    if symmetries:
        base = SymmetrizedBase(base, symmetries)
    flow = _restore_flow(path, run.tree["flow"])
    sampler = FlowSampler(base, flow, box, dtype=dtype, device=device)
    return RestoredRun(spec=spec, target=target, sampler=sampler, results=run.tree.get("results", {}))


def _restore_base(path: Path, group_name: str, group: dict, device: torch.device) -> BaseDistribution:
    try:
        if group_name == "tt":
            cores = [torch.as_tensor(core) for core in group["cores"]]
            return DefensiveTT(SquaredTT(cores).to(device=device), float(group["defensive"]))
        return GaussianBase(torch.as_tensor(group["mean"]), torch.as_tensor(group["scale_tril"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise RunFileError(f"{path}: the stored /{group_name} base cannot be rebuilt ({exc}); the file is damaged") from exc


def _restore_symmetries(path: Path, group: dict, dim: int) -> list[SignedPermutation]:
    if "symmetry_permutations" not in group:
        return []
    try:
        permutations, signs = group["symmetry_permutations"], group["symmetry_signs"]
        if permutations.shape != signs.shape or permutations.ndim != 2 or permutations.shape[1] != dim:
            raise ValueError(f"shapes {permutations.shape} and {signs.shape} for {dim} coordinates")
        return [SignedPermutation.from_arrays(p, s) for p, s in zip(permutations, signs)]
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise RunFileError(f"{path}: the stored symmetries of /base cannot be rebuilt ({exc}); "
                           "the file is damaged") from exc


def _restore_flow(path: Path, group: dict) -> Flow | None:
    if group.get("kind") == "none":
        return None
    try:
        flow = flow_from_architecture(json.loads(group["architecture"]))
        state = {name: torch.as_tensor(value) for name, value in group["state"].items()}
        flow.load_state_dict(state)
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise RunFileError(f"{path}: the stored flow cannot be rebuilt ({exc}); the file is damaged") from exc
    return flow
