"""Property tests over every flow kind in the registry, in float64 unless stated."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ttflow_cli.flows import (
    FLOW_KINDS,
    CouplingFlow,
    SplineFlow,
    build_flow,
    coupling_masks,
    flow_architecture,
    flow_from_architecture,
    rational_quadratic_spline,
)
from ttflow_cli.runfile import read_run, write_run
from ttflow_cli.workflow.runstate import flow_tree

# Round-trip error is a few ulps per layer times the scale factors, far below this.
INVERSE_TOL = 1e-10
# Autograd Jacobian and the analytic ladj differ only by float64 rounding.
LADJ_TOL = 1e-9
# float32 round trip through 4 layers with scales up to e^2 loses a few float32 ulps.
FLOAT32_INVERSE_TOL = 1e-4
# A spline bin with a knot derivative near its lower bound amplifies float32 rounding
# of the inverse's bin position, so the float32 log-determinants agree less closely.
FLOAT32_LADJ_TOL = 1e-3
# A spline with equal bins and unit derivatives is the identity only up to rounding.
IDENTITY_TOL = 1e-12
# Far outside the box and the spline interval [-1.5, 1.5] of the default tail bound.
FAR_OUTSIDE = (50.0, -50.0, 1e4, -1e4)
# Standard deviation of the random parameters: large enough that every layer is far
# from the identity, small enough that the log-scales stay below their bound.
PARAMETER_STD = 0.3

KINDS = [kind for kind in FLOW_KINDS if kind != "none"]
DIMS = [2, 3, 5]
ARCHITECTURE = {"layers": 4, "hidden": 16, "depth": 2, "max_log_scale": 2.0}
SPLINE_ARCHITECTURE = {"layers": 4, "hidden": 16, "depth": 2, "bins": 8, "tail_bound": 1.5}


def make_flow(kind: str, dim: int, seed: int = 0, dtype: torch.dtype = torch.float64):
    """Build a flow and set all parameters to small random normals, so it is not the identity."""
    flow = build_flow(kind, dim, **ARCHITECTURE).to(dtype)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in flow.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            parameter.copy_(PARAMETER_STD * noise)
    return flow


def base_points(n: int, dim: int, seed: int = 1, dtype: torch.dtype = torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return 1.5 * torch.randn(n, dim, generator=generator, dtype=torch.float64).to(dtype)


def jacobian_per_sample(flow, z: torch.Tensor) -> torch.Tensor:
    """Return the ``(N, d, d)`` autograd Jacobians ``dT/dz`` at each row of ``z``."""
    return torch.stack(
        [torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], row) for row in z]
    )


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("kind", KINDS)
class TestFlowProperties:
    def test_identity_at_init(self, kind, dim):
        flow = build_flow(kind, dim, **ARCHITECTURE).to(torch.float64)
        z = base_points(64, dim)

        x, ladj = flow(z)
        z_back, ladj_inverse = flow.inverse(z)

        assert torch.allclose(x, z, rtol=0.0, atol=IDENTITY_TOL)
        assert ladj.abs().max() <= IDENTITY_TOL
        assert torch.allclose(z_back, z, rtol=0.0, atol=IDENTITY_TOL)
        assert ladj_inverse.abs().max() <= IDENTITY_TOL

    def test_inverse_of_forward(self, kind, dim):
        flow = make_flow(kind, dim)
        z = base_points(256, dim)

        x, _ = flow(z)
        z_back, _ = flow.inverse(x)

        assert not torch.allclose(x, z), "randomized flow should not be the identity"
        assert torch.allclose(z_back, z, rtol=0.0, atol=INVERSE_TOL)

    def test_ladj_matches_slogdet(self, kind, dim):
        flow = make_flow(kind, dim)
        z = base_points(8, dim)

        _, ladj = flow(z)
        sign, logabsdet = torch.linalg.slogdet(jacobian_per_sample(flow, z))

        assert torch.all(sign != 0)
        assert torch.allclose(ladj, logabsdet, rtol=0.0, atol=LADJ_TOL)
        assert ladj.abs().max() > 0.1, "randomized flow should change volume"

    def test_inverse_ladj_is_negated(self, kind, dim):
        flow = make_flow(kind, dim)
        z = base_points(128, dim)

        x, ladj = flow(z)
        _, ladj_inverse = flow.inverse(x)

        assert torch.allclose(ladj_inverse, -ladj, rtol=0.0, atol=INVERSE_TOL)

    def test_gradients_reach_every_parameter(self, kind, dim):
        flow = make_flow(kind, dim)
        z = base_points(32, dim)
        z[:4] = 50.0
        z[4:8] = -50.0

        x, ladj = flow(z)
        (x.square().sum() + ladj.sum()).backward()

        for name, parameter in flow.named_parameters():
            assert parameter.grad is not None, f"no gradient reaches {name}"
            assert torch.isfinite(parameter.grad).all(), f"non-finite gradient of {name}"
            assert parameter.grad.abs().max() > 0, f"zero gradient of {name}"

    def test_finite_far_outside_box(self, kind, dim):
        flow = make_flow(kind, dim)
        z = torch.full((4, dim), 50.0, dtype=torch.float64)
        z[2:] = -50.0

        x, ladj = flow(z)
        z_back, _ = flow.inverse(x)

        assert torch.isfinite(x).all()
        assert torch.isfinite(ladj).all()
        assert torch.allclose(z_back, z, rtol=INVERSE_TOL, atol=INVERSE_TOL)

    def test_gradients_finite_far_outside(self, kind, dim):
        flow = make_flow(kind, dim)
        rows = [torch.full((dim,), value, dtype=torch.float64) for value in FAR_OUTSIDE]
        z = torch.stack(rows).requires_grad_(True)

        x, ladj = flow(z)
        (x.sum() + ladj.sum()).backward()

        assert torch.isfinite(z.grad).all()
        for name, parameter in flow.named_parameters():
            assert parameter.grad is not None, f"no gradient reaches {name}"
            assert torch.isfinite(parameter.grad).all(), f"non-finite gradient of {name}"

    def test_run_file_round_trip(self, kind, dim, tmp_path):
        flow = make_flow(kind, dim)
        path = tmp_path / "run.h5"
        write_run(path, {"flow": flow_tree(flow)})

        group = read_run(path, groups=["flow"]).tree["flow"]
        rebuilt = flow_from_architecture(json.loads(group["architecture"])).to(torch.float64)
        rebuilt.load_state_dict({name: torch.as_tensor(value) for name, value in group["state"].items()})
        z = base_points(64, dim)

        assert group["kind"] == kind
        assert torch.equal(rebuilt(z)[0], flow(z)[0])
        assert torch.equal(rebuilt(z)[1], flow(z)[1])

    def test_float32_runs(self, kind, dim):
        flow = make_flow(kind, dim, dtype=torch.float32)
        z = base_points(64, dim, dtype=torch.float32)

        x, ladj = flow(z)
        z_back, ladj_inverse = flow.inverse(x)

        assert x.dtype == torch.float32
        assert ladj.dtype == torch.float32
        assert torch.allclose(z_back, z, rtol=0.0, atol=FLOAT32_INVERSE_TOL)
        assert torch.allclose(ladj_inverse, -ladj, rtol=0.0, atol=FLOAT32_LADJ_TOL)

    def test_state_dict_round_trip(self, kind, dim):
        flow = make_flow(kind, dim)
        architecture_json = json.dumps(flow_architecture(flow))
        arrays = {name: tensor.numpy().copy() for name, tensor in flow.state_dict().items()}

        rebuilt = flow_from_architecture(json.loads(architecture_json)).to(torch.float64)
        rebuilt.load_state_dict({name: torch.from_numpy(array) for name, array in arrays.items()})
        z = base_points(64, dim)

        assert all(isinstance(array, np.ndarray) for array in arrays.values())
        assert torch.equal(rebuilt(z)[0], flow(z)[0])
        assert torch.equal(rebuilt(z)[1], flow(z)[1])
        assert torch.equal(rebuilt.inverse(z)[0], flow.inverse(z)[0])

    def test_every_output_depends_on_other_input(self, kind, dim):
        flow = make_flow(kind, dim)
        z = base_points(4, dim)

        jacobian = jacobian_per_sample(flow, z).abs().amax(dim=0)
        off_diagonal = jacobian * (1.0 - torch.eye(dim, dtype=jacobian.dtype))

        for output in range(dim):
            assert off_diagonal[output].max() > 0, f"output {output} depends on no other input"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", KINDS)
def test_flow_runs_on_cuda(kind):
    flow = make_flow(kind, 3)
    z = base_points(64, 3)

    x_cpu, ladj_cpu = flow(z)
    x_cuda, ladj_cuda = flow.to("cuda")(z.to("cuda"))

    assert x_cuda.device.type == "cuda"
    assert torch.allclose(x_cuda.cpu(), x_cpu, rtol=0.0, atol=INVERSE_TOL)
    assert torch.allclose(ladj_cuda.cpu(), ladj_cpu, rtol=0.0, atol=INVERSE_TOL)


def test_masks_cover_every_coordinate():
    for dim in DIMS:
        masks = coupling_masks(dim, 4)
        for first, second in zip(masks[0::2], masks[1::2]):
            assert torch.equal(first, ~second)
        for mask in masks:
            assert mask.any() and not mask.all()


def test_architecture_is_plain_json():
    flow = build_flow("affine", 3, **ARCHITECTURE)

    assert flow_architecture(flow) == {"kind": "affine", "dim": 3, **ARCHITECTURE}


def test_spline_architecture_is_plain_json():
    flow = build_flow("spline", 3, **SPLINE_ARCHITECTURE)

    assert flow_architecture(flow) == {"kind": "spline", "dim": 3, **SPLINE_ARCHITECTURE}


def random_spline_parameters(rows: int, bins: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    widths = torch.randn(rows, 1, bins, generator=generator, dtype=torch.float64)
    heights = torch.randn(rows, 1, bins, generator=generator, dtype=torch.float64)
    derivatives = torch.randn(rows, 1, bins - 1, generator=generator, dtype=torch.float64)
    return widths, heights, derivatives


def test_spline_is_monotonic_and_continuous():
    bound = 1.5
    inputs = torch.linspace(-2.0, 2.0, 4001, dtype=torch.float64)[:, None]
    parameters = [p.expand(inputs.shape[0], 1, -1) for p in random_spline_parameters(1, 6)]

    outputs, _ = rational_quadratic_spline(inputs, *parameters, bound=bound)
    steps = outputs.diff(dim=0)

    assert (steps > 0).all()
    # A jump would show as one large step: the steepest bin of these parameters has
    # slope far below 100, so a continuous spline moves less than 0.1 per grid step.
    assert steps.max() < 0.1


def test_spline_tails_are_identity():
    inputs = torch.tensor([[-3.0], [-1.5000001], [1.5000001], [40.0]], dtype=torch.float64)

    outputs, log_derivative = rational_quadratic_spline(
        inputs, *random_spline_parameters(4, 5), bound=1.5
    )

    assert torch.equal(outputs, inputs)
    assert torch.equal(log_derivative, torch.zeros_like(log_derivative))


def test_spline_log_derivative_matches_autograd():
    inputs = torch.linspace(-1.4, 1.4, 57, dtype=torch.float64)[:, None].requires_grad_(True)
    parameters = random_spline_parameters(57, 7)

    outputs, log_derivative = rational_quadratic_spline(inputs, *parameters, bound=1.5)
    (derivative,) = torch.autograd.grad(outputs.sum(), inputs)

    assert torch.allclose(log_derivative, derivative.log(), rtol=0.0, atol=LADJ_TOL)


def test_spline_inverse_log_derivative_is_negated():
    inputs = torch.linspace(-1.6, 1.6, 65, dtype=torch.float64)[:, None]
    parameters = random_spline_parameters(65, 7)

    outputs, log_derivative = rational_quadratic_spline(inputs, *parameters, bound=1.5)
    restored, log_derivative_inverse = rational_quadratic_spline(
        outputs, *parameters, bound=1.5, inverse=True
    )

    assert torch.allclose(restored, inputs, rtol=0.0, atol=INVERSE_TOL)
    assert torch.allclose(log_derivative_inverse, -log_derivative, rtol=0.0, atol=INVERSE_TOL)


def test_spline_too_many_bins_raises():
    with pytest.raises(ValueError, match=r"bins must be below 1000"):
        SplineFlow(3, **{**SPLINE_ARCHITECTURE, "bins": 1000})


def test_spline_nonpositive_tail_bound_raises():
    with pytest.raises(ValueError, match=r"tail_bound must be positive"):
        SplineFlow(3, **{**SPLINE_ARCHITECTURE, "tail_bound": 0.0})


def test_build_none_returns_none():
    assert build_flow("none", 3, **ARCHITECTURE) is None


def test_build_unknown_kind_raises():
    with pytest.raises(ValueError, match=r"unknown flow kind 'maf'.*affine, spline"):
        build_flow("maf", 3, **ARCHITECTURE)


def test_dim_one_raises():
    with pytest.raises(ValueError, match=r"dim must be at least 2.*'none'"):
        CouplingFlow(1, **ARCHITECTURE)


def test_one_layer_raises():
    with pytest.raises(ValueError, match=r"layers must be at least 2"):
        CouplingFlow(3, **{**ARCHITECTURE, "layers": 1})


def test_architecture_with_missing_key_raises():
    architecture = {"kind": "affine", "dim": 3, "layers": 4, "hidden": 16, "depth": 2}

    with pytest.raises(ValueError, match=r"missing keys \['max_log_scale'\]"):
        flow_from_architecture(architecture)


def test_wrong_input_shape_raises():
    flow = build_flow("affine", 3, **ARCHITECTURE)

    with pytest.raises(ValueError, match=r"expected points of shape \(N, 3\); got \(5, 2\)"):
        flow(torch.zeros(5, 2))


def test_wrong_input_dtype_raises():
    flow = build_flow("affine", 3, **ARCHITECTURE)

    with pytest.raises(TypeError, match=r"torch.float64.*\.to\(dtype\)"):
        flow(torch.zeros(5, 3, dtype=torch.float64))
