"""The ``ttflow`` command: fit, sample and evaluate samplers of unnormalized densities."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ttflow_cli import __version__
from ttflow_cli.cli.output import chain_table, console, cross_table, error_console, evaluation_table, modes_table
from ttflow_cli.config import load_spec
from ttflow_cli.errors import ConfigError, TTFlowError
from ttflow_cli.runfile import SAMPLES_FORMAT_NAME, check_destination, write_samples
from ttflow_cli.workflow.chain import draw_chain
from ttflow_cli.workflow.evaluation import evaluate as evaluate_sampler
from ttflow_cli.workflow.fit import default_run_path, fit as fit_run, resolve_device
from ttflow_cli.workflow.runstate import RestoredRun, restore_run

app = typer.Typer(
    name="ttflow",
    help="Fit tensor-train + normalizing-flow samplers to unnormalized densities.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@dataclass
class _Options:
    debug: bool = False


def _version(value: bool) -> None:
    if value:
        console.print(f"ttflow {__version__} (torch {torch.__version__})")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress of every stage.")] = False,
    version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
    threads: Annotated[Optional[int], typer.Option(
        "--threads", min=1, help="CPU threads for torch; default: torch's choice (OMP_NUM_THREADS, else all "
        "cores). Use 1 on a busy shared machine.")] = None,
) -> None:
    ctx.obj = _Options(debug=debug)
    if threads is not None:
        torch.set_num_threads(threads)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
        handlers=[RichHandler(console=error_console, show_time=False, show_path=False)], force=True,
    )


@contextmanager
def _user_errors(ctx: typer.Context) -> Iterator[None]:
    """Turn project errors into one red line and their exit code (1 runtime, 2 usage)."""
    debug = ctx.obj.debug if ctx.obj else False
    try:
        yield
    except TTFlowError as exc:
        if debug:
            error_console.print_exception()
        error_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        error_console.print("[bold red]interrupted[/]; no run file was written or changed")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - the last line of defence for users
        if debug:
            raise
        error_console.print(
            f"[bold red]error:[/] unexpected {type(exc).__name__}: {escape(str(exc))} "
            "(rerun with --debug for the traceback)",
            highlight=False, soft_wrap=True,
        )
        raise typer.Exit(1) from None


SeedOption = Annotated[Optional[int], typer.Option("--seed", help="Random seed (non-negative integer).", min=0)]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]


@app.command()
def fit(
    ctx: typer.Context,
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="Run spec (YAML).")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Output directory; default runs/<name>/.")] = None,
    seed: SeedOption = None,
    device: DeviceOption = "auto",
    overrides: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="KEY=VALUE", help="Override a spec value by its dotted path, e.g. train.steps=200.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run file.")] = False,
) -> None:
    """Fit a TT base by cross approximation, fine-tune a flow, evaluate, write run.h5."""
    with _user_errors(ctx):
        all_overrides = list(overrides or []) + ([f"seed={seed}"] if seed is not None else [])
        spec, target = load_spec(spec_path, all_overrides)
        run_path = (out / "run.h5") if out is not None else default_run_path(spec)
        if run_path.is_dir():
            raise ConfigError(f"--out: {run_path} is a directory; choose another --out")
        torch_device = resolve_device(device)
        console.print(f"[bold]{spec.name}[/]: {type(target).__name__}, d = {target.dim}, device {torch_device}")

        with _training_progress(spec.train.steps if spec.flow.kind != "none" else 0) as progress:
            report = fit_run(
                spec, target, run_path, device=torch_device, overwrite=overwrite,
                command_line=shlex.join(sys.argv), train_progress=progress,
            )
        if report.cross is not None:
            console.print(cross_table(report))
        if report.box_check is not None and not report.box_check.ok:
            error_console.print(f"[yellow]warning:[/] {escape(report.box_check.message(report.box))}",
                                highlight=False, soft_wrap=True)
        if report.train is not None:
            t = report.train
            reason = "step budget reached" if t.stop_reason == "steps" else t.stop_reason
            console.print(f"flow training: {t.steps} steps ({reason}), best held-out ESS fraction "
                          f"{t.best_ess_fraction:.4f} at step {t.best_step}, {t.skipped_steps} skipped steps")
        console.print(evaluation_table(report.evaluation, f"Evaluation of the fitted sampler ({spec.name})"))
        if report.evaluation.modes is not None:
            console.print(modes_table(report.evaluation.modes))
        timing = ", ".join(f"{name} {value:.1f} s" for name, value in report.seconds.items())
        console.print(f"time: {timing}")
        counts = ", ".join(f"{name} {value:,}" for name, value in report.evaluations.items())
        console.print(f"target evaluations: {counts}")
        for message in report.evaluation.warnings():
            error_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
        console.print(f"run file: {report.run_path}")


@contextmanager
def _training_progress(steps: int) -> Iterator:
    if steps <= 0 or not console.is_terminal:
        yield None
        return
    columns = (TextColumn("training"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[status]}"), TimeElapsedColumn())
    with Progress(*columns, console=error_console, transient=True) as bar:
        task = bar.add_task("train", total=steps, status="")

        def update(step: int, values: dict[str, float]) -> None:
            status = f"loss {values['loss']:.4g}  ESS {values['ess_fraction']:.3f}"
            bar.update(task, completed=step, status=status)

        yield update


RunArgument = Annotated[Path, typer.Argument(metavar="RUN.h5", help="Run file written by ttflow fit.")]
AllowPluginOption = Annotated[bool, typer.Option(
    "--allow-plugin", help="Load the plugin named in the run file (runs its code).")]


@app.command()
def sample(
    ctx: typer.Context,
    run_path: RunArgument,
    count: Annotated[int, typer.Option("-n", "--samples", help="Number of samples.", min=1)],
    out: Annotated[Optional[Path], typer.Option("--out", help="Sample file; default samples.h5 beside the run file.")] = None,
    seed: SeedOption = None,
    device: DeviceOption = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Samples drawn per batch.", min=1)] = 50_000,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing sample file.")] = False,
    mcmc: Annotated[bool, typer.Option(
        "--mcmc", help="Write an unweighted independent Metropolis-Hastings chain with the sampler as proposal.")] = False,
    allow_plugin: AllowPluginOption = False,
) -> None:
    """Draw samples with log q, log p and importance log-weights into an HDF5 file.

    With --mcmc the rows are the states of an unweighted chain (repeated where a
    proposal was rejected), and the acceptance rate and the integrated
    autocorrelation time of each observable are printed and stored as root
    attributes (``acceptance``, ``tau_int_<observable>``).
    """
    with _user_errors(ctx):
        out_path = out if out is not None else run_path.parent / "samples.h5"
        check_destination(out_path, SAMPLES_FORMAT_NAME, overwrite)
        run = restore_run(run_path, resolve_device(device), allow_plugin)
        generator = torch.Generator(device=run.sampler.device).manual_seed(seed if seed is not None else 1)
        if mcmc:
            _write_chain(run, run_path, out_path, count, batch_size, generator, overwrite)
            return
        columns: dict[str, list] = {"x": [], "log_q": [], "log_p": [], "log_w": []}
        for x, log_q in run.sampler.sample_batches(count, batch_size, generator):
            log_p = run.target.log_prob(x)
            for name, value in (("x", x), ("log_q", log_q), ("log_p", log_p), ("log_w", log_p - log_q)):
                columns[name].append(value.cpu())
        arrays = {name: torch.cat(parts).numpy() for name, parts in columns.items()}
        write_samples(out_path, arrays, overwrite=overwrite,
                      attrs={"run_file": str(run_path), "command_line": shlex.join(sys.argv)})
        console.print(f"wrote {count:,} samples to {out_path}")


def _write_chain(run: RestoredRun, run_path: Path, out_path: Path, count: int, batch_size: int,
                 generator: torch.Generator, overwrite: bool) -> None:
    chain = draw_chain(run.sampler, run.target, count, batch_size, generator, run.spec.evaluate.observables)
    summary = chain.summary
    attrs = {"run_file": str(run_path), "command_line": shlex.join(sys.argv), "mcmc": "independent Metropolis-Hastings",
             "acceptance": summary.acceptance}
    attrs.update({f"tau_int_{name}": item.tau_int for name, item in summary.observables.items()})
    write_samples(out_path, chain.arrays, overwrite=overwrite, attrs=attrs)
    console.print(chain_table(summary, run.target.exact_observables(), "Independent Metropolis-Hastings chain"))
    console.print(f"wrote {count:,} chain states to {out_path}")


@app.command()
def evaluate(
    ctx: typer.Context,
    run_path: RunArgument,
    count: Annotated[Optional[int], typer.Option("-n", "--samples", help="Fresh samples; default from the spec.", min=2)] = None,
    seed: SeedOption = None,
    device: DeviceOption = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    mcmc: Annotated[bool, typer.Option(
        "--mcmc", help="Also run an independent Metropolis-Hastings chain over the same proposals.")] = False,
    batch_size: Annotated[Optional[int], typer.Option(
        "--batch-size", help="Samples scored at once (sets memory, not results); default from the spec.", min=1)] = None,
    bootstrap: Annotated[Optional[int], typer.Option(
        "--bootstrap", help="Poisson bootstrap replicates, 0 for none; default from the spec.", min=0)] = None,
    observables: Annotated[Optional[list[str]], typer.Option(
        "--observable", metavar="NAME", help="Observable to report (repeatable); default from the spec.")] = None,
    allow_plugin: AllowPluginOption = False,
) -> None:
    """Estimate ESS, log Z, free energy and observables, with errors, from fresh samples of a fitted run."""
    with _user_errors(ctx):
        if bootstrap == 1:
            raise ConfigError("--bootstrap: expected 0 (no bootstrap) or at least 2 replicates; got 1")
        run = restore_run(run_path, resolve_device(device), allow_plugin)
        settings = run.spec.evaluate
        samples = count if count is not None else settings.samples
        generator = torch.Generator(device=run.sampler.device).manual_seed(seed if seed is not None else 1)
        with _sample_progress(samples) as progress:
            evaluation = evaluate_sampler(
                run.sampler, run.target, samples, batch_size or settings.batch_size, generator,
                observables=observables or settings.observables,
                bootstrap=settings.bootstrap if bootstrap is None else bootstrap,
                mcmc=mcmc, progress=progress,
            )
        if as_json:
            typer.echo(json.dumps(evaluation.to_dict()))
        else:
            console.print(evaluation_table(evaluation, f"Evaluation of {run_path}"))
            if evaluation.modes is not None:
                console.print(modes_table(evaluation.modes))
            if evaluation.chain is not None:
                console.print(chain_table(evaluation.chain, evaluation.exact_observables,
                                          "Independent Metropolis-Hastings chain over the same proposals"))
        for message in evaluation.warnings():
            error_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


@contextmanager
def _sample_progress(samples: int) -> Iterator:
    if not error_console.is_terminal:
        yield None
        return
    columns = (TextColumn("evaluating"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
               TimeElapsedColumn())
    with Progress(*columns, console=error_console, transient=True) as bar:
        task = bar.add_task("evaluate", total=samples)
        yield lambda done: bar.update(task, completed=done)


def main() -> None:
    """Console-script entry point."""
    app()
