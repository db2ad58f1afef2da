"""Target densities: the ``Target`` interface, the built-ins and the spec registry."""

from ttflow_cli.targets.banana import Banana
from ttflow_cli.targets.base import Observable, Target
from ttflow_cli.targets.gaussian_mixture import GaussianMixture
from ttflow_cli.targets.ginzburg_landau import GinzburgLandau1D, GinzburgLandau2D
from ttflow_cli.targets.many_well import ManyWell
from ttflow_cli.targets.registry import BUILTIN_TARGETS, build_target, resolve_target_section

__all__ = [
    "BUILTIN_TARGETS",
    "Banana",
    "GaussianMixture",
    "GinzburgLandau1D",
    "GinzburgLandau2D",
    "ManyWell",
    "Observable",
    "Target",
    "build_target",
    "resolve_target_section",
]
