"""Training state on disk: torn-file fallback (files are written by ``paths.save_atomic``), and what is kept once a run is done.

A full checkpoint (``last.pt``, and the one before as ``last.pt.prev``) lets a killed run resume
exactly; ``best.pt`` holds the best generator. Once a run has finished and its model is in
MLflow they are only worth their disk space, so ``keep_checkpoints`` decides what stays, and
``collect_garbage`` (``ganstop gc``) clears what old runs left behind.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import torch


RETENTION = ("best_last", "all", "none")


def load_first_readable(paths: list[Path]) -> dict | None:
    """The first checkpoint that loads with weights_only=True; torn or foreign files are skipped.

    Loaded to the CPU: ``load_state_dict`` moves weights and optimizer state to wherever the
    modules are, and the RNG states must stay CPU byte tensors (``torch.cuda.set_rng_state``
    refuses CUDA ones, which ``map_location=cuda`` would make of them)."""
    for path in paths:
        if not path.is_file():
            continue
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - truncated zip, unpickling refusal, ...: all mean "not this one"
            warnings.warn(f"skipping unreadable checkpoint {path}: {type(exc).__name__}", stacklevel=2)
    return None


def retain(folder: Path, policy: str) -> None:
    """After a finished run whose model is logged: ``best_last`` keeps best.pt and last.pt,
    ``none`` removes the folder, ``all`` keeps everything."""
    if policy == "none":
        shutil.rmtree(folder, ignore_errors=True)
    elif policy == "best_last":
        for path in folder.glob("*"):
            if path.name not in ("best.pt", "last.pt"):
                path.unlink(missing_ok=True)


def collect_garbage(root: Path, older_than_days: float, dry_run: bool = False) -> list[tuple[Path, int]]:
    """Run folders under ``root`` untouched for ``older_than_days``: removed (unless ``dry_run``)
    and returned with their sizes in bytes."""
    cutoff = time.time() - older_than_days * 86400
    removed = []
    for folder in sorted(p for p in root.glob("*") if p.is_dir()):
        files = [f for f in folder.rglob("*") if f.is_file()]
        if max((f.stat().st_mtime for f in files), default=folder.stat().st_mtime) >= cutoff:
            continue
        removed.append((folder, sum(f.stat().st_size for f in files)))
        if not dry_run:
            shutil.rmtree(folder, ignore_errors=True)
    return removed
