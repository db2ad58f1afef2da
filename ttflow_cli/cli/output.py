"""Rich tables and messages for the commands."""

from __future__ import annotations

import math

from rich import box
from rich.console import Console
from rich.table import Table

from ttflow_cli.estimators import ChainSummary
from ttflow_cli.workflow.evaluation import Evaluation, ModeShares
from ttflow_cli.workflow.fit import FitReport

console = Console()
error_console = Console(stderr=True)


def _number(value: float | None, digits: int = 6) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def cross_table(report: FitReport) -> Table:
    """One row per half-sweep of the cross approximation."""
    table = Table(title=f"TT cross approximation (stopped: {report.cross.stop_reason})")
    for column in ("sweep", "tempering", "evaluations", "max rank", "ESS fraction", "Hellinger", "time [s]"):
        table.add_column(column, justify="right")
    for row in report.cross.history:
        table.add_row(
            f"{row.sweep:g}", f"{row.temperature:.3g}", f"{row.evaluations:,}", str(row.max_rank),
            _number(row.ess_fraction, 4), _number(row.hellinger, 3), f"{row.seconds:.1f}",
        )
    return table


def _to_error(value: float | None, error: float | None, extra: int = 0) -> str:
    """Format ``value`` to two significant digits of ``error`` (plus ``extra`` decimals).

    Without a positive finite error it falls back to 8 significant digits.
    """
    if value is None or error is None or not math.isfinite(value) or not (math.isfinite(error) and error > 0):
        return _number(value, 8)
    decimals = max(0, 1 - math.floor(math.log10(error))) + extra
    # Adding 0.0 turns a rounded -0.0 into 0.0.
    return f"{round(value, decimals) + 0.0:.{decimals}f}"


def _deviation(estimate: float, exact: float | None, error: float | None) -> str:
    """Format ``(estimate - exact) / error``, or return blank without an exact value."""
    if exact is None or error is None:
        return ""
    if error <= 0:
        return "inf" if estimate != exact else "0"
    deviation = (estimate - exact) / error
    # Beyond 10^4 errors only the order of magnitude matters, and fixed point would fill the row.
    return f"{deviation:+.2f}" if abs(deviation) < 1e4 else f"{deviation:+.1e}"


def _exact_text(exact: float | None, error: float | None) -> str:
    """Format an exact value to one digit more than the estimate's error, or ``unknown``."""
    return _to_error(exact, error, 1) if exact is not None else "unknown"


def _larger(*errors: float | None) -> float | None:
    known = [error for error in errors if error is not None]
    return max(known) if known else None


