"""Shared fixtures: one intra-op thread for torch, the tiny spec, and a CLI runner."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner, Result

from ttflow_cli.cli.app import app

TINY_SPEC = Path(__file__).parent / "data" / "tiny.yaml"


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread() -> Iterator[None]:
    """Run torch on one intra-op thread for the whole session, then restore the setting.

    Every tensor in these tests is small, so extra threads only add synchronization.
    On a busy machine each operation then waits for a free core and can run hundreds
    of times slower.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_spec(tmp_path: Path) -> Path:
    """A copy of ``tests/data/tiny.yaml`` in ``tmp_path``, free to edit."""
    path = tmp_path / "tiny.yaml"
    shutil.copyfile(TINY_SPEC, path)
    return path


@pytest.fixture
def run_cli() -> Callable[..., Result]:
    """Return a function that invokes the real ``ttflow`` Typer app and returns its result."""
    runner = CliRunner()

    def invoke(*args: str | Path) -> Result:
        return runner.invoke(app, [str(arg) for arg in args])

    return invoke
