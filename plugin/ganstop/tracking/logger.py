"""MLflow callback: params, per-epoch metrics, sample grids, curves, stop reason, best model."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.entities import Metric, Param, RunTag
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

from ganstop.tracking import plots
from ganstop.tracking.context import gpu_name
from ganstop.masking import mask
from ganstop.recipe import Recipe, to_yaml
from ganstop.stopping.stopper import Check
from ganstop.training.callbacks import Callback
from ganstop.training.loop import Trainer, TrainResult

TAG_STOP_REASON = "ganstop.stop_reason"
FLUSH_SECONDS = 10.0  # per-epoch metrics wait at most this long for a check to go out with
TAG_MODEL_URI = "ganstop.model_uri"
TAG_CADENCE_WARNING = "ganstop.cadence_warning"  # checks cost more than metrics.budget: metrics.max_gap held them


def recipe_params(recipe: Recipe) -> dict[str, str]:
    return {key: mask(str(value)) for key, value in recipe.flat().items()}


def log_model(sampler: torch.nn.Module, z_dim: int, sample_shape: tuple[int, ...], name: str = "generator"):
    """The generator as a pt2 program (no ganstop code needed to load it) with a tensor signature."""
    example = torch.randn(4, z_dim)
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, z_dim))]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *sample_shape))]))
    return mlflow.pytorch.log_model(sampler.eval(), name=name, signature=signature, input_example=example.numpy(),
                                    serialization_format="pt2",
                                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"])


def _epoch_metrics(epoch: int, logs: dict[str, float], timestamp: int) -> list[Metric]:
    """One epoch's logs (or its checkpoint history entry) as MLflow metrics at step ``epoch``."""
    return [Metric(k, float(v), timestamp, epoch) for k, v in logs.items() if k != "epoch"]


