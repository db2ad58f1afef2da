"""Tests of the built-in targets, the example plugin, the registry and exact log Z values."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import erf

from ttflow_cli.errors import ConfigError
from ttflow_cli.targets import (
    BUILTIN_TARGETS,
    Banana,
    GaussianMixture,
    GinzburgLandau1D,
    GinzburgLandau2D,
    ManyWell,
    Target,
    build_target,
    resolve_target_section,
)
from ttflow_cli.targets.transfer import gauss_legendre

REPO = Path(__file__).resolve().parents[1]
PLUGIN_FILE = REPO / "targets" / "phi4_lattice.py"
REFERENCE = json.loads((Path(__file__).parent / "data" / "logz.json").read_text())

# Transfer operator vs the independent 3000-node reference: the 600-node default grid
# agrees to about 1e-11, so 1e-6 leaves room for platform differences only.
REFERENCE_TOLERANCE = 1e-6
# Two float64 quadratures of a smooth integrand on different grids agree to ~1e-12.
QUADRATURE_TOLERANCE = 1e-8
# Evaluating one row alone and in a batch runs the same float64 operations.
BATCH_TOLERANCE_FLOAT64 = 1e-12
# float32 reductions may be ordered differently for one row and for a batch.
BATCH_TOLERANCE_FLOAT32 = 1e-5
# The default boxes are built to drop at most about 1e-6 of the mass per pair.
BOX_MASS_TOLERANCE = 1e-5


def _plugin(**params: object) -> Target:
    return build_target({"plugin": f"{PLUGIN_FILE}:Phi4Lattice", **params}, REPO)


CASES: dict[str, Callable[[], Target]] = {
    "gl1d_dirichlet": lambda: GinzburgLandau1D(sites=5, beta=1.0, left=0.5, right=-1.0),
    "gl1d_periodic": lambda: GinzburgLandau1D(sites=5, beta=0.5, boundary="periodic"),
    "gl2d_dirichlet": lambda: GinzburgLandau2D(sites=3, beta=1.0, top=1.0, bottom=1.0, left=-1.0, right=-1.0),
    "gl2d_periodic": lambda: GinzburgLandau2D(sites=3, beta=1.0, boundary="periodic"),
    "many_well": lambda: ManyWell(dim=6),
    "gaussian_mixture": lambda: GaussianMixture(
        means=[[0.0, 0.0, 0.0], [3.0, -1.0, 2.0]], scales=[0.5, 1.0], weights=[1.0, 2.0]
    ),
    "banana": lambda: Banana(dim=4),
    "phi4_plugin": lambda: _plugin(sites=3, kappa=0.25, lam=0.5),
}

DEVICES = ["cpu", "meta"] + (["cuda"] if torch.cuda.is_available() else [])


def _uniform_in_box(target: Target, count: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    box = torch.tensor(target.default_box(), dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    unit = torch.rand(count, target.dim, generator=generator, dtype=torch.float64)
    return (box[:, 0] + unit * (box[:, 1] - box[:, 0])).to(dtype)


def test_cases_cover_every_builtin() -> None:
    covered = {type(factory()) for factory in CASES.values()}
    missing = {name for name, (_, cls) in BUILTIN_TARGETS.items() if cls not in covered}
    assert not missing


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", sorted(CASES))
def test_log_prob_properties(case: str, dtype: torch.dtype) -> None:
    target = CASES[case]()
    box = target.default_box()
    assert len(box) == target.dim
    assert all(low < high for low, high in box)

    x = _uniform_in_box(target, 64, dtype)
    log_p = target.log_prob(x)
    assert log_p.shape == (64,)
    assert log_p.dtype == dtype
    assert torch.isfinite(log_p).all()

    tolerance = BATCH_TOLERANCE_FLOAT64 if dtype == torch.float64 else BATCH_TOLERANCE_FLOAT32
    single = torch.cat([target.log_prob(x[i : i + 1]) for i in range(8)])
    torch.testing.assert_close(single, log_p[:8], rtol=tolerance, atol=tolerance)

    for name, observable in target.observables().items():
        values = observable(x)
        assert values.shape == (64,), name
        assert torch.isfinite(values).all(), name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_log_prob_follows_device(case: str, device: str) -> None:
    target = CASES[case]()
    x = torch.zeros(5, target.dim, dtype=torch.float32, device=device)
    log_p = target.log_prob(x)
    assert log_p.device.type == device
    assert log_p.dtype == torch.float32
    assert log_p.shape == (5,)


@pytest.mark.parametrize("case", sorted(CASES))
def test_log_prob_gradient_finite(case: str) -> None:
    target = CASES[case]()
    x = _uniform_in_box(target, 16, torch.float64).requires_grad_()
    target.log_prob(x).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("case", sorted(CASES))
def test_log_prob_rejects_wrong_shape(case: str) -> None:
    target = CASES[case]()
    with pytest.raises(ValueError, match=rf"\(N, {target.dim}\)"):
        target.log_prob(torch.zeros(3, target.dim + 1, dtype=torch.float64))


def test_gl1d_energy_by_hand() -> None:
    target = GinzburgLandau1D(sites=2, beta=2.0, delta=0.04, left=0.2, right=0.0)
    u = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    # h = 1/3, so delta / (2 h^2) = 0.18. Bonds 0.2 -> 0.5 -> -1.0 -> 0.0 have steps
    # 0.3, -1.5, 1.0. Onsite (1 - u^2)^2 / 0.16 is 3.515625 at 0.5 and 0 at -1.
    gradient = 0.18 * (0.3**2 + 1.5**2 + 1.0**2)
    onsite = 0.75**2 / 0.16
    assert target.potential(u).item() == pytest.approx(gradient + onsite, rel=1e-14)
    assert target.log_prob(u).item() == pytest.approx(-2.0 * (gradient + onsite), rel=1e-14)
    assert target.energy(u).item() == pytest.approx(gradient + onsite, rel=1e-14)


def test_gl1d_periodic_differs_from_dirichlet() -> None:
    ones = torch.ones(1, 4, dtype=torch.float64)
    periodic = GinzburgLandau1D(sites=4, beta=1.0, boundary="periodic")
    dirichlet = GinzburgLandau1D(sites=4, beta=1.0)
    # A constant field at a well minimum costs nothing on a ring. With zero Dirichlet
    # values, the two end bonds have steps of 1 and h = 1/5: 2 * 0.02 * 25 = 1.
    assert periodic.potential(ones).item() == 0.0
    assert dirichlet.potential(ones).item() == pytest.approx(1.0, rel=1e-14)
    # Alternating signs on a ring of 4: four bonds with step 2, h = 1/4: 0.02 * 16 * 16.
    alternating = torch.tensor([[1.0, -1.0, 1.0, -1.0]], dtype=torch.float64)
    assert periodic.potential(alternating).item() == pytest.approx(5.12, rel=1e-14)


def test_gl1d_rejects_dirichlet_value_with_periodic() -> None:
    with pytest.raises(ValueError, match="left"):
        GinzburgLandau1D(sites=4, beta=1.0, boundary="periodic", left=1.0)


def test_gl1d_default_box_widens_for_boundary() -> None:
    assert GinzburgLandau1D(sites=3, beta=1.0).default_box() == [(-2.5, 2.5)] * 3
    assert GinzburgLandau1D(sites=3, beta=1.0, left=-3.0, right=2.2).default_box() == [(-3.5, 2.7)] * 3


def test_gl2d_energy_row_major() -> None:
    target = GinzburgLandau2D(sites=2, beta=1.0, top=1.0, bottom=0.0, left=0.0, right=0.0)
    # Rows (1, 1) on top of (0, 0): vertical steps top->row0 0, 0; row0->row1 1, 1;
    # row1->bottom 0, 0. Horizontal: left->1, 1->1, 1->right = 1, 0, 1; the bottom row
    # has none. h = 1/3, so the gradient term is 0.18 * 4; the two zeros cost 6.25 each.
    # Column-major order would give 0.18 * 6 instead.
    x = torch.tensor([[1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    assert target.potential(x).item() == pytest.approx(0.18 * 4 + 2 * 6.25, rel=1e-14)


def test_gl2d_single_site_by_hand() -> None:
    target = GinzburgLandau2D(sites=1, beta=1.0, top=1.0, bottom=1.0, left=-1.0, right=-1.0)
    # h = 1/2: 0.04 / (2 * 0.25) = 0.08 times steps 0.5, 0.5, 1.5, 1.5 (squares sum to 5).
    u = torch.tensor([[0.5]], dtype=torch.float64)
    assert target.potential(u).item() == pytest.approx(0.08 * 5 + 0.75**2 / 0.16, rel=1e-14)


def test_gl2d_periodic_constant_field_costs_nothing() -> None:
    target = GinzburgLandau2D(sites=3, beta=1.0, boundary="periodic")
    assert target.potential(-torch.ones(1, 9, dtype=torch.float64)).item() == 0.0


@pytest.mark.parametrize("entry", REFERENCE["ginzburg_landau_1d"], ids=lambda e: f"{e['sites']}sites")
def test_gl1d_log_z_matches_reference(entry: dict) -> None:
    params = {key: value for key, value in entry.items() if key != "log_z"}
    target = GinzburgLandau1D(**params)
    assert abs(target.exact_log_z() - entry["log_z"]) < REFERENCE_TOLERANCE


def _brute_force_log_z(target: Target, nodes: int, half_width: float) -> float:
    """log Z by a tensor-product Gauss-Legendre rule over [-half_width, half_width]^d."""
    u, w = gauss_legendre(nodes, -half_width, half_width)
    points = np.stack(np.meshgrid(*[u] * target.dim, indexing="ij"), axis=-1).reshape(-1, target.dim)
    log_weights = sum(np.meshgrid(*[np.log(w)] * target.dim, indexing="ij")).reshape(-1)
    log_p = target.log_prob(torch.from_numpy(points)).numpy()
    return float(torch.logsumexp(torch.from_numpy(log_p + log_weights), dim=0))


@pytest.mark.parametrize(
    "params",
    [
        {"sites": 2, "beta": 1.0, "left": 0.3, "right": -0.2},
        {"sites": 2, "beta": 0.3, "boundary": "periodic"},
        {"sites": 3, "beta": 0.5, "boundary": "periodic"},
    ],
    ids=["dirichlet2", "ring2", "ring3"],
)
def test_transfer_log_z_matches_brute_force(params: dict) -> None:
    target = GinzburgLandau1D(**params)
    # These grids resolve the integrands to about 1e-10 (measured against finer grids).
    nodes = 150 if target.dim == 2 else 90
    assert target.exact_log_z() == pytest.approx(
        _brute_force_log_z(target, nodes, 3.5), abs=QUADRATURE_TOLERANCE
    )


@pytest.mark.parametrize(
    "params",
    [{"sites": 2, "beta": 1.0, "left": 0.8, "right": -0.3}, {"sites": 2, "beta": 0.3, "boundary": "periodic"}],
    ids=["dirichlet2", "ring2"],
)
def test_transfer_site_moments_match_brute_force(params: dict) -> None:
    target = GinzburgLandau1D(**params)
    u, w = gauss_legendre(150, -3.5, 3.5)
    grid = torch.from_numpy(np.stack(np.meshgrid(u, u, indexing="ij"), axis=-1).reshape(-1, 2))
    mass = torch.softmax(target.log_prob(grid) + torch.from_numpy(np.log(np.outer(w, w)).reshape(-1)), dim=0)
    mean, second = target.exact_site_moments()
    np.testing.assert_allclose(mean, (mass[:, None] * grid).sum(0).numpy(), atol=QUADRATURE_TOLERANCE)
    np.testing.assert_allclose(second, (mass[:, None] * grid**2).sum(0).numpy(), atol=QUADRATURE_TOLERANCE)


def test_gl2d_has_no_exact_log_z() -> None:
    assert GinzburgLandau2D(sites=2, beta=1.0).exact_log_z() is None


@pytest.mark.parametrize("entry", REFERENCE["many_well"], ids=lambda e: f"dim{e['dim']}")
def test_many_well_log_z_matches_reference(entry: dict) -> None:
    target = ManyWell(dim=entry["dim"], a=entry["a"], b=entry["b"], c=entry["c"])
    assert abs(target.exact_log_z() - entry["log_z"]) < QUADRATURE_TOLERANCE


def test_many_well_default_box_holds_mass() -> None:
    target = ManyWell(dim=32)
    (low, high), (low2, high2) = target.default_box()[:2]
    u, w = gauss_legendre(400, low, high)
    log_inside = math.log(np.sum(w * np.exp(-target._well(u)))) - target.log_z_well()
    inside_x2 = 0.5 * (erf(high2 / math.sqrt(2)) - erf(low2 / math.sqrt(2)))
    log_fraction = 16 * (log_inside + math.log(inside_x2))
    assert log_fraction > -BOX_MASS_TOLERANCE * 16


def test_many_well_rejects_odd_dim() -> None:
    with pytest.raises(ValueError, match="even"):
        ManyWell(dim=3)


@pytest.mark.parametrize(
    "target",
    [
        GaussianMixture(means=[[0.0, 0.0], [4.0, -3.0], [-2.0, 5.0]], scales=[0.7, 1.0, 0.5], weights=[1.0, 2.0, 0.5]),
        Banana(dim=2, curvature=0.25, scale=2.0),
        Banana(dim=2, curvature=-0.1, scale=1.5),
        ManyWell(dim=2),
    ],
    ids=["mixture", "banana", "banana_negative_curvature", "many_well"],
)
def test_2d_log_z_matches_quadrature_over_default_box(target: Target) -> None:
    (x_low, x_high), (y_low, y_high) = target.default_box()
    x, wx = gauss_legendre(400, x_low, x_high)
    y, wy = gauss_legendre(400, y_low, y_high)
    grid = torch.from_numpy(np.stack(np.meshgrid(x, y, indexing="ij"), axis=-1).reshape(-1, 2))
    log_weights = torch.from_numpy(np.log(np.outer(wx, wy)).reshape(-1))
    log_z_box = torch.logsumexp(target.log_prob(grid) + log_weights, dim=0).item()
    # The box drops a little mass, so the quadrature may fall short of Z by that much.
    assert target.exact_log_z() - BOX_MASS_TOLERANCE < log_z_box < target.exact_log_z() + QUADRATURE_TOLERANCE


def test_mixture_log_z_ignores_normalization() -> None:
    target = GaussianMixture(means=[[0.0], [1.0]], scales=0.5, weights=[3.0, 4.0])
    assert target.exact_log_z() == pytest.approx(math.log(7.0), rel=1e-15)
    assert GaussianMixture(means=[[0.0], [1.0]], scales=0.5).exact_log_z() == pytest.approx(0.0, abs=1e-15)


def test_mixture_log_prob_single_gaussian() -> None:
    target = GaussianMixture(means=[[1.0, -2.0]], scales=2.0, weights=[3.0])
    x = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    expected = math.log(3.0) - 5.0 / 8.0 - math.log(2.0 * math.pi * 4.0)
    assert target.log_prob(x).item() == pytest.approx(expected, rel=1e-14)


def test_mixture_rejects_ragged_means() -> None:
    with pytest.raises(ValueError, match="same length"):
        GaussianMixture(means=[[0.0, 0.0], [1.0]], scales=1.0)


def test_plugin_builds_from_relative_path() -> None:
    section = {"plugin": "targets/phi4_lattice.py:Phi4Lattice", "sites": 2, "kappa": 0.1, "lam": 1.0}
    target = build_target(section, REPO)
    assert target.dim == 4
    resolved = resolve_target_section(section, REPO)
    assert resolved["plugin"] == f"{PLUGIN_FILE}:Phi4Lattice"


def test_phi4_action_by_hand() -> None:
    target = _plugin(sites=2, kappa=0.25, lam=0.5)
    # For a constant field phi, each site contributes
    # -2 kappa * 2 phi^2 + phi^2 + lam (phi^2 - 1)^2, which is 0 at phi = 1.
    assert target.log_prob(torch.ones(1, 4, dtype=torch.float64)).item() == pytest.approx(0.0, abs=1e-15)
    phi = 0.5
    per_site = -2 * 0.25 * 2 * phi**2 + phi**2 + 0.5 * (phi**2 - 1) ** 2
    x = torch.full((1, 4), phi, dtype=torch.float64)
    assert target.log_prob(x).item() == pytest.approx(-4 * per_site, rel=1e-14)


def _write_plugin(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "my_plugin.py"
    path.write_text(source)
    return path


def test_plugin_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"target\.plugin: plugin file not found: .*absent\.py"):
        build_target({"plugin": "absent.py:Thing"}, tmp_path)


def test_plugin_missing_class(tmp_path: Path) -> None:
    _write_plugin(tmp_path, "X = 1\n")
    with pytest.raises(ConfigError, match=r"target\.plugin: class 'Thing' not found in .*my_plugin\.py"):
        build_target({"plugin": "my_plugin.py:Thing"}, tmp_path)


def test_plugin_not_a_target(tmp_path: Path) -> None:
    _write_plugin(tmp_path, "class Thing:\n    dim = 2\n")
    with pytest.raises(ConfigError, match=r"'Thing' .* must be a subclass of .*Target"):
        build_target({"plugin": "my_plugin.py:Thing"}, tmp_path)


def test_plugin_bad_params() -> None:
    with pytest.raises(ConfigError, match=r"plugin .*Phi4Lattice rejected its parameters: .*'kapa'"):
        _plugin(sites=2, kapa=0.1, lam=1.0)


def test_plugin_value_error_in_constructor() -> None:
    with pytest.raises(ConfigError, match=r"rejected its parameters: lam must be non-negative"):
        _plugin(sites=2, kappa=0.1, lam=-1.0)


def test_plugin_import_failure(tmp_path: Path) -> None:
    _write_plugin(tmp_path, "def broken(:\n")
    with pytest.raises(ConfigError, match=r"target\.plugin: importing .*my_plugin\.py failed with SyntaxError"):
        build_target({"plugin": "my_plugin.py:Thing"}, tmp_path)


def test_plugin_invalid_dim(tmp_path: Path) -> None:
    source = (
        "from ttflow_cli.targets.base import Target\n"
        "class Thing(Target):\n"
        "    dim = 0\n"
        "    def log_prob(self, x):\n"
        "        return x.sum(dim=1)\n"
        "    def default_box(self):\n"
        "        return []\n"
    )
    _write_plugin(tmp_path, source)
    with pytest.raises(ConfigError, match=r"must set 'dim' to a positive integer; got 0"):
        build_target({"plugin": "my_plugin.py:Thing"}, tmp_path)


def test_plugin_reference_needs_class(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"target\.plugin: expected 'path/to/file\.py:ClassName'"):
        build_target({"plugin": "my_plugin.py"}, tmp_path)


def test_registry_unknown_name_suggests() -> None:
    with pytest.raises(ConfigError, match=r"target\.name: .*'ginzburg_landau1d'.*did you mean 'ginzburg_landau_1d'"):
        build_target({"name": "ginzburg_landau1d"}, REPO)


def test_registry_params_error_names_key() -> None:
    with pytest.raises(ConfigError, match=r"^target\.sites: must be a positive integer; got -3$"):
        build_target({"name": "ginzburg_landau_1d", "sites": -3, "beta": 1.0}, REPO)


def test_registry_resolves_defaults() -> None:
    resolved = resolve_target_section({"name": "ginzburg_landau_1d", "sites": 4, "beta": 1.0}, REPO)
    assert resolved == {
        "name": "ginzburg_landau_1d",
        "sites": 4,
        "beta": 1.0,
        "delta": 0.04,
        "boundary": "dirichlet",
        "left": 0.0,
        "right": 0.0,
    }
