"""Estimators computed from importance weights of model samples against the target."""

from ttflow_cli.estimators.autocorrelation import AutocorrelationTime, AutocovarianceAccumulator
from ttflow_cli.estimators.bootstrap import BootstrapErrors, PoissonBootstrap, poisson_multiplicities
from ttflow_cli.estimators.importance import (
    ElboAccumulator,
    ImportanceEstimate,
    LogWeightAccumulator,
    elbo,
    estimate_from_log_weights,
)
from ttflow_cli.estimators.mcmc import ChainObservable, ChainObservables, ChainSummary, IndependenceChain
from ttflow_cli.estimators.observables import ObservableEstimate, SelfNormalizedAccumulator
from ttflow_cli.estimators.pareto import UNRELIABLE_K, TopLogWeights, pareto_k, tail_length

__all__ = [
    "UNRELIABLE_K",
    "AutocorrelationTime",
    "AutocovarianceAccumulator",
    "BootstrapErrors",
    "ChainObservable",
    "ChainObservables",
    "ChainSummary",
    "ElboAccumulator",
    "ImportanceEstimate",
    "IndependenceChain",
    "LogWeightAccumulator",
    "ObservableEstimate",
    "PoissonBootstrap",
    "SelfNormalizedAccumulator",
    "TopLogWeights",
    "elbo",
    "estimate_from_log_weights",
    "pareto_k",
    "poisson_multiplicities",
    "tail_length",
]
