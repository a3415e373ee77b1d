"""benchmarks/gpu_check.sh, the one prepared run of the CUDA path on a GPU machine. Its dry run
runs here, on no GPU, so the script cannot rot while none is lent: each step printed, and every
file, command and option it names checked against the project as it is."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

STEPS = ("install", "pytest", "throughput", "overhead", "scaling", "resume", "tune")


def dry_run(*steps: str, root: Path = ROOT, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(root / "benchmarks" / "gpu_check.sh"), "--dry-run", *steps],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHON": python})


def checkout_without(tmp_path: Path, relative: str, edit=None) -> Path:
    """A copy of the project with one file removed (or, given ``edit``, rewritten)."""
    copy = tmp_path / "project"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", ".whl", "__pycache__", "mlruns", "*.db"))
    path = copy / relative
    if edit is None:
        path.unlink()
    else:
        path.write_text(edit(path.read_text()))
    return copy


def test_the_dry_run_prints_every_step_and_finds_every_file_command_and_option():
    done = dry_run()
    assert done.returncode == 0, done.stderr
    for number, step in enumerate(STEPS, 1):
        assert f"step {number}/{len(STEPS)} {step} (timeout " in done.stdout
    out = done.stdout
    assert "-m pytest -m gpu -x" in out and "gpu_throughput.py --device cuda" in out
    assert "overhead.py --device cuda --quick" in out and "scaling.py --device cuda --nproc N --quick" in out
    assert "-m ganstop train --resume" in out and "--pruner forecast --n-trials 4" in out
    assert out.rstrip().endswith("dry run: every file, command and option the steps name is there")


def test_a_missing_file_fails_the_dry_run_in_one_line_that_names_it(tmp_path):
    copy = checkout_without(tmp_path, "benchmarks/gpu_throughput.py")
    done = dry_run("throughput", root=copy)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "gpu_check: missing: file not found: benchmarks/gpu_throughput.py",
        "gpu_check: error: the dry run found 1 missing file(s), command(s) or option(s) (above)"]


def test_an_option_a_command_lacks_fails_the_dry_run(tmp_path):
    copy = checkout_without(tmp_path, "benchmarks/overhead.py", lambda text: text.replace('"--quick"', '"--short"'))
    done = dry_run("overhead", root=copy)
    assert done.returncode == 2
    assert "gpu_check: missing: overhead.py has no option --quick" in done.stderr.splitlines()


def test_a_missing_python_is_one_line():
    done = dry_run(python="/nonexistent/python3")
    assert done.returncode == 2 and done.stderr == "gpu_check: error: python not found: /nonexistent/python3 (set PYTHON)\n"
