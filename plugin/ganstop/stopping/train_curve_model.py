"""Train the curve model's weights (``curve_model.pt``) from a seed, on 1 CPU core in minutes.

    python -m ganstop.stopping.train_curve_model benchmarks/curves/studiogan-*.json \
        benchmarks/curves/biggan-pytorch-imagenet128.json --seed 0

makes the shipped file: those five public logs are what it was trained on. The study tables
(``ganstop-*.json``, this repository's own runs) and the logs added since (the Cityscapes runs of
``stylegan2pytorch-cityscapes.json``) are not in it, so they stay curves it has never seen.
A seed gives the same weights bit for bit on one machine; another CPU's float kernels drift them
over the epochs (retrained on another machine: P(gain > 5%) moved by 0.002 at the median check of
the five logs and 0.09 at most, and the stop at 0.1 agreed at 99.5% of the checks).

Data: curves sampled from ``curve_prior.Prior`` and the real curves of the given files (each
also replayed at shorter budgets and at every 2nd and 3rd check, as other runs of the same
training would have logged it), every prefix of at least MIN_CHECKS checks an example whose
target is the bin of the gain the rest of its budget made. ``--leave-out GROUP`` drops a source
group's curves (``replay.source_group``; leave-one-source-out scoring). The network is LC-PFN's idea at the smallest
size that does the job: an MLP trained with cross-entropy over the gain bins.

The saved state dict also holds the forecast of the last check the script makes (``check.*``),
so a test can show the shipped file, loaded with ``weights_only=True``, forecasts as it did.
"""

from __future__ import annotations

import argparse
import glob
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ganstop.stopping.curve_model import EDGES, MIN_CHECKS, N_FEATURES, WEIGHTS, bin_of, features, target
from ganstop.stopping.curve_prior import Prior, sample
from ganstop.stopping.replay import source_group

HIDDEN = (128, 128)


def real_series(paths: list[str], exclude: Callable[[str, int], bool] | None = None) -> list[np.ndarray]:
    """The real curves of ``paths``, oriented lower-is-better, without those for which
    ``exclude(path, index in its file)`` holds."""
    out = []
    for path in paths:
        for i, entry in enumerate(json.loads(Path(path).read_text())["curves"].values()):
            if exclude is not None and exclude(path, i):
                continue
            values = np.array([float(v) for _, v in entry["checks"]])
            values = values[np.isfinite(values)]
            out.append(values if entry.get("mode", "min") == "min" else -values)
    return out


def leaving_out(group: str | None) -> Callable[[str, int], bool] | None:
    """``exclude`` for leave-one-source-out: every curve of ``group`` (``replay.source_group``)."""
    return None if group is None else lambda path, i: source_group(path) == group


def examples(values: np.ndarray, cuts: np.ndarray | None = None) -> tuple[list[np.ndarray], list[int]]:
    """Features and target bins of the prefixes of one curve (checks at epochs 1..n, budget n)."""
    n = len(values)
    epochs = np.arange(1, n + 1, dtype=float)
    cuts = np.arange(MIN_CHECKS, n) if cuts is None else cuts
    return [features(epochs[:k], values[:k], n) for k in cuts], [bin_of(target(values, k)) for k in cuts]


def variants(values: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """One real curve as other runs of its training would have logged it: the whole budget, a
    shorter budget, and every 2nd or 3rd check where enough checks remain."""
    n = len(values)
    out = [values, values[: max(MIN_CHECKS + 2, int(rng.uniform(0.4, 0.9) * n))]]
    out += [values[rng.integers(step):: step] for step in (2, 3) if n // step >= 12]
    return out


def dataset(paths: list[str], exclude: Callable[[str, int], bool] | None, seed: int, synthetic: int, cuts: int, prior: Prior,
            real_weight: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs, ys, ws = [], [], []
    for _ in range(synthetic):
        values = sample(rng, prior)
        n = len(values)
        x, y = examples(values, rng.integers(MIN_CHECKS, n, size=min(cuts, n - MIN_CHECKS)))
        xs += x
        ys += y
        ws += [1.0] * len(y)
    for values in real_series(paths, exclude):
        for variant in variants(values, rng):
            if len(variant) > MIN_CHECKS:
                x, y = examples(variant)
                xs += x
                ys += y
                ws += [real_weight] * len(y)
    return np.array(xs, np.float32), np.array(ys, np.int64), np.array(ws, np.float32)


def train(paths: list[str], exclude: Callable[[str, int], bool] | None = None, seed: int = 0, synthetic: int = 40000, cuts: int = 8,
          epochs: int = 12, prior: Prior = Prior(), real_weight: float = 1.0, log=print) -> dict[str, torch.Tensor]:
    """The trained state dict: ``mean``/``std`` of the features, ``layers.<i>.weight/bias``."""
    torch.manual_seed(seed)
    start = time.perf_counter()
    x, y, w = dataset(paths, exclude, seed, synthetic, cuts, prior, real_weight)
    log(f"{len(y)} examples ({(w != 1).sum() if real_weight != 1 else 'real weight 1'}) in {time.perf_counter() - start:.0f} s")
    mean, std = x.mean(0), x.std(0) + 1e-6
    xt, yt, wt = torch.from_numpy((x - mean) / std), torch.from_numpy(y), torch.from_numpy(w)
    sizes = (N_FEATURES, *HIDDEN, len(EDGES))
    layers = [torch.nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])]
    net = torch.nn.Sequential(*[m for layer in layers for m in (layer, torch.nn.ReLU())][:-1])
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    batch = 1024
    steps = epochs * ((len(yt) + batch - 1) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        order, total = torch.randperm(len(yt), generator=generator), 0.0
        for i in range(0, len(yt), batch):
            idx = order[i:i + batch]
            loss = (torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx], reduction="none") * wt[idx]).sum() / wt[idx].sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        log(f"epoch {epoch + 1}/{epochs}: loss {total / len(yt):.4f} ({time.perf_counter() - start:.0f} s)")
    state = {"mean": torch.from_numpy(mean).double(), "std": torch.from_numpy(std).double()}
    for i, layer in enumerate(layers):
        state[f"layers.{i}.weight"], state[f"layers.{i}.bias"] = layer.weight.detach().clone(), layer.bias.detach().clone()
    # the last check: a plateau-then-fall probe, its features and the network's forecast in torch
    probe = np.r_[np.full(30, 50.0), 50 - 20 * (1 - np.exp(-np.arange(1, 71) / 10))][:30]
    check = torch.from_numpy(features(np.arange(1, 31, dtype=float), probe, 100)).double()
    with torch.no_grad():
        net.double()
        state["check.features"] = check
        state["check.probabilities"] = torch.softmax(net((check - state["mean"]) / state["std"]), -1)
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("curves", nargs="*", help="real curve files (benchmarks/curves/*.json); globs are expanded")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--leave-out", help="a source group whose curves are not trained on")
    parser.add_argument("--synthetic", type=int, default=40000, help="curves sampled from the prior")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = sorted({p for pattern in args.curves for p in glob.glob(pattern)})
    state = train(paths, leaving_out(args.leave_out), args.seed, args.synthetic, epochs=args.epochs)
    torch.save(state, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
