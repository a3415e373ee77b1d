"""ganstop: GAN training that stops and selects on sample quality, tracked in MLflow."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mlflow-ganstop")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
