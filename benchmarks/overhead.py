"""Tracking overhead: the project's loop (MLflow logging, validation and checkpoint every epoch)
vs a bare PyTorch loop of the same models, data and steps (no tracking, no validation).

Runs are interleaved and the median of the repeats is compared. EMA is off in both, so the
ratio is what tracking + validation + checkpoints cost. Goal: ratio <= 1.05 on digits-dcgan.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import torch
from _report import scratch_tracking, write

from ganstop import models, recipe as rc, schedules
from ganstop.data import load_data
from ganstop.metrics.registry import Evaluator
from ganstop.tracking import MlflowLogger
from ganstop.train import Trainer, _g_loss, _losses


def bare_loop(recipe: rc.Recipe, data, epochs: int) -> float:
    """The textbook loop: same models, optimizers and batches; nothing else."""
    torch.manual_seed(recipe.train.seed)
    G, D = models.build(recipe.model, data.sample_shape)
    tc = recipe.train
    opt_g = schedules.optimizer(G, tc.lr_g, (tc.beta1, tc.beta2), 0.0)
    opt_d = schedules.optimizer(D, tc.lr_d, (tc.beta1, tc.beta2), 0.0)
    x, batch = data.train, tc.batch_size
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for step in range(len(x) // batch):
            real = x[order[step * batch:(step + 1) * batch]]
            fake = G(torch.randn(batch, recipe.model.z_dim))
            d_loss = _losses(tc.loss, D(real), D(fake.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            g_loss = _g_loss(tc.loss, D(fake))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
    return time.perf_counter() - started


class NoFinalModel(MlflowLogger):
    """Per-epoch logging only: the end-of-run model upload is timed separately."""

    def on_train_end(self, result) -> None:
        self.result = result


def project_loop(recipe: rc.Recipe, data, evaluator, epochs: int) -> tuple[float, float]:
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as ckpt:
        trainer = Trainer(recipe, data, evaluator, Path(ckpt), [NoFinalModel(run.info.run_id, recipe)],
                          device=torch.device("cpu"), progress=False)
        started = time.perf_counter()
        result = trainer.fit()
        seconds = time.perf_counter() - started
    validation = sum(h.get("validation_seconds", 0.0) for h in result.history)
    return seconds, validation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", default="digits-dcgan")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 repeats of 4 epochs")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.repeats = 4, 3
    scratch_tracking()
    recipe = rc.load(args.recipe, [("train.max_epochs", args.epochs), ("stopping.warmup", 0),
                                   ("stopping.patience", 10_000), ("ema.enabled", False), ("train.device", "cpu")])
    data = load_data(recipe)
    evaluator = Evaluator(recipe, data, torch.device("cpu"))
    bare, ours, validation = [], [], []
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        bare.append(bare_loop(recipe, data, args.epochs))
        seconds, val = project_loop(recipe, data, evaluator, args.epochs)
        ours.append(seconds)
        validation.append(val)
    t_bare, t_ours = statistics.median(bare), statistics.median(ours)
    with mlflow.start_run():
        from ganstop.tracking import log_model

        g, _ = models.build(recipe.model, data.sample_shape)
        started = time.perf_counter()
        log_model(models.Sampler(g, True), recipe.model.z_dim, data.sample_shape)
        model_seconds = time.perf_counter() - started
    lines = [f"{args.repeats} interleaved repeats of {args.epochs} epochs on {args.recipe}; medians.", "",
             "| loop | seconds | per epoch |", "| --- | --- | --- |",
             f"| bare PyTorch | {t_bare:.2f} | {t_bare / args.epochs:.3f} |",
             f"| ganstop (MLflow + validation + checkpoint every epoch) | {t_ours:.2f} | {t_ours / args.epochs:.3f} |",
             "", f"Validation alone: {statistics.median(validation):.2f} s of the ganstop loop "
             f"({statistics.median(validation) / t_ours:.1%}). Logging the MLflow model once at the end: "
             f"{model_seconds:.2f} s (not in the ratio)."]
    result = {"time_ratio": t_ours / t_bare, "validation_share": statistics.median(validation) / t_ours,
              "model_log_seconds": model_seconds}
    print("\n".join(lines))
    print(write(f"Tracking overhead ({args.recipe})", lines, result))


if __name__ == "__main__":
    main()
