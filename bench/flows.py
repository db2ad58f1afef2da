"""Benchmark every shipped target with a TT base, a Gaussian base and the TT alone.

For each target spec the suite runs these variants with the same seed and step budget
(``BUDGET``, applied to every run):

- ``tt``: the spec (cross approximation, flow on the TT base, evaluation);
- ``gaussian``: the same flow and optimizer on the standard Gaussian base
  (``flow.base=gaussian``), which needs no cross approximation;
- ``gaussian-anneal``: the same with the target annealed over the first half of
  the steps, the strongest baseline;
- ``none``: the TT alone (``flow.kind=none``). It reuses the TT of the ``tt`` run,
  which the same spec and seed would fit again, and its wall time and target
  evaluations are those of that cross approximation plus its own evaluation.

Each row reports the ESS fraction, log Z with its standard error, the deviation from
the exact log Z, the share of samples per mode, the wall time and the number of
target evaluations. The table replaces the ``flows`` section of docs/benchmarks.md
(``--quick``: the ``flows-quick`` section, with small budgets).

Usage::

    python bench/flows.py [--quick] [--targets gl1d,mixture40] [--out runs/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import modes  # noqa: E402
from report import machine, markdown_table, today, write_section  # noqa: E402

from ttflow_cli.config import load_spec  # noqa: E402
from ttflow_cli.flows.model import FlowSampler  # noqa: E402
from ttflow_cli.workflow.evaluation import evaluate  # noqa: E402
from ttflow_cli.workflow.fit import fit  # noqa: E402
from ttflow_cli.workflow.runstate import restore_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS_DIR = ROOT / "targets"
VARIANTS = ("tt", "gaussian", "gaussian-anneal", "none")
# Step budget and sample counts of every run of the full suite.
BUDGET = [
    "train.steps=1000", "train.eval_every=100", "train.patience=3", "train.eval_samples=8192",
    "evaluate.samples=100000",
]
ANNEAL_STEPS = 500
QUICK_ANNEAL_STEPS = 5
# Samples drawn from each fitted sampler to count its share of samples per mode.
MODE_SAMPLES = 4096


@dataclass(frozen=True)
class Goal:
    """Goal figures of the ``tt`` variant on one target."""

    min_ess_fraction: float | None = None
    max_log_z_error: float | None = None
    every_mode: bool = False

    def text(self) -> str:
        parts = []
        if self.min_ess_fraction is not None:
            parts.append(f"ESS >= {self.min_ess_fraction:g}")
        if self.max_log_z_error is not None:
            parts.append(f"abs log Z error <= {self.max_log_z_error:g}")
        if self.every_mode:
            parts.append("every mode covered")
        return ", ".join(parts) or "-"


@dataclass(frozen=True)
class BenchTarget:
    """A shipped spec, how to read its modes, its goal, and what limits it if missed."""

    spec: str
    modes: modes.ModeSummary
    goal: Goal = field(default_factory=Goal)
    limit: str = ""


TARGETS = {
    "gl1d": BenchTarget("gl1d.yaml", modes.no_modes, Goal(0.95, 0.01)),
    "gl1d_beta1": BenchTarget("gl1d_beta1.yaml", modes.field_sign, Goal(0.8, every_mode=True)),
    "gl2d": BenchTarget(
        "gl2d.yaml", modes.field_sign, Goal(0.5, every_mode=True),
        limit="Within each mode the TT's importance weights are heavy-tailed, so its ESS fraction "
        "varies from run to run (0.1 to 0.5 measured on 20,000 to 50,000 samples). Higher ranks "
        "or more nodes made the cross approximation worse on this lattice. Both mirror modes get "
        "half of the mass because the spec averages the TT over the lattice's symmetry "
        "(`tt.symmetrize`). Without it the cross approximation finds one mode, and log Z is low by "
        "log 2 = 0.69 while the ESS does not show it.",
    ),
    "many_well_32": BenchTarget("many_well_32.yaml", modes.right_well, Goal(0.9, 0.01)),
    "mixture": BenchTarget("mixture.yaml", modes.nearest_mean, Goal(0.8, every_mode=True)),
    "mixture40": BenchTarget("mixture40.yaml", modes.nearest_mean, Goal(None, 0.003, every_mode=True)),
    "banana": BenchTarget("banana.yaml", modes.no_modes),
}

# Small budgets for a smoke run of the whole suite in a few minutes. They check that
# every stage works, not how good the samplers are.
QUICK_OVERRIDES = [
    "tt.sweeps=2", "tt.init_rank=4", "tt.max_rank=6", "tt.validation_samples=500",
    "train.steps=10", "train.eval_every=5", "train.eval_samples=256", "train.batch_size=128",
    "evaluate.samples=2000", "flow.hidden=32",
]
QUICK_MODE_SAMPLES = 500


def variant_overrides(variant: str, quick: bool) -> list[str]:
    """Spec overrides of one variant (``none`` is derived from the ``tt`` run)."""
    if variant == "gaussian":
        return ["flow.base=gaussian", "flow.gaussian=standard"]
    if variant == "gaussian-anneal":
        anneal_steps = QUICK_ANNEAL_STEPS if quick else ANNEAL_STEPS
        return ["flow.base=gaussian", "flow.gaussian=standard", f"train.anneal_steps={anneal_steps}"]
    return []


def mode_summary(bench: BenchTarget, target, sampler: FlowSampler, count: int, seed: int) -> dict:
    generator = torch.Generator(device=sampler.device).manual_seed(seed + 1)
    with torch.no_grad():
        x, _ = sampler.sample(count, generator)
    return bench.modes(target, x)


def result_row(name: str, variant: str, target, evaluation, seconds: float, evaluations: int,
               summary: dict, train) -> dict:
    estimate = evaluation.estimate
    exact = evaluation.exact_log_z
    return {
        "target": name, "dim": target.dim, "variant": variant,
        "ess_fraction": estimate.ess_fraction, "log_z": estimate.log_z, "log_z_err": estimate.log_z_err,
        "exact_log_z": exact, "abs_error": abs(estimate.log_z - exact) if exact is not None else None,
        "seconds": seconds, "evaluations": evaluations, "modes": summary,
        "steps": train.steps if train is not None else 0,
        "best_step": train.best_step if train is not None else None,
    }


def run_target(name: str, bench: BenchTarget, extra: list[str], out: Path, mode_count: int,
               variants: tuple[str, ...], quick: bool) -> list[dict]:
    rows = []
    tt_run = None
    for variant in [v for v in VARIANTS if v in variants and v != "none"]:
        spec, target = load_spec(TARGETS_DIR / bench.spec, extra + variant_overrides(variant, quick))
        path = out / f"{name}-{variant}" / "run.h5"
        log(f"{name} [{variant}]: fitting")
        start = time.perf_counter()
        report = fit(spec, target, path, device=torch.device("cpu"), overwrite=True,
                     command_line="bench/flows.py")
        seconds = time.perf_counter() - start
        restored = restore_run(path, torch.device("cpu"))
        summary = mode_summary(bench, target, restored.sampler, mode_count, spec.seed)
        rows.append(result_row(name, variant, target, report.evaluation, seconds,
                               sum(report.evaluations.values()), summary, report.train))
        log_row(rows[-1])
        if variant == "tt":
            tt_run = (spec, target, report, restored)

    if "none" in variants and tt_run is not None:
        spec, target, report, restored = tt_run
        log(f"{name} [none]: evaluating the TT of the tt run")
        tt_alone = FlowSampler(restored.sampler.base, None, restored.sampler.box,
                               dtype=restored.sampler.dtype, device=restored.sampler.device)
        generator = torch.Generator().manual_seed(spec.seed)
        start = time.perf_counter()
        evaluation = evaluate(tt_alone, target, spec.evaluate.samples, spec.evaluate.batch_size, generator)
        seconds = report.seconds["cross"] + time.perf_counter() - start
        summary = mode_summary(bench, target, tt_alone, mode_count, spec.seed)
        evaluations = report.evaluations["cross"] + spec.evaluate.samples
        rows.append(result_row(name, "none", target, evaluation, seconds, evaluations, summary, None))
        log_row(rows[-1])
    return rows


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def log_row(row: dict) -> None:
    log(f"  ESS {row['ess_fraction']:.4f}  log Z {row['log_z']:.6f} +- {row['log_z_err']:.2g}  "
        f"{row['seconds']:.0f} s  {row['modes']['text']}")


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def results_table(rows: list[dict]) -> str:
    header = ["target", "d", "variant", "ESS fraction", "log Z +- error", "exact log Z",
              "abs log Z error", "modes (sample shares)", "flow steps (best)", "wall [s]", "target evaluations"]
    lines = []
    for row in rows:
        steps = f"{row['steps']} ({row['best_step']})" if row["steps"] else "-"
        lines.append([
            row["target"], str(row["dim"]), row["variant"], f"{row['ess_fraction']:.4f}",
            f"{row['log_z']:.6f} +- {row['log_z_err']:.2g}", _number(row["exact_log_z"], 10),
            _number(row["abs_error"], 2), row["modes"]["text"], steps, f"{row['seconds']:.0f}",
            f"{row['evaluations']:,}",
        ])
    return markdown_table(header, lines)


def goal_met(goal: Goal, row: dict) -> bool:
    if goal.min_ess_fraction is not None and row["ess_fraction"] < goal.min_ess_fraction:
        return False
    if goal.max_log_z_error is not None and (row["abs_error"] is None or row["abs_error"] > goal.max_log_z_error):
        return False
    return not goal.every_mode or modes.covers_every_mode(row["modes"])


def goals_table(rows: list[dict]) -> str:
    header = ["target", "goal (base tt)", "reached with base tt", "met",
              "every mode covered: gaussian / gaussian-anneal"]
    lines = []
    for name, bench in TARGETS.items():
        by_variant = {row["variant"]: row for row in rows if row["target"] == name}
        if "tt" not in by_variant:
            continue
        tt = by_variant["tt"]
        reached = f"ESS {tt['ess_fraction']:.4f}, abs log Z error {_number(tt['abs_error'], 2)}"
        coverage = []
        for variant in ("gaussian", "gaussian-anneal"):
            row = by_variant.get(variant)
            if row is None or not row["modes"]["shares"]:
                coverage.append("-")
            else:
                coverage.append("yes" if modes.covers_every_mode(row["modes"]) else "no")
        met = "yes" if goal_met(bench.goal, tt) else "no"
        lines.append([name, bench.goal.text(), reached, met, " / ".join(coverage)])
    return markdown_table(header, lines)


def limits(rows: list[dict]) -> str:
    """List what limits each target whose ``tt`` row misses its goal, one line each."""
    paragraphs = []
    for name, bench in TARGETS.items():
        tt = [row for row in rows if row["target"] == name and row["variant"] == "tt"]
        if tt and not goal_met(bench.goal, tt[0]):
            paragraphs.append(f"- **{name}** is below its goal. {bench.limit or 'No known cause.'}")
    return "\n".join(paragraphs)


def write_report(rows: list[dict], quick: bool, command: str, seconds: float, load: str) -> None:
    section = "flows-quick" if quick else "flows"
    title = "Flow benchmark, quick budgets (smoke run)" if quick else "Flow benchmark: TT base, Gaussian base, TT alone"
    markdown = "\n\n".join([
        f"## {title}",
        f"`{command}` on {today()}: {machine()}. Suite wall time {seconds / 60:.1f} min; "
        f"1-minute load average {load} (other processes on the machine inflate wall times).",
        f"Every run: `{' '.join(BUDGET)}`"
        + (f" then `{' '.join(QUICK_OVERRIDES)}`" if quick else "") + ". "
        "Variants: `tt` is the spec; `gaussian` is the same flow, optimizer, seed and "
        "step budget on the standard Gaussian base (box faces at 3 standard deviations, no cross "
        f"approximation); `gaussian-anneal` also anneals the target over the first "
        f"{QUICK_ANNEAL_STEPS if quick else ANNEAL_STEPS} steps; `none` is the TT of the `tt` run alone. Wall time and target evaluations "
        "include every stage (the `none` row counts the cross approximation it reuses). Mode "
        f"shares come from {QUICK_MODE_SAMPLES if quick else MODE_SAMPLES} fresh samples; a mode "
        f"is covered when it gets at least {modes.COVERED_FRACTION:g} of its exact share.",
        results_table(rows),
        goals_table(rows),
        "Quick budgets are far below what the goals need." if quick else limits(rows),
    ])
    write_section(section, markdown)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small budgets; writes the flows-quick section")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated target names")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated variants")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench", help="directory for run files")
    parser.add_argument("--no-report", action="store_true", help="print the table instead of writing the report")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: on a shared machine more threads wait for cores)")
    arguments = parser.parse_args(argv)
    unknown = sorted(set(arguments.targets.split(",")) - TARGETS.keys())
    if unknown:
        parser.error(f"unknown targets {unknown}; choose from {', '.join(TARGETS)}")
    unknown = sorted(set(arguments.variants.split(",")) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    return arguments


def main(argv: list[str]) -> None:
    arguments = parse_arguments(argv)
    torch.set_num_threads(arguments.threads)
    extra = BUDGET + (QUICK_OVERRIDES if arguments.quick else [])
    mode_count = QUICK_MODE_SAMPLES if arguments.quick else MODE_SAMPLES
    variants = tuple(arguments.variants.split(","))
    out = arguments.out / ("quick" if arguments.quick else "full")
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    rows = []
    for name in arguments.targets.split(","):
        rows += run_target(name, TARGETS[name], extra, out, mode_count, variants, arguments.quick)
    seconds = time.perf_counter() - start

    (out / "results.json").write_text(json.dumps(rows, indent=1))
    command = "python bench/flows.py" + (" " + shlex.join(argv) if argv else "")
    if arguments.no_report:
        print(results_table(rows))
        print()
        print(goals_table(rows))
    else:
        load = f"{load_start:.1f} at the start and {os.getloadavg()[0]:.1f} at the end"
        write_report(rows, arguments.quick, command, seconds, load)
    log(f"done in {seconds / 60:.1f} min; results in {out / 'results.json'}")


if __name__ == "__main__":
    main(sys.argv[1:])
