"""Run specs: the YAML schema and its loading, overriding and writing."""

from ttflow_cli.config.loading import load_spec, resolve_box, spec_from_text, spec_to_yaml
from ttflow_cli.config.spec import EvaluateConfig, FlowConfig, Spec, TrainConfig, TTConfig

__all__ = [
    "EvaluateConfig",
    "FlowConfig",
    "Spec",
    "TTConfig",
    "TrainConfig",
    "load_spec",
    "resolve_box",
    "spec_from_text",
    "spec_to_yaml",
]
