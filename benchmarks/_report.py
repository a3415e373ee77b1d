"""Shared by the benchmarks: a temporary tracking store, the machine line, the report writer."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# GANSTOP_BENCHMARK_REPORT: another file for the sections (gpu_check.sh keeps them with its outputs)
REPORT = Path(os.environ.get("GANSTOP_BENCHMARK_REPORT") or ROOT / "docs" / "benchmarks.md")
HEADER = """# Benchmarks

Every section below is appended by one script in `benchmarks/` (its exact command is given);
each compares two things measured side by side in the same run on the same machine, and ends
with the `RESULT` line the script printed. Newest sections are at the bottom.
"""
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
    """Print the section and its `RESULT ...` line; with ``report``, also append it to docs/benchmarks.md."""
    print("\n".join(lines))
    print(write(title, lines, result) if report else result_line(result))


def write(title: str, lines: list[str], result: dict[str, object]) -> str:
    """Append a section to docs/benchmarks.md (or GANSTOP_BENCHMARK_REPORT) and return the `RESULT ...` line."""
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    line = result_line(result)
    REPORT.parent.mkdir(exist_ok=True)
    if not REPORT.exists():
        REPORT.write_text(HEADER)
    with REPORT.open("a") as fh:
        fh.write(f"\n## {title}\n\n- date: {stamp}\n- machine: {machine()}\n- command: `{command}`\n\n")
        fh.write("\n".join(lines) + f"\n\n`{line}`\n")
    return line
