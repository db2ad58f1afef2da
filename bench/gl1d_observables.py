"""Observables of the fitted gl1d chain against their transfer-operator values.

Usage::

    python bench/gl1d_observables.py RUN.h5 [-n 100000] [--seed 1]
    python bench/gl1d_observables.py --fit targets/gl1d.yaml [-n ...]   # fit a run first

Runs the real command line, ``python -m ttflow_cli evaluate RUN.h5 -n N --mcmc --json``,
and tabulates log Z, the free energy and every observable from importance sampling
and from the independent Metropolis-Hastings chain, beside the exact values and the
deviation in standard errors. Replaces the section ``gl1d-observables`` of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import machine, markdown_table, today, write_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SECTION = "gl1d-observables"


def fit_run(spec: Path, directory: Path) -> Path:
    command = [sys.executable, "-m", "ttflow_cli", "fit", str(spec), "--out", str(directory), "--overwrite"]
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return directory / "run.h5"


def value(number: float | None, digits: int = 7) -> str:
    return "-" if number is None else f"{number:.{digits}g}"


def deviation(estimate: float, exact: float | None, error: float | None) -> str:
    if exact is None or not error:
        return "-"
    return f"{(estimate - exact) / error:+.2f}"


def importance_rows(result: dict) -> list[list[str]]:
    """Rows of log Z, the free energy and the observables from importance sampling."""
    exact = result["exact"]
    rows = []
    quantities = [("log Z", result["log_z"], result["log_z_err"], result["log_z_err_bootstrap"], exact["log_z"])]
    if result["free_energy"] is not None:
        quantities.append(("free energy", result["free_energy"], result["free_energy_err"],
                           result["free_energy_err_bootstrap"], exact["free_energy"]))
    for name, item in result["observables"].items():
        quantities.append((name, item["mean"], item["err"], item["err_bootstrap"], exact["observables"].get(name)))
    for name, mean, err, err_bootstrap, exact_value in quantities:
        larger = max(e for e in (err, err_bootstrap) if e is not None)
        rows.append([name, "importance sampling", value(mean, 9), value(err, 2), value(err_bootstrap, 2), "-",
                     value(exact_value, 9) if exact_value is not None else "unknown",
                     deviation(mean, exact_value, larger)])
    return rows


def chain_rows(result: dict) -> list[list[str]]:
    """Rows of the observables from the Metropolis-Hastings chain."""
    rows = []
    for name, item in result["mcmc"]["observables"].items():
        exact_value = result["exact"]["observables"].get(name)
        rows.append([name, "Metropolis-Hastings chain", value(item["mean"], 9), value(item["err"], 2), "-",
                     value(item["tau_int"], 3), value(exact_value, 9) if exact_value is not None else "unknown",
                     deviation(item["mean"], exact_value, item["err"])])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, help="run file fitted from targets/gl1d.yaml")
    parser.add_argument("--fit", type=Path, help="spec to fit first (into a temporary directory) when no run is given")
    parser.add_argument("-n", "--samples", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print the table without updating the report")
    args = parser.parse_args()
    if args.run is None and args.fit is None:
        parser.error("give a run file or --fit SPEC.yaml")

    run = args.run if args.run is not None else fit_run(args.fit, Path(tempfile.mkdtemp(prefix="ttflow-gl1d-")))
    command = [sys.executable, "-m", "ttflow_cli", "evaluate", str(run), "-n", str(args.samples),
               "--seed", str(args.seed), "--mcmc", "--json"]
    start = time.perf_counter()
    result = json.loads(subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True).stdout)
    seconds = time.perf_counter() - start

    header = ["quantity", "estimator", "estimate", "delta err", "bootstrap err", "tau_int", "exact",
              "deviation [err]"]
    table = markdown_table(header, importance_rows(result) + chain_rows(result))
    displayed_command = command[:4] + ["RUN.h5"] + command[5:]
    warnings = "; ".join(result["warnings"]) or "none"
    markdown = f"""## gl1d observables against the transfer operator

Machine: {machine()}. Date: {today()}.
Command: `python bench/gl1d_observables.py {' '.join(shlex.quote(arg) for arg in sys.argv[1:])}`, which runs
`{shlex.join(displayed_command)}` ({seconds:,.0f} s) on a run fitted by `ttflow fit targets/gl1d.yaml`.

{result['n']:,} fresh samples, ESS fraction {result['ess_fraction']:.4f}, Pareto k {value(result['pareto_k'], 3)},
largest weight share {value(result['max_weight_fraction'], 3)} (1/N = {1 / result['n']:.3g}),
Metropolis-Hastings acceptance {result['mcmc']['acceptance']:.4f}. Exact values: transfer operator on a
600-node Gauss-Legendre grid. The deviation is in units of the larger of the delta-method and bootstrap
errors (importance sampling) or of `sqrt(tau_int Var / N)` (chain). `abs_magnetization` has no exact value:
the distribution of the magnetization has no cheap transfer-operator form. Warnings: {warnings}.

{table}
"""
    print(markdown)
    if not args.no_write:
        write_section(SECTION, markdown)


if __name__ == "__main__":
    main()
