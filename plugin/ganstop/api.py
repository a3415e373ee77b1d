"""ganstop for your own training loop: quality metrics, the stopper and MLflow tracking.

A team with its own generator, discriminator and data keeps its loop and adds about 20 lines
(the README shows them, and a test runs them as shown): a ``QualityMonitor`` scores generated
samples against held-out data with the metrics ``ganstop train`` uses (FID/KID on a feature
network the user passes, or the 2D mode metrics), ``EarlyStopper`` decides, and an
``MlflowTracker`` logs what a ``ganstop train`` run logs: per-epoch metrics, sample pictures,
the stop reason, ``stopped_epoch``/``restored_epoch``, curves, and the best generator as an
MLflow model with a signature.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Sequence

import mlflow
import torch
from mlflow.entities import Metric as MlflowMetric
from mlflow.tracking import MlflowClient
from torch import nn

from ganstop.tracking import plots
from ganstop.metrics.registry import REGISTRY, outputs
from ganstop.metrics.scorer import Batch
from ganstop.stopping.stopper import EarlyStopper
from ganstop.tracking.logger import TAG_MODEL_URI, log_bytes, log_model, log_outcome

IMAGE_METRICS = ("fid", "kid")  # coverage needs ganstop's own classifier head
POINT_METRICS = ("modes", "swd")


class _Features:
    """The user's feature network where ganstop's metrics expect the classifier's features."""

    def __init__(self, network: nn.Module, chunk: int = 512):
        self.network, self.chunk = network.eval(), chunk

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.network(part).flatten(1).float() for part in images.split(self.chunk)])


class QualityMonitor:
    """Scores one batch of generated samples against held-out reference data; ``monitor`` is the
    output the stopper watches, and it alone gets a standard error (``<monitor>_se``)."""

    def __init__(self, names: Sequence[str], ctx: SimpleNamespace):
        self._ctx, self.monitor = ctx, ctx.se_output
        self.mode = outputs(list(names))[self.monitor]
        self._computes = [REGISTRY[name].build(ctx) for name in names]

    @classmethod
    def images(cls, reference: torch.Tensor, features: nn.Module, metrics: Sequence[str] = IMAGE_METRICS,
               monitor: str = "fid", kid_subset_size: int = 100, device: str | torch.device = "cpu") -> "QualityMonitor":
        """FID/KID on ``features`` (any network from images to vectors, e.g. one trained on your
        labels); ``reference`` and the samples scored later are images in [0, 1]."""
        _check(metrics, IMAGE_METRICS, monitor)
        device = torch.device(device)
        ctx = SimpleNamespace(device=device, se_output=monitor, n_samples=len(reference),
                              classifier=_Features(features.to(device)),
                              recipe=SimpleNamespace(metrics=SimpleNamespace(kid_subset_size=kid_subset_size)))
        ctx.reference = reference.to(device)
        ctx.reference_features = ctx.classifier.features(ctx.reference)
        return cls(metrics, ctx)

    @classmethod
    def points(cls, reference: torch.Tensor, means: torch.Tensor, std: float, metrics: Sequence[str] = POINT_METRICS,
               monitor: str = "mode_error") -> "QualityMonitor":
        """Mode coverage and quality (3-std rule) on a 2D mixture with these component ``means``."""
        _check(metrics, POINT_METRICS, monitor)
        ctx = SimpleNamespace(device=torch.device("cpu"), se_output=monitor, reference=reference.float(),
                              data=SimpleNamespace(means=means.float(), std=std))
        return cls(metrics, ctx)

    def __call__(self, samples: torch.Tensor) -> dict[str, float]:
        batch = Batch(samples.detach().to(self._ctx.device).float(), self._ctx)
        out: dict[str, float] = {}
        for compute in self._computes:
            out.update(compute(batch))
        return out


def _check(names: Sequence[str], allowed: Sequence[str], monitor: str) -> None:
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise ValueError(f"metrics must be some of {', '.join(allowed)}, not {list(names)}")
    if monitor not in outputs(list(names)):
        raise ValueError(f"monitor {monitor!r} is not an output of {list(names)}: {', '.join(outputs(list(names)))}")


@dataclass
class MlflowTracker:
    """Logs a user's loop into the active MLflow run (or ``run_id``) the way ``ganstop train``
    logs its own: metrics at step = epoch, a picture on the first and every new best check,
    and at ``finish`` the stop, the curves and the best generator as a model."""

    stopper: EarlyStopper
    monitor: str
    run_id: str | None = None
    means: torch.Tensor | None = None  # 2D: mixture means drawn on the scatter plots
    history: list[dict[str, float]] = field(default_factory=list)
    client: MlflowClient = field(default_factory=MlflowClient)

    def __post_init__(self) -> None:
        self.run_id = self.run_id or mlflow.active_run().info.run_id
        self.client.log_batch(self.run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in {
            "monitor": self.monitor, "mode": self.stopper.mode, "patience": self.stopper.patience,
            "min_delta": self.stopper.min_delta, "patience_increase": self.stopper.patience_increase,
            "criteria": ",".join(self.stopper.criteria), "tolerance": self.stopper.tolerance,
            "confidence": self.stopper.confidence, "max_epochs": self.stopper.max_epochs}.items()])

    def log_epoch(self, epoch: int, metrics: dict[str, float], samples: torch.Tensor | None = None) -> None:
        """One epoch's numbers; ``samples`` (images in [0, 1], or 2D points) are drawn when this
        epoch's check was the first or a new best."""
        now = int(1000 * time.time())
        self.client.log_batch(self.run_id, metrics=[MlflowMetric(k, float(v), now, epoch) for k, v in metrics.items()])
        self.history.append({"epoch": epoch, **metrics})
        drawn = samples is not None and self.monitor in metrics and (
            self.stopper.best_epoch == epoch or sum(self.monitor in h for h in self.history) == 1)
        if drawn:
            shown = samples.detach().cpu()
            shown = shown[:64] if shown.ndim == 4 else shown  # a grid of 64; a scatter wants every point
            title = f"epoch {epoch}  {self.monitor}={metrics[self.monitor]:.4g}"
            log_bytes(self.client, self.run_id, plots.picture(shown, self.means, title), f"samples/epoch_{epoch:04d}.png")

    def finish(self, best_generator: nn.Module | None, z_dim: int) -> str | None:
        """The stop (``max_epochs`` when no criterion fired), the curves, and the best-epoch
        generator as an MLflow model with a tensor signature; returns the model's URI."""
        st = self.stopper
        if not st.stopped:
            st.exhaust(self.history[-1]["epoch"] if self.history else 0)
        log_outcome(self.client, self.run_id, self.monitor, st.stop_reason, st.stopped_epoch, st.best_epoch, st.best,
                    self.history)
        if best_generator is None:
            return None
        best_generator = best_generator.cpu().eval()
        with torch.no_grad():
            shape = tuple(best_generator(torch.zeros(2, z_dim)).shape[1:])
        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            uri = log_model(best_generator, z_dim, shape).model_uri
        else:
            with mlflow.start_run(run_id=self.run_id, nested=active is not None):
                uri = log_model(best_generator, z_dim, shape).model_uri
        self.client.set_tag(self.run_id, TAG_MODEL_URI, uri)
        return uri
