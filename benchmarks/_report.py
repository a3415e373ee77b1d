"""Shared by the benchmarks: a temporary tracking store, the machine line, the report writer."""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# GANSTOP_BENCHMARK_REPORT: another file for the sections (gpu_check.sh keeps them with its outputs)
REPORT = Path(os.environ.get("GANSTOP_BENCHMARK_REPORT") or ROOT / "docs" / "benchmarks.md")
HEADER = """# Benchmarks

Each section below is written by one script in `benchmarks/`, with the date, the machine and the
exact command of its latest run. Running a script again replaces its own section and leaves the
others alone; earlier runs are in git history. Each script compares two things measured side by
side in the same run on the same machine, and its section ends with the `RESULT` line it printed.
`--quick` runs a smaller version of the same comparison in a few minutes on 2 CPU cores.
"""
# Each section opens with this marker, named for the script that wrote it: what a rerun replaces.
MARKER = re.compile(r"^<!-- benchmark: (\S+) -->$", re.M)
sys.path.insert(0, str(ROOT / "plugin"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def scratch_tracking() -> Path:
    """A throwaway sqlite tracking store, so benchmarks never write into the user's mlflow.db."""
    folder = Path(tempfile.mkdtemp(prefix="ganstop-bench-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    # artifacts too: a sqlite store's default artifact root is ./mlruns in the working directory
    experiment = mlflow.create_experiment("benchmarks", artifact_location=(folder / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment)
    os.environ["MLFLOW_EXPERIMENT_ID"] = experiment
    return folder


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def result_line(result: dict[str, object]) -> str:
    return "RESULT " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items())


def publish(title: str, lines: list[str], result: dict[str, object], report: bool = True) -> None:
    """Print the section and its `RESULT ...` line; with ``report``, also write it into docs/benchmarks.md."""
    print("\n".join(lines))
    print(write(title, lines, result) if report else result_line(result))


def write(title: str, lines: list[str], result: dict[str, object], path: Path | None = None) -> str:
    """Put this script's section into the report (``path``, default docs/benchmarks.md or
    GANSTOP_BENCHMARK_REPORT) in place of
    its last one, or at the end if it has none, and return the `RESULT ...` line."""
    script = Path(sys.argv[0])
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(script, ROOT), *sys.argv[1:]])
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    line = result_line(result)
    section = (f"<!-- benchmark: {script.stem} -->\n## {title}\n\n- date: {stamp}\n- machine: {machine()}\n"
               f"- command: `{command}`\n\n" + "\n".join(lines) + f"\n\n`{line}`\n")
    report = path or REPORT
    text = report.read_text() if report.exists() else HEADER
    report.parent.mkdir(parents=True, exist_ok=True)
    partial = report.with_name(report.name + ".partial")
    partial.write_text(replace_section(text, script.stem, section))
    os.replace(partial, report)  # a benchmark killed while writing leaves the old report whole
    return line


def replace_section(text: str, key: str, section: str) -> str:
    """``text`` with the section marked ``key`` (up to the next marker) replaced by ``section``,
    or with ``section`` appended when there is none."""
    starts = [(m.start(), m.group(1)) for m in MARKER.finditer(text)]
    for i, (start, name) in enumerate(starts):
        if name == key:
            end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
            return text[:start] + section + ("\n" if end < len(text) else "") + text[end:]
    return text.rstrip("\n") + "\n\n" + section
