"""Symmetrized bases: group algebra, exact normalization, sampling, targets and run files."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import Result

from ttflow_cli.estimators.importance import estimate_from_log_weights
from ttflow_cli.targets.ginzburg_landau import GinzburgLandau1D, GinzburgLandau2D
from ttflow_cli.tt import chebyshev
from ttflow_cli.tt.defensive import DefensiveTT
from ttflow_cli.tt.squared import SquaredTT
from ttflow_cli.tt.symmetry import (
    MAX_GROUP_ORDER,
    SignedPermutation,
    SymmetrizedBase,
    box_is_invariant,
    generate_group,
)
from ttflow_cli.workflow.runstate import restore_run

RunCli = Callable[..., Result]


def _swap_and_flip() -> SignedPermutation:
    """``(x0, x1) -> (-x1, -x0)`` on the plane."""
    return SignedPermutation((1, 0), (-1, -1))


def _one_corner_tt() -> SquaredTT:
    """A rank-1 squared TT on [-1, 1]^2 whose mass sits near the corner (0.6, 0.6).

    Its image under ``_swap_and_flip`` sits near (-0.6, -0.6), so the symmetrized
    density has two separate modes of equal mass.
    """
    nodes, _ = chebyshev.gauss_legendre(24)
    bump = np.exp(-((nodes - 0.6) ** 2) / (4 * 0.15**2))  # the square root of N(0.6, 0.15^2)
    core = torch.as_tensor(bump, dtype=torch.float64).reshape(1, 24, 1)
    return SquaredTT.from_grid_cores([core, core.clone()], tolerance=1e-12, max_rank=4)


def test_compose_and_inverse_laws() -> None:
    generator = torch.Generator().manual_seed(0)
    a = SignedPermutation.from_arrays(torch.randperm(5, generator=generator), [1, -1, -1, 1, -1])
    b = SignedPermutation.from_arrays(torch.randperm(5, generator=generator), [-1, 1, 1, 1, -1])
    x = torch.randn(7, 5, dtype=torch.float64, generator=generator)

    assert torch.equal(a.compose(b).apply(x), a.apply(b.apply(x)))
    assert a.compose(a.inverse()) == SignedPermutation.identity(5)
    assert torch.equal(a.inverse().apply(a.apply(x)), x)


def test_generated_group_is_closed() -> None:
    flip = SignedPermutation((0, 1, 2), (-1, -1, -1))
    reverse = SignedPermutation((2, 1, 0), (1, 1, 1))

    assert len(generate_group([flip], 3)) == 2
    group = generate_group([flip, reverse], 3)
    assert len(group) == 4
    assert group[0] == SignedPermutation.identity(3)
    assert all(g.compose(h) in group for g in group for h in group)


def test_large_group_rejected() -> None:
    # A cyclic shift of 7 coordinates with a sign flip has order 14; with a second
    # flip of one coordinate the group grows past MAX_GROUP_ORDER.
    shift = SignedPermutation((1, 2, 3, 4, 5, 6, 0), (-1,) * 7)
    one_flip = SignedPermutation(tuple(range(7)), (-1, 1, 1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match=f"more than {MAX_GROUP_ORDER}"):
        generate_group([shift, one_flip], 7)


def test_bad_signed_permutation_rejected() -> None:
    with pytest.raises(ValueError, match="invalid permutation"):
        SignedPermutation((0, 0), (1, 1))
    with pytest.raises(ValueError, match="invalid signs"):
        SignedPermutation((0, 1), (1, 2))


def test_box_invariance() -> None:
    group = generate_group([_swap_and_flip()], 2)
    symmetric = torch.tensor([-2.0, -2.0], dtype=torch.float64)
    assert box_is_invariant(group, symmetric, -symmetric)
    assert not box_is_invariant(group, torch.tensor([-2.0, -2.0]), torch.tensor([3.0, 3.0]))
    assert not box_is_invariant(group, torch.tensor([-2.0, -1.0]), torch.tensor([2.0, 1.0]))


def test_symmetrized_density_normalized() -> None:
    base = SymmetrizedBase(DefensiveTT(_one_corner_tt(), 0.01), generate_group([_swap_and_flip()], 2))
    nodes, weights = chebyshev.gauss_legendre(80)
    grid = torch.as_tensor(np.stack(np.meshgrid(nodes, nodes, indexing="ij"), axis=-1).reshape(-1, 2))
    area = torch.as_tensor(np.outer(weights, weights).reshape(-1))

    total = float((area * base.log_prob(grid).exp()).sum())

    assert total == pytest.approx(1.0, abs=1e-10)


def test_samples_cover_both_images() -> None:
    base = SymmetrizedBase(DefensiveTT(_one_corner_tt(), 0.0), generate_group([_swap_and_flip()], 2))
    t, log_q = base.sample(4000, torch.Generator().manual_seed(3))

    assert torch.allclose(log_q, base.log_prob(t), atol=1e-12)
    # Each image has exactly half of the mass; 4000 fair coin flips have a
    # standard deviation of 0.0079 in the share, so 0.04 is five of them.
    share = float((t.sum(dim=1) > 0).double().mean())
    assert share == pytest.approx(0.5, abs=0.04)
    # The unsymmetrized TT puts (almost) everything in the positive corner.
    t_base, _ = base.base.sample(4000, torch.Generator().manual_seed(3))
    assert float((t_base.sum(dim=1) > 0).double().mean()) > 0.99


@pytest.mark.parametrize("target", [
    GinzburgLandau1D(sites=6, beta=1.0),
    GinzburgLandau1D(sites=6, beta=1.0, left=0.7, right=-0.7),
    GinzburgLandau1D(sites=5, beta=1.0, boundary="periodic"),
    GinzburgLandau2D(sites=4, beta=1.0, top=1.0, bottom=0.5, left=-1.0, right=-0.5),
    GinzburgLandau2D(sites=3, beta=1.0),
    GinzburgLandau2D(sites=3, beta=1.0, boundary="periodic"),
], ids=["chain-zero", "chain-opposite", "ring", "lattice-transpose", "lattice-zero", "torus"])
def test_ginzburg_landau_symmetry_invariance(target) -> None:
    x = torch.randn(64, target.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (symmetry,) = target.symmetries()
    moved = symmetry.apply(x)

    assert torch.allclose(target.log_prob(moved), target.log_prob(x), rtol=1e-12, atol=1e-10)
    # The symmetry exchanges the phases: it flips the sign of the magnetization.
    assert torch.allclose(moved.mean(dim=1), -x.mean(dim=1))


def test_asymmetric_boundaries_declare_none() -> None:
    assert GinzburgLandau1D(sites=4, beta=1.0, left=1.0, right=0.5).symmetries() == []
    assert GinzburgLandau2D(sites=3, beta=1.0, top=1.0, left=1.0).symmetries() == []


def _write_spec(tmp_path: Path, tiny_spec: Path, **changes: object) -> Path:
    spec = yaml.safe_load(tiny_spec.read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        spec.setdefault(section, {})[key] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_symmetrized_run_round_trip(tiny_spec: Path, tmp_path: Path,
                                                          run_cli: RunCli) -> None:
    spec = _write_spec(tmp_path, tiny_spec, tt__symmetrize=True)
    fitted = run_cli("fit", spec, "--out", tmp_path / "run")
    assert fitted.exit_code == 0, fitted.output

    restored = restore_run(tmp_path / "run" / "run.h5", torch.device("cpu"))
    base = restored.sampler.base
    assert isinstance(base, SymmetrizedBase)
    assert base.group == generate_group(restored.target.symmetries(), 4)
    # The restored base is symmetric: log q is the same at a point and its mirror image.
    t = 2 * torch.rand(32, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) - 1
    assert torch.allclose(base.log_prob(t), base.log_prob(-t), atol=1e-12)

    evaluated = run_cli("evaluate", tmp_path / "run" / "run.h5", "-n", "256", "--json")
    assert evaluated.exit_code == 0, evaluated.output


def test_symmetrize_without_symmetry_rejected(tiny_spec: Path, tmp_path: Path,
                                                                run_cli: RunCli) -> None:
    spec = _write_spec(tmp_path, tiny_spec, tt__symmetrize=True, target__left=1.0, target__right=0.5)
    result = run_cli("fit", spec, "--out", tmp_path / "run")

    assert result.exit_code == 2, result.output
    assert "tt.symmetrize" in result.output
    assert "declares no symmetry" in result.output
    assert not (tmp_path / "run").exists()


def test_symmetrize_lopsided_box_rejected(tiny_spec: Path, tmp_path: Path,
                                                          run_cli: RunCli) -> None:
    spec = yaml.safe_load(tiny_spec.read_text())
    spec["tt"]["symmetrize"] = True
    spec["box"] = [-2.0, 3.0]
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = run_cli("fit", path, "--out", tmp_path / "run")

    assert result.exit_code == 2, result.output
    assert "box" in result.output
    assert "symmetric about 0" in " ".join(result.output.split())


def test_false_plugin_symmetry_rejected(tmp_path: Path, run_cli: RunCli) -> None:
    (tmp_path / "tilted.py").write_text(
        "import torch\n"
        "from ttflow_cli.targets.base import Target\n"
        "from ttflow_cli.tt.symmetry import SignedPermutation\n\n\n"
        "class Tilted(Target):\n"
        "    dim = 2\n\n"
        "    def log_prob(self, x):\n"
        "        return -(x**2).sum(dim=1) + 0.5 * x[:, 0]\n\n"
        "    def default_box(self):\n"
        "        return [(-4.0, 4.0)] * 2\n\n"
        "    def symmetries(self):\n"
        "        return [SignedPermutation((0, 1), (-1, -1))]\n"
    )
    (tmp_path / "tilted.yaml").write_text(
        "target: {plugin: tilted.py:Tilted}\ntt: {symmetrize: true}\nflow: {kind: none}\n"
    )
    result = run_cli("fit", tmp_path / "tilted.yaml", "--out", tmp_path / "run")

    assert result.exit_code == 2, result.output
    assert "symmetry 0" in result.output
    assert "not a symmetry" in " ".join(result.output.split())


def test_symmetrized_base_restores_mirror_mode() -> None:
    """A base with one of two mirror modes misses log 2 of log Z; its average over the group does not."""
    covariance = 0.15**2
    # Each Gaussian of the target has mass m^2 inside [-1, 1]^2, with m the mass of
    # N(0.6, 0.15^2) in [-1, 1], so exact Z = 2 m^2.
    m = 0.5 * (math.erf(0.4 / (0.15 * math.sqrt(2))) - math.erf(-1.6 / (0.15 * math.sqrt(2))))
    exact_log_z = math.log(2 * m * m)

    def log_target(t: torch.Tensor) -> torch.Tensor:
        # Two Gaussians at +-(0.6, 0.6), each of unit mass on the whole plane.
        near = -((t - 0.6) ** 2).sum(dim=1) / (2 * covariance)
        far = -((t + 0.6) ** 2).sum(dim=1) / (2 * covariance)
        return torch.logaddexp(near, far) - math.log(2 * math.pi * covariance)

    one_mode = DefensiveTT(_one_corner_tt(), 0.0)
    both = SymmetrizedBase(one_mode, generate_group([_swap_and_flip()], 2))
    results = {}
    for name, base in [("one mode", one_mode), ("symmetrized", both)]:
        t, log_q = base.sample(20000, torch.Generator().manual_seed(4))
        results[name] = estimate_from_log_weights(log_target(t) - log_q)

    symmetrized = results["symmetrized"]
    assert symmetrized.log_z == pytest.approx(exact_log_z, abs=1e-6)
    assert symmetrized.ess_fraction > 0.99
    # The one-mode base estimates the mass of its own mode only, and its error bar
    # does not show it: the estimate is off by log 2 at high confidence.
    one_mode_estimate = results["one mode"]
    assert one_mode_estimate.log_z == pytest.approx(exact_log_z - math.log(2.0), abs=1e-6)
    assert one_mode_estimate.log_z_err < 1e-6


def test_shipped_lattice_spec_symmetry_checks_out() -> None:
    from ttflow_cli.config import load_spec, resolve_box
    from ttflow_cli.tt.box import Box
    from ttflow_cli.workflow.fit import symmetry_group

    spec, target = load_spec(Path(__file__).parents[1] / "targets" / "gl2d.yaml")
    group = symmetry_group(spec, target, Box(resolve_box(spec, target)), torch.device("cpu"))

    assert spec.tt.symmetrize
    assert len(group) == 2
