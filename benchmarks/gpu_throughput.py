"""GPU path: DCGAN on 64x64 images (random data of CIFAR shape), images per second.

Baseline: the pytorch/examples DCGAN training loop as that example writes it (its netG/netD,
BCELoss on sigmoid outputs, a DataLoader with 2 workers, a host copy and three ``.item()``
syncs per step, fp32). Against it, ganstop's own step (bf16 autocast, channels_last,
device-resident data, cudnn.benchmark, one host sync per epoch; optional torch.compile) with
EMA off, and with EMA on as its own row. Goal on a GPU: >= 1.5x. It runs on CPU too (small),
but only GPU numbers answer the goal.
"""

from __future__ import annotations

import argparse
import time

import torch
from _report import write
from torch import nn

from ganstop import recipe as rc
from ganstop.data.sets import Data
from ganstop.training.gan_step import GANStep
from ganstop.training.loop import resolve_device

NZ, NGF, NDF, NC = 100, 64, 64, 3  # the example's defaults


class ExampleGenerator(nn.Module):
    """pytorch/examples dcgan/main.py ``Generator``."""

    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(NZ, NGF * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(NGF * 8), nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 8, NGF * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF * 4), nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 4, NGF * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF * 2), nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 2, NGF, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF), nn.ReLU(True),
            nn.ConvTranspose2d(NGF, NC, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, x):
        return self.main(x)


class ExampleDiscriminator(nn.Module):
    """pytorch/examples dcgan/main.py ``Discriminator``."""

    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(NC, NDF, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF * 2, NDF * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF * 4, NDF * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, x):
        return self.main(x).view(-1, 1).squeeze(1)


def weights_init(m: nn.Module) -> None:
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif name.find("BatchNorm") != -1:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def example_loop(images: torch.Tensor, batch_size: int, steps: int, device: torch.device) -> float:
    """The example's inner loop, statement for statement (minus printing and image saving)."""
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images), batch_size=batch_size,
                                         shuffle=True, num_workers=2, drop_last=True)
    netG, netD = ExampleGenerator().to(device), ExampleDiscriminator().to(device)
    netG.apply(weights_init)
    netD.apply(weights_init)
    criterion = nn.BCELoss()
    real_label, fake_label = 1, 0
    optimizerD = torch.optim.Adam(netD.parameters(), lr=0.0002, betas=(0.5, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=0.0002, betas=(0.5, 0.999))
    done, started = 0, None
    while done < steps:
        for data in loader:
            if done == 2:  # after warm-up steps
                torch.cuda.synchronize() if device.type == "cuda" else None
                started = time.perf_counter()
            netD.zero_grad()
            real_cpu = data[0].to(device)
            b = real_cpu.size(0)
            label = torch.full((b,), real_label, dtype=real_cpu.dtype, device=device)
            output = netD(real_cpu)
            errD_real = criterion(output, label)
            errD_real.backward()
            output.mean().item()  # D_x
            noise = torch.randn(b, NZ, 1, 1, device=device)
            fake = netG(noise)
            label.fill_(fake_label)
            output = netD(fake.detach())
            errD_fake = criterion(output, label)
            errD_fake.backward()
            output.mean().item()  # D_G_z1
            optimizerD.step()
            netG.zero_grad()
            label.fill_(real_label)
            output = netD(fake)
            errG = criterion(output, label)
            errG.backward()
            output.mean().item()  # D_G_z2
            optimizerG.step()
            done += 1
            if done == steps:
                break
    torch.cuda.synchronize() if device.type == "cuda" else None
    return (steps - 2) * batch_size / (time.perf_counter() - started)


def project_loop(recipe: rc.Recipe, images: torch.Tensor, steps: int, device: torch.device) -> float:
    """The trainer's GAN step alone (no validation here): resident data, AMP, channels-last."""
    n = steps * recipe.train.batch_size
    step = GANStep(recipe, Data("image", images[:n], images[:64], n_classes=0), device)
    step.train_epoch(1)  # warm-up (and compilation when on)
    torch.cuda.synchronize() if device.type == "cuda" else None
    started = time.perf_counter()
    step.train_epoch(1)  # one host sync at its end
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="20 steps of batch 32 (CPU-sized)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (cuda fails without a GPU)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.quick:
        args.steps, args.batch_size = 20, 32
    recipes = {ema: rc.load(None, [("dataset.image_size", 64), ("model.z_dim", NZ), ("model.width", NGF),
                                   ("train.batch_size", args.batch_size), ("train.compile", args.compile),
                                   ("ema.enabled", ema), ("train.device", device.type)]) for ema in (False, True)}
    n = (args.steps + 2) * args.batch_size
    images = torch.rand(n, 3, 64, 64) * 2 - 1
    example = example_loop(images, args.batch_size, args.steps, device)
    ours = project_loop(recipes[False], images, args.steps, device)
    ours_ema = project_loop(recipes[True], images, args.steps, device)
    lines = [f"device: {device}; DCGAN 64x64x3, batch {args.batch_size}, {args.steps} steps, "
             f"torch.compile {'on' if args.compile else 'off'}", "",
             "| loop | images/s | vs the example |", "| --- | --- | --- |",
             f"| pytorch/examples DCGAN loop (fp32, DataLoader, 3 syncs per step) | {example:.0f} | 1.00 |",
             f"| ganstop step, EMA off | {ours:.0f} | {ours / example:.2f} |",
             f"| ganstop step, EMA on | {ours_ema:.0f} | {ours_ema / example:.2f} |"]
    if device.type != "cuda":
        lines.append("\nCPU run: bf16 autocast and channels_last only apply on CUDA, so this ratio is not the goal's.")
    result = {"device": device.type, "speedup": ours / example, "speedup_ema": ours_ema / example,
              "ganstop_images_per_s": ours, "example_images_per_s": example}
    print()
    print("\n".join(lines))
    print(write(f"GPU path throughput ({device.type})", lines, result))


if __name__ == "__main__":
    main()
