"""Where ganstop keeps local state: cached feature classifiers and training checkpoints."""

import os
from pathlib import Path


def cache_root() -> Path:
    """``$GANSTOP_CACHE``, else ``~/.cache/ganstop``; checkpoints live here so a crash of the
    tracking server never takes training state with it."""
    return Path(os.environ.get("GANSTOP_CACHE") or Path.home() / ".cache" / "ganstop")
