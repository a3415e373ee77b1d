"""Metric cost: every metric of the recipe on the held-out set vs one training epoch; the
Fréchet distance, KID and precision/recall/density/coverage computations themselves on cached
features (128-d as the classifier's, 2,048-d as Inception's at 10,000 samples); and the
Inception-v3 pass that makes those 2,048-d features (torch-fidelity's network; its cost does not
depend on the weights' values, so random ones stand in for the release). On CPU and, when there
is one, on CUDA."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _report import write
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from ganstop import recipe as rc
from ganstop.data.sets import load_data
from ganstop.metrics import manifold, uncertainty
from ganstop.metrics.image import KID_SUBSETS, Embedded
from ganstop.metrics.scorer import Scorer
from ganstop.training.loop import Trainer


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def compute_seconds(metric, dim: int, n: int, device: str, repeats: int) -> float:
    """``metric.compute()`` on n reference and n generated random features, median of repeats."""
    metric = metric.to(device)
    metric.update(torch.randn(n, dim, device=device), real=True)
    metric.update(torch.randn(n, dim, device=device) + 0.1, real=False)
    times = []
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        metric.compute()
        sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def frechet(dim: int) -> FrechetInceptionDistance:
    return FrechetInceptionDistance(feature=Embedded(dim), reset_real_features=False, compute_with_cache=False)


def kid(dim: int, subsets: int, size: int) -> KernelInceptionDistance:
    return KernelInceptionDistance(feature=Embedded(dim), subsets=subsets, subset_size=size, reset_real_features=False,
                                   compute_with_cache=False)


def inception_seconds_per_1000(device: str, images: int) -> float | None:
    """torch-fidelity's Inception-v3 on 32x32 RGB images (resized to 299 inside), per 1,000."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        return None
    from unittest import mock

    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None), \
            mock.patch("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", lambda *a, **k: {}):
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).to(device)
    batch = torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8, device=device)
    with torch.no_grad():
        net(batch[:2])  # warm-up
        sync(device)
        started = time.perf_counter()
        net(batch)
        sync(device)
    return (time.perf_counter() - started) / images * 1000


def prdc_seconds(dim: int, n: int, device: str) -> float:
    """One precision/recall/density/coverage value of n generated against n reference features
    (the reference's radii computed beforehand, as a run keeps them)."""
    real, fake = torch.randn(n, dim, device=device), torch.randn(n, dim, device=device) + 0.1
    radius = (manifold.radii(real, manifold.PR_K), manifold.radii(real, manifold.DC_K))
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    manifold.scores(real, *radius, fake)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", default="digits-dcgan")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    recipe = rc.load(args.recipe, [("train.max_epochs", repeats + 1), ("stopping.warmup", 0),
                                   ("stopping.patience", 1000), ("train.device", "cpu"), ("metrics.every", 1)])
    data = load_data(recipe)
    scorer = Scorer(recipe, data, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as ckpt:
        trainer = Trainer(recipe, data, scorer, Path(ckpt), progress=False)
        trainer.fit()
    epoch = statistics.median(h["epoch_seconds"] for h in trainer.history[1:])
    validation = statistics.median(h["validation_seconds"] for h in trainer.history[1:])
    samples = trainer.step.generate(trainer.validation.z)

    def seconds(fn) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    # The classifier pass is shared by FID, KID and coverage, so it gets its own row and each
    # metric is timed on a batch whose features are already computed.
    per_metric = {"generate": seconds(lambda: trainer.step.generate(trainer.validation.z))}
    batch = scorer.batch(samples)
    if data.kind == "image":
        per_metric["classifier features (shared)"] = seconds(lambda: scorer.batch(samples).features)
        _ = batch.features  # computed here, so the metric rows below time the metrics alone
    per_metric |= {name: seconds(lambda c=compute: c(batch)) for name, compute in scorer.computes.items()}
    lines = [f"{args.recipe}: {len(data.val)} held-out images, {scorer.n_samples} generated per check.", "",
             "| what | seconds | share of one training epoch |", "| --- | --- | --- |",
             f"| one training epoch | {epoch:.3f} | 100% |",
             f"| a whole validation (generate + all metrics) | {validation:.3f} | {validation / epoch:.1%} |"]
    lines += [f"| {name} | {s:.4f} | {s / epoch:.1%} |" for name, s in per_metric.items()]
    lines += ["", "Fréchet distance from cached features (torchmetrics compute, float64 matrix square root):", "",
              "| features | samples | device | seconds |", "| --- | --- | --- | --- |"]
    result = {"validation_share": validation / epoch}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dim, n in ((128, 2000), (2048, 10000)):
        for device in devices:
            seconds = compute_seconds(frechet(dim), dim, n, device, repeats)
            lines.append(f"| {dim} | {n} | {device} | {seconds:.4f} |")
            result[f"frechet_{dim}_{device}_s"] = seconds
    lines += ["", f"KID from cached features (torchmetrics compute; `kid`: {KID_SUBSETS} subsets of "
              f"{recipe.metrics.kid_subset_size}, `inception_kid`: torch-fidelity's 100 subsets of 1,000):", "",
              "| features | samples | subsets | device | seconds |", "| --- | --- | --- | --- | --- |"]
    for dim, n, subsets, size in ((128, 2000, KID_SUBSETS, recipe.metrics.kid_subset_size), (2048, 10000, 100, 1000)):
        for device in devices:
            seconds = compute_seconds(kid(dim, subsets, size), dim, n, device, repeats)
            lines.append(f"| {dim} | {n} | {subsets} x {size} | {device} | {seconds:.4f} |")
            result[f"kid_{dim}_{device}_s"] = seconds
    lines += ["", "Precision, recall, density and coverage (`prdc`), one value from cached features (a check adds "
              f"{uncertainty.REPLICATES} more on random halves for the standard errors):", "",
              "| features | samples | device | seconds |", "| --- | --- | --- | --- |"]
    for dim, n in ((128, 2000), (2048, 10000)):
        for device in devices:
            seconds = prdc_seconds(dim, n, device)
            lines.append(f"| {dim} | {n} | {device} | {seconds:.4f} |")
            result[f"prdc_{dim}_{device}_s"] = seconds
    lines += ["", "The Inception-v3 pass that makes 2,048-d features (`inception_fid`, `inception_kid`, "
              "`metrics.features: inception`), which a check pays for its generated samples and a run once for its "
              "reference (cached after):", "", "| device | seconds per 1,000 images |", "| --- | --- |"]
    for device in devices:
        seconds = inception_seconds_per_1000(device, 16 if device == "cpu" else 500)
        if seconds is None:
            lines.append(f"| {device} | not measured: torch-fidelity is not installed |")
            continue
        lines.append(f"| {device} | {seconds:.1f} |")
        result[f"inception_{device}_s_per_1000"] = seconds
    if not torch.cuda.is_available():
        lines.append("\nNo GPU on this machine: CUDA rows are reported only from a GPU run.")
    print("\n".join(lines))
    print(write(f"Metric cost ({args.recipe})", lines, result))


if __name__ == "__main__":
    main()
