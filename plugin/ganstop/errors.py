"""Errors the CLI turns into one line (kept light: the CLI imports this before torch/MLflow)."""


class GanstopError(RuntimeError):
    """Not the user's input, but still something to say in one line (exit code 1)."""


class TrackingLost(GanstopError):
    """The tracking server went away mid-run; the message says how to resume."""


class WorkersFailed(GanstopError):
    """Some `tune --workers` processes exited non-zero."""
