"""Rich tables and messages for the commands."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from ttflow_cli.workflow.evaluation import Evaluation
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


def evaluation_table(evaluation: Evaluation, title: str) -> Table:
    """ESS, log Z, free energy and ELBO, with the exact log Z where known."""
    estimate = evaluation.estimate
    table = Table(title=title)
    table.add_column("quantity")
    table.add_column("estimate", justify="right")
    table.add_column("std. error", justify="right")
    table.add_row("samples", f"{estimate.n:,}", "")
    table.add_row("ESS", f"{estimate.ess:,.1f}", "")
    table.add_row("ESS fraction", _number(estimate.ess_fraction, 4), "")
    table.add_row("log Z", _number(estimate.log_z, 8), _number(estimate.log_z_err, 3))
    if evaluation.exact_log_z is not None:
        deviation = estimate.log_z - evaluation.exact_log_z
        sigmas = deviation / estimate.log_z_err if estimate.log_z_err > 0 else math.inf
        table.add_row("log Z exact", _number(evaluation.exact_log_z, 8), "")
        table.add_row("log Z - exact", _number(deviation, 3), f"{sigmas:+.2f} sigma")
    if estimate.free_energy is not None:
        table.add_row("free energy", _number(estimate.free_energy, 8), _number(estimate.free_energy_err, 3))
    table.add_row("ELBO (lower bound on log Z)", _number(evaluation.elbo, 8), "")
    return table