def evaluation_table(evaluation: Evaluation, title: str) -> Table:
    """Build the table of ESS, tail diagnostics, log Z, free energy, ELBO and observables, beside exact values.

    The deviation is in units of the larger of the delta-method and bootstrap errors.
    """
    estimate = evaluation.estimate
    table = Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False,
                  caption="delta, boot: standard errors by the delta method and by the Poisson bootstrap; "
                          "dev: (estimate - exact) / the larger error; unknown: no exact value is available; "
                          "estimates to two digits of their error")
    table.add_column("quantity", no_wrap=True)
    for column in ("estimate", "delta", "boot", "exact", "dev"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_row("samples", f"{estimate.n:,}")
    table.add_row("ESS", f"{estimate.ess:,.1f}")
    table.add_row("ESS fraction", _number(estimate.ess_fraction, 4))
    table.add_row("Pareto k", _number(evaluation.pareto_k, 3))
    table.add_row("largest weight share", _number(evaluation.max_weight_fraction, 3))

    exact_log_z = evaluation.exact_log_z
    log_z_error = _larger(estimate.log_z_err, evaluation.log_z_err_bootstrap)
    table.add_row("log Z", _to_error(estimate.log_z, log_z_error), _number(estimate.log_z_err, 3),
                  _number(evaluation.log_z_err_bootstrap, 3), _exact_text(exact_log_z, log_z_error),
                  _deviation(estimate.log_z, exact_log_z, log_z_error))
    if estimate.free_energy is not None:
        exact_free_energy = evaluation.exact_free_energy
        free_energy_error = _larger(estimate.free_energy_err, evaluation.free_energy_err_bootstrap)
        table.add_row("free energy", _to_error(estimate.free_energy, free_energy_error),
                      _number(estimate.free_energy_err, 3), _number(evaluation.free_energy_err_bootstrap, 3),
                      _exact_text(exact_free_energy, free_energy_error),
                      _deviation(estimate.free_energy, exact_free_energy, free_energy_error))
    table.add_row("ELBO", _to_error(evaluation.elbo, evaluation.elbo_err), _number(evaluation.elbo_err, 3))

    for name, item in evaluation.observables.items():
        exact = evaluation.exact_observables.get(name)
        error = _larger(item.err, item.err_bootstrap)
        table.add_row(name, _to_error(item.mean, error), _number(item.err, 3), _number(item.err_bootstrap, 3),
                      _exact_text(exact, error), _deviation(item.mean, exact, error))
    return table


MAX_MODE_ROWS = 12
"""Modes listed in the table; the ones the sampler covers worst come first when there are more."""


def modes_table(modes: ModeShares) -> Table:
    """Build the table of each mode's sampler share, weighted mass estimate and exact mass."""
    exact = modes.exact or [None] * len(modes.names)
    rows = list(zip(modes.names, modes.sampler_shares, modes.estimates, exact))
    caption = ("sampler share: unweighted share of the samples; mass: importance-weighted estimate; "
               "dev: (mass - exact) / error; missed: the sampler puts under a quarter of the exact mass there")
    if len(rows) > MAX_MODE_ROWS:
        if modes.exact is not None:
            rows.sort(key=lambda row: row[1] / row[3] if row[3] else math.inf)
        rows = rows[:MAX_MODE_ROWS]
        caption += f"; {MAX_MODE_ROWS} of {len(modes.names)} modes shown, the worst covered first, all in --json"
    table = Table(title="Modes", box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False, caption=caption)
    table.add_column("mode", no_wrap=True)
    for column in ("sampler share", "mass", "error", "exact", "dev"):
        table.add_column(column, justify="right", no_wrap=True)
    missed = set(modes.missed())
    for name, share, estimate, mass in rows:
        if name in missed:
            # The weighted mass of a mode the sampler barely visits comes from a few points, and its
            # delta-method error (down to 0 when no point lands there) does not measure anything.
            table.add_row(name, f"{share:.4f}", f"{estimate.mean:.4f}", "-", f"{mass:.4f}", "missed")
            continue
        deviation = _deviation(estimate.mean, mass, estimate.err) if estimate.err > 0 else "-"
        table.add_row(name, f"{share:.4f}", f"{estimate.mean:.4f}", f"{estimate.err:.2g}",
                      f"{mass:.4f}" if mass is not None else "unknown", deviation)
    return table


def chain_table(summary: ChainSummary, exact: dict[str, float], title: str) -> Table:
    """Build the table of the acceptance rate and, per observable, the chain average, its error and tau_int."""
    acceptance = _number(summary.acceptance, 4)
    table = Table(title=f"{title}: {summary.steps:,} steps, acceptance {acceptance}", box=box.SIMPLE_HEAD,
                  collapse_padding=True, pad_edge=False,
                  caption="error: sqrt(tau_int Var / N), tau_int with Sokal's window (c = 5); "
                          "dev: (mean - exact) / error")
    table.add_column("observable", no_wrap=True)
    for column in ("mean", "error", "tau_int", "exact", "dev"):
        table.add_column(column, justify="right", no_wrap=True)
    for name, item in summary.observables.items():
        value = exact.get(name)
        tau = _number(item.tau_int, 4) + ("" if item.converged or item.tau_int is None else " (window not reached)")
        table.add_row(name, _to_error(item.mean, item.err), _number(item.err, 3), tau,
                      _to_error(value, item.err, 1) if value is not None else "unknown",
                      _deviation(item.mean, value, item.err))
    return table