class MlflowLogger(Callback):
    """Writes one run: metrics batched once per epoch, pictures per validation, model at the end."""

    def __init__(self, run_id: str, recipe: Recipe, client: MlflowClient | None = None, gpus: list[str] | None = None):
        self.run_id, self.recipe = run_id, recipe
        self.gpus = gpus  # "host: GPU" per rank of a data-parallel run; None: this process's own
        self.client = client or MlflowClient()
        self.trainer: Trainer | None = None
        self.model_uri: str | None = None
        self._held: list[Metric] = []  # epochs not sent yet
        self._sent_at = time.monotonic()
        self._sent_before: set[int] = set()  # epochs a killed process logged already

    def on_train_start(self, trainer: Trainer) -> None:
        self.trainer = trainer
        st = self.recipe.stopping
        params = recipe_params(self.recipe) | {
            "monitor": trainer.monitor, "mode": trainer.mode,
            "patience": str(st.patience), "min_delta": str(st.min_delta),
            "device": str(trainer.device), "amp": str(trainer.step.amp), "world_size": str(trainer.step.world),
        }
        # the trainer has initialised CUDA by now; a data-parallel run names every node's GPUs
        gpus = sorted(set(self.gpus)) if self.gpus else [gpu_name()]
        self.client.set_tag(self.run_id, "ganstop.gpu", "; ".join(gpus))
        existing = self.client.get_run(self.run_id).data.params
        fresh = [Param(k, v) for k, v in params.items() if k not in existing]  # resume: log once
        self.client.log_batch(self.run_id, params=fresh)  # the client splits it into the store's batch sizes
        self.client.log_text(self.run_id, mask(to_yaml(self.recipe)), "recipe.yaml")
        if trainer.validation.scorer.classifier_accuracy is not None:
            self.client.log_metric(self.run_id, "classifier_accuracy", trainer.validation.scorer.classifier_accuracy)
        self._send_unlogged_epochs(trainer.history)

    def _send_unlogged_epochs(self, history: list[dict[str, float]]) -> None:
        """On resume, make every epoch appear once. A kill can land after an epoch's checkpoint
        but before its metrics reached MLflow: the checkpoint's history has them. It can also
        land after epochs that the resumed run trains again (the checkpoint is older than the
        last logged epoch with ``metrics.every > 1`` or after a fall back to ``last.pt.prev``):
        those were sent already, and are not sent twice."""
        if not history:
            return
        self._sent_before = {m.step for m in self.client.get_metric_history(self.run_id, "epoch_seconds")}
        now = int(1000 * time.time())
        metrics = [m for h in history if h["epoch"] not in self._sent_before for m in _epoch_metrics(h["epoch"], h, now)]
        self.client.log_batch(self.run_id, metrics=metrics)

    def on_validation_end(self, epoch: int, metrics: dict[str, float], samples: torch.Tensor | None,
                          check: Check) -> None:
        if samples is None:  # not a check that draws (metrics.grid_every)
            return
        title = f"epoch {epoch}  {self.trainer.monitor}={metrics[self.trainer.monitor]:.4g}"
        log_bytes(self.client, self.run_id, plots.picture(samples, self.trainer.data.means, title),
                  f"samples/epoch_{epoch:04d}.png")

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        """Held, then sent in one batch with the epoch of the next check (or FLUSH_SECONDS after
        the last send), in the loop: ``metrics.budget`` pays for it like any other work besides
        training. Sent in the background instead, the store's write stalled the next epoch's
        two-thread kernels on 2 cores by 7% of an epoch (benchmarks/overhead.py), a cost no
        budget saw."""
        if epoch not in self._sent_before:
            self._held += _epoch_metrics(epoch, logs, int(1000 * time.time()))
        if self.trainer.validation.monitor in logs or time.monotonic() - self._sent_at >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Send the held epochs' metrics; raise if the store did not take them."""
        held, self._held = self._held, []
        self._sent_at = time.monotonic()
        if held:
            self.client.log_batch(self.run_id, metrics=held)

    def on_train_end(self, result: TrainResult) -> None:
        self.log_result(result)
        self.log_best_model(result)

    def log_result(self, result: TrainResult) -> None:
        """The run's outcome: final metrics, the stop reason, the curves, and the cadence warning
        when the floor had to call checks the budget would not pay for; the epochs still held go
        in the same batch (one write to the store, not three: each is ~27 ms on sqlite)."""
        held, self._held = self._held, []
        tags = {} if result.cadence_warning is None else {TAG_CADENCE_WARNING: result.cadence_warning}
        extra = {"train_seconds": result.seconds, "overhead_share": result.overhead_share,
                 "max_check_gap": result.max_check_gap,
                 **{f"test_{name}": value for name, value in result.test_metrics.items()}}
        log_outcome(self.client, self.run_id, result.monitor, result.stop_reason, result.stopped_epoch,
                    result.best_epoch, result.best_value, result.history, extra, held, tags)

    def log_best_model(self, result: TrainResult) -> None:
        """The best-epoch generator as an MLflow model: a one-off upload at the end of the run."""
        if result.best_generator is not None:
            info = log_model(result.best_generator, self.recipe.model.z_dim, self.trainer.data.sample_shape)
            self.model_uri = info.model_uri
            self.client.set_tag(self.run_id, TAG_MODEL_URI, info.model_uri)


def log_outcome(client: MlflowClient, run_id: str, monitor: str, stop_reason: str, stopped_epoch: int,
                best_epoch: int | None, best_value: float | None, history: list[dict[str, float]],
                extra: dict[str, float] | None = None, held: list[Metric] = (),
                tags: dict[str, str] | None = None) -> None:
    """What ends every run, ganstop's loop or a user's: ``stopped_epoch``, ``restored_epoch``,
    ``best_score`` and ``best_<monitor>`` (plus ``extra``), the stop reason tag (plus ``tags``) and
    the ``held`` metrics not sent yet, in one batch; then curves.png."""
    finals = {"stopped_epoch": stopped_epoch, **(extra or {})}
    if best_epoch is not None:
        finals |= {"restored_epoch": best_epoch, "best_score": best_value, f"best_{monitor}": best_value}
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[*held, *(Metric(key, float(value), now, 0) for key, value in finals.items())],
                     tags=[RunTag(key, value) for key, value in {TAG_STOP_REASON: stop_reason, **(tags or {})}.items()])
    log_bytes(client, run_id, plots.curves(history, monitor, best_epoch), "curves.png")


def log_bytes(client: MlflowClient, run_id: str, data: bytes, artifact_file: str) -> None:
    """An in-memory file (a PNG) as the run's artifact ``artifact_file``."""
    path = Path(artifact_file)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / path.name
        local.write_bytes(data)
        client.log_artifact(run_id, str(local), str(path.parent) if str(path.parent) != "." else None)
