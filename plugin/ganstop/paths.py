"""Where ganstop keeps local state (cached feature networks, training checkpoints), and how a
file there is written so that a kill never leaves it torn."""

import os
from pathlib import Path

import torch


def cache_root() -> Path:
    """``$GANSTOP_CACHE``, else ``~/.cache/ganstop``; checkpoints live here so a crash of the
    tracking server never takes training state with it."""
    return Path(os.environ.get("GANSTOP_CACHE") or Path.home() / ".cache" / "ganstop")


def save_atomic(obj: object, path: Path, keep_previous: bool = False) -> None:
    """Write, fsync, then rename, so a kill mid-write leaves the previous file intact; with
    ``keep_previous`` the one before survives as ``<name>.prev`` in case this one is torn later."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    if keep_previous and path.exists():
        os.replace(path, path.with_name(path.name + ".prev"))
    os.replace(tmp, path)
