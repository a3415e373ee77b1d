"""GPU path: DCGAN on 64x64 images (random data of CIFAR shape), images per second.

ganstop's loop (bf16 autocast, channels_last, device-resident data, cudnn.benchmark, optional
torch.compile) vs a plain loop in the style of the PyTorch examples' DCGAN (fp32, DataLoader).
Goal on a GPU: >= 1.5x. It runs on CPU too (small), but only GPU numbers answer the goal.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from _report import write

from ganstop import models, recipe as rc, schedules
from ganstop.data import Data
from ganstop.metrics.registry import Selection
from ganstop.train import Trainer, _g_loss, _losses


def plain_loop(recipe: rc.Recipe, images: torch.Tensor, steps: int, device: torch.device) -> float:
    """PyTorch-examples style: fp32, a DataLoader, host-to-device copies every step."""
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images), batch_size=recipe.train.batch_size,
                                         shuffle=True, drop_last=True, num_workers=2,
                                         pin_memory=device.type == "cuda")
    G, D = (m.to(device) for m in models.build(recipe.model, tuple(images.shape[1:])))
    tc = recipe.train
    opt_g = schedules.optimizer(G, tc.lr_g, (tc.beta1, tc.beta2), 0.0)
    opt_d = schedules.optimizer(D, tc.lr_d, (tc.beta1, tc.beta2), 0.0)
    done, started = 0, None
    while done < steps:
        for (real,) in loader:
            if done == 2:  # after warm-up steps
                torch.cuda.synchronize() if device.type == "cuda" else None
                started = time.perf_counter()
            real = real.to(device)
            fake = G(torch.randn(len(real), recipe.model.z_dim, device=device))
            d_loss = _losses(tc.loss, D(real), D(fake.detach()))
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            g_loss = _g_loss(tc.loss, D(fake))
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
            done += 1
            if done == steps:
                break
    torch.cuda.synchronize() if device.type == "cuda" else None
    return (steps - 2) * tc.batch_size / (time.perf_counter() - started)


def project_loop(recipe: rc.Recipe, images: torch.Tensor, steps: int, device: torch.device) -> float:
    data = Data("image", images, images[:64], n_classes=0)
    evaluator = SimpleNamespace(selection=Selection([], "fid", "min"), n_samples=64)  # no validation here
    n = steps * recipe.train.batch_size
    data.train = images[:n]
    with tempfile.TemporaryDirectory() as ckpt:
        trainer = Trainer(recipe, data, evaluator, Path(ckpt), device=device, progress=False)
        trainer.epoch = 1
        trainer._train_epoch()  # warm-up (and compilation when on)
        torch.cuda.synchronize() if device.type == "cuda" else None
        started = time.perf_counter()
        trainer._train_epoch()  # one host sync at its end
        return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="20 steps of batch 32 (CPU-sized)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.quick:
        args.steps, args.batch_size = 20, 32
    recipe = rc.load(None, [("dataset.image_size", 64), ("model.z_dim", 100), ("train.batch_size", args.batch_size),
                            ("train.compile", args.compile), ("ema.enabled", True), ("train.device", device.type)])
    n = (args.steps + 2) * args.batch_size
    images = torch.rand(n, 3, 64, 64) * 2 - 1
    plain = plain_loop(recipe, images, args.steps, device)
    ours = project_loop(recipe, images, args.steps, device)
    lines = [f"device: {device}; DCGAN 64x64x3, batch {args.batch_size}, {args.steps} steps, "
             f"torch.compile {'on' if args.compile else 'off'}", "",
             "| loop | images/s |", "| --- | --- |", f"| plain (fp32, DataLoader) | {plain:.0f} |",
             f"| ganstop (bf16, channels_last, resident data, EMA on) | {ours:.0f} |"]
    if device.type != "cuda":
        lines.append("\nCPU run: bf16 autocast and channels_last only apply on CUDA, so this ratio is not the goal's.")
    result = {"device": device.type, "speedup": ours / plain, "ganstop_images_per_s": ours, "plain_images_per_s": plain}
    print()
    print("\n".join(lines))
    print(write(f"GPU path throughput ({device.type})", lines, result))


if __name__ == "__main__":
    main()
