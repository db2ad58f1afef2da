"""Shared helpers of the benchmark scripts: machine description and report sections.

Each script owns one section of ``docs/benchmarks.md``, delimited by
``<!-- BEGIN name -->`` and ``<!-- END name -->``, and replaces only that section.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
from pathlib import Path

import torch

REPORT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def machine() -> str:
    """One line naming the CPU, core count, torch build and threads."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}")


def today() -> str:
    return datetime.date.today().isoformat()


def write_section(name: str, markdown: str, report: Path = REPORT) -> None:
    """Replace (or append) the section ``name`` of the benchmark report."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = report.read_text() if report.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    report.write_text(text)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
