"""ganstop: GAN training that stops and selects on sample quality, tracked in MLflow.

The public API, for a training loop of your own (see the README's "Your own training loop"):
``QualityMonitor`` (FID/KID on your feature network, or 2D mode metrics), ``EarlyStopper`` and
its ``Check``/``StopReason``, ``MlflowTracker``, ``log_generator`` (a generator as an MLflow
model with a tensor signature), and ``ForecastPruner`` (an Optuna pruner for any study); ``ganstop.recipe.StoppingConfig`` holds the stopper's defaults.
They are imported on first use: MLflow loads this package's run-context plugin in every run,
which must not pay for torch.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mlflow-ganstop")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

_EXPORTS = {"QualityMonitor": ("ganstop.api", "QualityMonitor"), "MlflowTracker": ("ganstop.api", "MlflowTracker"),
            "EarlyStopper": ("ganstop.stopping.stopper", "EarlyStopper"), "Check": ("ganstop.stopping.stopper", "Check"),
            "StopReason": ("ganstop.stopping.criteria", "StopReason"), "log_generator": ("ganstop.tracking.logger", "log_model"),
            "ForecastPruner": ("ganstop.study.forecast_pruner", "ForecastPruner")}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name == "recipe":  # ganstop.recipe.StoppingConfig() after a bare `import ganstop`
        return import_module("ganstop.recipe")
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ganstop' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    return getattr(import_module(module), attribute)
