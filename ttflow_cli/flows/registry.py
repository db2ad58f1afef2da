"""Flow kinds by name, and the JSON architecture description that a run file stores.

A run file stores a flow as :func:`flow_architecture` (plain JSON) plus the
``state_dict`` tensors, never as a pickle. :func:`flow_from_architecture` rebuilds
the module, and ``load_state_dict`` then restores the weights.
"""

from __future__ import annotations

from typing import Any

from ttflow_cli.flows.coupling import CouplingFlow, Flow
from ttflow_cli.flows.spline import SplineFlow

# Flow classes by kind. A new family is one more entry here plus its own module.
_FLOW_CLASSES: dict[str, type[Flow]] = {
    CouplingFlow.kind: CouplingFlow,
    SplineFlow.kind: SplineFlow,
}

FLOW_KINDS: tuple[str, ...] = ("none", *_FLOW_CLASSES)
"""Valid values of ``kind`` for :func:`build_flow`, where ``"none"`` means no flow."""


def _flow_class(kind: str, valid_kinds: tuple[str, ...]) -> type[Flow]:
    if kind not in _FLOW_CLASSES:
        raise ValueError(f"unknown flow kind {kind!r}; valid kinds are {', '.join(valid_kinds)}")
    return _FLOW_CLASSES[kind]


def build_flow(
    kind: str,
    dim: int,
    *,
    layers: int,
    hidden: int,
    depth: int,
    max_log_scale: float = 2.0,
    bins: int = 8,
    tail_bound: float = 1.5,
) -> Flow | None:
    """Build a freshly initialized flow of the named kind, which starts as the identity.

    Every option is accepted for every kind, as in the ``flow`` section of a spec, and
    each kind uses those in its ``hyperparameter_names``.

    Args:
        kind: one of :data:`FLOW_KINDS`. ``"none"`` returns ``None``.
        dim: number of coordinates d.
        layers: number of coupling layers.
        hidden: width of the conditioners' hidden layers.
        depth: number of hidden layers per conditioner.
        max_log_scale: bound on each affine layer's log-scale (kind ``"affine"``).
        bins: number of spline bins (kind ``"spline"``).
        tail_bound: half-width of the spline interval in reference coordinates,
            outside which each spline layer is the identity (kind ``"spline"``).

    Returns:
        The flow, or ``None`` for kind ``"none"``.

    Raises:
        ValueError: on an unknown kind or an out-of-range argument.
    """
    if kind == "none":
        return None
    flow_class = _flow_class(kind, FLOW_KINDS)
    options = {"layers": layers, "hidden": hidden, "depth": depth, "max_log_scale": max_log_scale,
               "bins": bins, "tail_bound": tail_bound}
    return flow_class(dim, **{name: options[name] for name in flow_class.hyperparameter_names})


def flow_architecture(flow: Flow) -> dict[str, Any]:
    """Describe a flow's architecture as a JSON-serializable dict.

    Returns:
        ``{"kind": ..., "dim": ..., **hyperparameters}``, for the affine kind
        ``kind, dim, layers, hidden, depth, max_log_scale`` and for the spline kind
        ``kind, dim, layers, hidden, depth, bins, tail_bound``.
    """
    return {"kind": flow.kind, "dim": flow.dim, **flow.hyperparameters()}


def flow_from_architecture(architecture: dict[str, Any]) -> Flow:
    """Rebuild a freshly initialized flow from :func:`flow_architecture` output.

    Load the weights afterwards with ``flow.load_state_dict``.

    Raises:
        TypeError: if ``architecture`` is not a dict.
        ValueError: on an unknown kind, or on missing or unexpected keys.
    """
    if not isinstance(architecture, dict):
        raise TypeError(f"flow architecture must be a dict; got {type(architecture).__name__}")
    kind = architecture.get("kind")
    flow_class = _flow_class(kind, tuple(_FLOW_CLASSES))
    expected = {"kind", "dim", *flow_class.hyperparameter_names}
    missing = sorted(expected - architecture.keys())
    unexpected = sorted(architecture.keys() - expected)
    if missing or unexpected:
        raise ValueError(
            f"invalid architecture for flow kind {kind!r}: missing keys {missing}, "
            f"unexpected keys {unexpected}; expected exactly {sorted(expected)}"
        )

    hyperparameters = {name: architecture[name] for name in flow_class.hyperparameter_names}
    return flow_class(architecture["dim"], **hyperparameters)
