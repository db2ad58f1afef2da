"""Estimators computed from importance weights of model samples against the target."""

from ttflow_cli.estimators.importance import (
    ImportanceEstimate,
    LogWeightAccumulator,
    elbo,
    estimate_from_log_weights,
)

__all__ = [
    "ImportanceEstimate",
    "LogWeightAccumulator",
    "elbo",
    "estimate_from_log_weights",
]
