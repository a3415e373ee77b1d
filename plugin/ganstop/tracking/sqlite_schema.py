"""One process at a time creates an embedded SQLite store's schema.

MLflow and Optuna run their Alembic migrations the first time they open a database. Two
commands started together on a fresh ``sqlite:///mlflow.db`` (two terminals, two workers)
both migrate, and the second dies with "table _alembic_tmp_experiments already exists".
Opening the store under an exclusive ``flock`` on the database file itself makes the first
one migrate and the others find the schema done. SQLite's own locks are ``fcntl`` byte-range
locks, which ``flock`` neither takes nor waits for, so this never blocks SQLite itself.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows: no flock; the race stays possible there
    fcntl = None


def database_file(uri: str) -> Path | None:
    """The file behind ``sqlite:///path`` (a relative or absolute path), else None."""
    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        return None
    return Path(uri[len("sqlite:///"):].split("?", 1)[0])


@contextlib.contextmanager
def creating(uri: str) -> Iterator[None]:
    """Hold the database file's lock while the body opens (and so migrates) the store."""
    path = database_file(uri)
    if path is None or fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:  # an empty file is a valid new SQLite database
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
