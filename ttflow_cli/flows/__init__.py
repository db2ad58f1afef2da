"""Normalizing flows fine-tuned on top of the TT base distribution."""

from ttflow_cli.flows.coupling import AffineCoupling, CouplingFlow, Flow, coupling_masks
from ttflow_cli.flows.spline import SplineFlow, rational_quadratic_spline
from ttflow_cli.flows.registry import (
    FLOW_KINDS,
    build_flow,
    flow_architecture,
    flow_from_architecture,
)

__all__ = [
    "FLOW_KINDS",
    "AffineCoupling",
    "CouplingFlow",
    "Flow",
    "SplineFlow",
    "build_flow",
    "coupling_masks",
    "flow_architecture",
    "flow_from_architecture",
    "rational_quadratic_spline",
]
