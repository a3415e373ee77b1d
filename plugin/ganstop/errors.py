"""Errors the CLI turns into one line (kept light: the CLI imports this before torch/MLflow)."""

import difflib
from typing import Iterable


class RecipeError(ValueError):
    """A recipe, override or input the user must fix; the message says how, in one line (exit 2)."""


class GanstopError(RuntimeError):
    """Not the user's input, but still something to say in one line (exit code 1)."""


class TrackingLost(GanstopError):
    """The tracking server went away mid-run; the message says how to resume."""


class WorkersFailed(GanstopError):
    """Some `tune --workers` processes exited non-zero."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one line: what the user sees of a library error (SQLAlchemy, requests,
    MLflow, numpy) whose message can run to pages."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def suggest(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or nothing when there are none."""
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.0)
    return f" (did you mean {match[0]!r}?)" if match else ""
