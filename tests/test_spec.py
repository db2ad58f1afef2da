"""Tests of spec loading: validation messages, defaults, overrides and round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from ttflow_cli.config import Spec, load_spec, resolve_box, spec_from_text, spec_to_yaml
from ttflow_cli.errors import ConfigError
from ttflow_cli.targets import GaussianMixture, GinzburgLandau1D

REPO = Path(__file__).resolve().parents[1]
SHIPPED_SPECS = sorted((REPO / "targets").glob("*.yaml")) + [REPO / "tests" / "data" / "tiny.yaml"]
GL_TARGET = "target: {name: ginzburg_landau_1d, sites: 4, beta: 1.0}\n"


def _write(tmp_path: Path, text: str, name: str = "gl1d.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


BAD_SPECS = {
    "unknown_section_key": (
        GL_TARGET + "tt: {max_rnk: 3}\n",
        r"tt\.max_rnk: unknown key; did you mean 'max_rank'\?$",
    ),
    "steps_not_integer": (
        GL_TARGET + "train: {steps: many}\n",
        r"train\.steps: must be a non-negative integer; got 'many'$",
    ),
    "steps_float": (GL_TARGET + "train: {steps: 10.5}\n", r"train\.steps: must be a non-negative integer; got 10\.5"),
    "steps_bool": (GL_TARGET + "train: {steps: true}\n", r"train\.steps: .*; got True"),
    "yaml_syntax": (GL_TARGET + "tt: {nodes: [1, 2}\n", r"invalid YAML at line 2, column \d+"),
    "top_level_list": ("- a\n- b\n", r"the top level must be a mapping"),
    "empty_file": ("", r"the spec is empty"),
    "missing_target": ("tt: {nodes: 8}\n", r"target: missing required section"),
    "target_not_mapping": ("target: banana\n", r"target: must be a mapping; got 'banana'"),
    "name_and_plugin": (
        "target: {name: banana, plugin: x.py:X}\n",
        r"target: both 'name' and 'plugin' are set",
    ),
    "neither_name_nor_plugin": ("target: {sites: 3}\n", r"target: neither 'name' nor 'plugin' is set"),
    "unknown_target": (
        "target: {name: many_wel, dim: 4}\n",
        r"target\.name: unknown built-in target 'many_wel'; did you mean 'many_well'\?",
    ),
    "negative_sites": (
        "target: {name: ginzburg_landau_1d, sites: -3, beta: 1.0}\n",
        r"target\.sites: must be a positive integer; got -3$",
    ),
    "target_param_typo": (
        "target: {name: ginzburg_landau_1d, sites: 3, bta: 1.0}\n",
        r"target\.bta: unknown key; did you mean 'beta'\?",
    ),
    "periodic_with_left": (
        "target: {name: ginzburg_landau_1d, sites: 3, beta: 1.0, boundary: periodic, left: 1.0}\n",
        r"target\.left: Dirichlet values are not used with boundary 'periodic'",
    ),
    "bad_boundary": (
        "target: {name: ginzburg_landau_1d, sites: 3, beta: 1.0, boundary: open}\n",
        r"target\.boundary: must be one of 'dirichlet', 'periodic'; got 'open'",
    ),
    "odd_many_well": ("target: {name: many_well, dim: 5}\n", r"target\.dim: must be an even integer"),
    "mixture_scales_count": (
        "target: {name: gaussian_mixture, means: [[0], [1]], scales: [1, 2, 3]}\n",
        r"target\.scales: must have one entry per mean \(2\); got 3 entries",
    ),
    "mixture_element": (
        "target: {name: gaussian_mixture, means: [[0, 1], [1, x]], scales: 1}\n",
        r"target\.means\[1\]\[1\]: must be a number; got 'x'",
    ),
    "box_reversed": (GL_TARGET + "box: [3, -3]\n", r"box: must have low < high; got \[3, -3\]"),
    "box_wrong_count": (GL_TARGET + "box: [[0, 1], [0, 1]]\n", r"box: expected 4 intervals, one per coordinate; got 2"),
    "box_bad_entry": (
        GL_TARGET + "box: [[0, 1], [0, x], [0, 1], [0, 1]]\n",
        r"box: entry 1 must be a pair \[low, high\] of finite numbers",
    ),
    "box_infinite": (GL_TARGET + "box: [-.inf, 1]\n", r"box: must be a pair \[low, high\] of finite numbers"),
    "flow_kind": (GL_TARGET + "flow: {kind: maf}\n", r"flow\.kind: must be one of 'affine', 'spline', 'none'; got 'maf'"),
    "nodes_range": (GL_TARGET + "tt: {nodes: 1000}\n", r"tt\.nodes: must be an integer from 2 to 256; got 1000"),
    "tolerance_range": (GL_TARGET + "tt: {tolerance: 0}\n", r"tt\.tolerance: must be a number in \(0, 1\); got 0"),
    "rank_order": (GL_TARGET + "tt: {init_rank: 8, max_rank: 4}\n", r"tt\.max_rank: must be at least init_rank \(8\)"),
    "negative_learning_rate": (
        GL_TARGET + "train: {learning_rate: -1.0e-3}\n",
        r"train\.learning_rate: must be a positive number; got -0\.001",
    ),
    "nan_clip": (GL_TARGET + "train: {clip_norm: .nan}\n", r"train\.clip_norm: must be a positive number; got nan"),
    "dtype": (GL_TARGET + "train: {dtype: float16}\n", r"train\.dtype: must be one of 'float32', 'float64'"),
    "eval_samples": (GL_TARGET + "evaluate: {samples: 1}\n", r"evaluate\.samples: must be an integer >= 2; got 1"),
    "seed": (GL_TARGET + "seed: -1\n", r"seed: must be a non-negative integer; got -1$"),
    "unsafe_name": (GL_TARGET + "name: ../escape\n", r"name: must be a safe file name"),
    "section_typo": (GL_TARGET + "trian: {steps: 3}\n", r"trian: unknown key; did you mean 'train'\?"),
    "section_not_mapping": (GL_TARGET + "tt: [1]\n", r"tt: must be a mapping; got \[1\]"),
    "plugin_missing": ("target: {plugin: nothere.py:Thing}\n", r"target\.plugin: plugin file not found: .*nothere\.py"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_rejected(tmp_path: Path, case: str) -> None:
    text, pattern = BAD_SPECS[case]
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=pattern) as caught:
        load_spec(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    assert caught.value.exit_code == 2


def test_missing_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.yaml: spec file not found"):
        load_spec(tmp_path / "absent.yaml")


def test_defaults_filled(tmp_path: Path) -> None:
    spec, target = load_spec(_write(tmp_path, GL_TARGET, "my-run.yaml"))
    assert spec.name == "my-run"
    assert spec.seed == 0
    assert spec.box is None
    assert spec.tt.nodes == 32
    assert spec.tt.max_rank == 24
    assert spec.tt.max_evaluations == 20_000_000
    assert spec.flow.kind == "affine"
    assert spec.flow.base == "tt"
    assert spec.train.steps == 1000
    assert spec.train.learning_rate == 1e-3
    assert spec.train.dtype == "float64"
    assert spec.evaluate.samples == 100_000
    assert spec.target["delta"] == 0.04
    assert spec.target["left"] == 0.0
    assert isinstance(target, GinzburgLandau1D)
    assert resolve_box(spec, target) == [(-2.5, 2.5)] * 4


def test_numbers_written_without_dot(tmp_path: Path) -> None:
    # PyYAML reads 1e-4 (no dot) as a string; the spec must still take it as a number.
    spec, _ = load_spec(_write(tmp_path, GL_TARGET + "train: {learning_rate: 1e-4}\ntt: {tolerance: 1e-6}\n"))
    assert spec.train.learning_rate == 1e-4
    assert spec.tt.tolerance == 1e-6


def test_null_section_means_defaults(tmp_path: Path) -> None:
    spec, _ = load_spec(_write(tmp_path, GL_TARGET + "tt:\n"))
    assert spec.tt.nodes == 32


def test_overrides_applied(tmp_path: Path) -> None:
    path = _write(tmp_path, GL_TARGET + "train: {steps: 10}\n")
    spec, target = load_spec(path, ["train.steps=200", "box=[-3,3]", "target.beta=0.5", "tt.kick=0"])
    assert spec.train.steps == 200
    assert spec.box == (-3.0, 3.0)
    assert target.beta == 0.5
    assert spec.tt.kick == 0
    assert resolve_box(spec, target) == [(-3.0, 3.0)] * 4


def test_override_creates_omitted_section(tmp_path: Path) -> None:
    spec, _ = load_spec(_write(tmp_path, GL_TARGET), ["evaluate.samples=10"])
    assert spec.evaluate.samples == 10


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("tt.max_rnk=3", r"tt\.max_rnk: unknown key in the override 'tt\.max_rnk=3'; did you mean 'tt\.max_rank'\?$"),
        ("trian.steps=3", r"trian: unknown key in the override 'trian\.steps=3'; did you mean 'train'\?"),
        ("train.steps.x=3", r"train\.steps\.x: 'train\.steps' has no sub-keys"),
        ("steps", r"^override 'steps': expected KEY=VALUE"),
        ("box=[-3", r"^override 'box=\[-3': the value is not valid YAML"),
        ("train.steps=many", r"train\.steps: must be a non-negative integer; got 'many'"),
        ("target.bta=2", r"target\.bta: unknown key; did you mean 'beta'\?"),
    ],
)
def test_bad_override_rejected(tmp_path: Path, override: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_spec(_write(tmp_path, GL_TARGET), [override])


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    text = GL_TARGET + "box: [[-3, 3], [-2, 2], [-1, 1], [0, 1]]\ntrain: {learning_rate: 3.0e-4}\nseed: 7\n"
    spec, _ = load_spec(_write(tmp_path, text))
    written = spec_to_yaml(spec)
    again, target = spec_from_text(written, "stored.yaml", tmp_path)
    assert again == spec
    assert isinstance(target, GinzburgLandau1D)
    assert yaml.safe_load(written)["tt"]["nodes"] == 32


def test_round_trip_keeps_absolute_plugin_path(tmp_path: Path) -> None:
    spec, _ = load_spec(REPO / "targets" / "phi4.yaml")
    plugin = spec.target["plugin"]
    assert plugin == f"{REPO / 'targets' / 'phi4_lattice.py'}:Phi4Lattice"
    again, target = spec_from_text(spec_to_yaml(spec), "stored.yaml", tmp_path)
    assert again == spec
    assert target.dim == 16


def test_spec_from_text_names_source() -> None:
    with pytest.raises(ConfigError, match=r"^run\.h5:/config: tt\.nodes: "):
        spec_from_text(GL_TARGET + "tt: {nodes: 0}\n", "run.h5:/config", Path("."))


@pytest.mark.parametrize("path", SHIPPED_SPECS, ids=lambda p: p.name)
def test_shipped_spec_loads(path: Path) -> None:
    spec, target = load_spec(path)
    assert isinstance(spec, Spec)
    assert spec.name == path.stem
    box = resolve_box(spec, target)
    assert len(box) == target.dim


def test_mixture40_means_match_generator() -> None:
    spec, target = load_spec(REPO / "targets" / "mixture40.yaml")
    expected = np.random.default_rng(0).uniform(-40, 40, size=(40, 2))
    assert isinstance(target, GaussianMixture)
    np.testing.assert_allclose(target.means, expected, atol=1e-6)
    assert target.exact_log_z() == pytest.approx(0.0, abs=1e-12)
