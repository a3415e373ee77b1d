"""Pictures a person looks at: sample grids, 2D scatter plots, training curves."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402


def image_grid(images: torch.Tensor, min_side: int = 256) -> Image.Image:
    """(n, C, H, W) in [0, 1] -> one PIL image, rows of ceil(sqrt(n)), upscaled to be visible."""
    n, c, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.ones(c, rows * (h + 1) + 1, cols * (w + 1) + 1)
    for i, img in enumerate(images):
        r, col = divmod(i, cols)
        grid[:, 1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + col * (w + 1): 1 + col * (w + 1) + w] = img
    array = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    pil = Image.fromarray(array[..., 0] if c == 1 else array)
    scale = max(1, min_side // max(pil.size))
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


def _png(fig) -> bytes:
    """The figure as PNG bytes. Margins are set where the figure is made: ``bbox_inches="tight"``
    draws the figure twice, 40% of the end-of-run curves' time (benchmarks/overhead.py)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def scatter(points: torch.Tensor, means: torch.Tensor | None, title: str) -> bytes:
    """2D samples over the mixture's modes. The points are one line's markers, not a scatter
    collection: Agg stamps one marker where a collection draws each path, half the time for a
    check's 10,000 points (a ring8 run draws a picture at every new best)."""
    fig, ax = plt.subplots(figsize=(4, 4))
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.08, top=0.93)
    ax.plot(points[:, 0].numpy(), points[:, 1].numpy(), ".", ms=2.5, mec="none", alpha=0.4, label="generated")
    if means is not None:
        ax.scatter(means[:, 0], means[:, 1], s=30, c="red", marker="x", label="modes")
        pad = 0.5 * float(means.abs().max()) + 0.5
        limit = float(means.abs().max()) + pad
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7)
    return _png(fig)


def picture(samples: torch.Tensor, means: torch.Tensor | None, title: str) -> bytes:
    """A check's samples as a PNG: a grid for images ``(n, C, H, W)`` in [0, 1], a scatter for 2D
    points (``title`` and the mixture ``means`` are drawn on the scatter only)."""
    if samples.ndim == 4:
        buf = io.BytesIO()
        image_grid(samples).save(buf, format="PNG")
        return buf.getvalue()
    return scatter(samples, means, title)


def curves(history: list[dict[str, float]], monitor: str, best_epoch: int | None) -> bytes:
    """Losses, learning rates and the monitored metric over epochs, best epoch marked."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.15, top=0.91, wspace=0.22)
    for ax, keys in ((axes[0], ("d_loss", "g_loss")), (axes[1], ("lr_g", "lr_d"))):
        for key in keys:  # a user's own loop (ganstop.MlflowTracker) may log only some of them
            points = [(h["epoch"], h[key]) for h in history if key in h]
            if points:
                ax.plot(*zip(*points), label=key)
    checked = [h for h in history if monitor in h]
    values = [h[monitor] for h in checked]
    axes[2].plot([h["epoch"] for h in checked], values, marker=".", label=monitor)
    if values and min(values) > 0 and max(values) > 10 * min(values):
        axes[2].set_yscale("log")  # FID falls by orders of magnitude; the tail is what matters
    for ax, title in zip(axes, ("losses", "learning rates", f"{monitor} (held out)")):
        if best_epoch is not None and ax is axes[2]:
            ax.axvline(best_epoch, color="green", linestyle="--", label=f"best epoch {best_epoch}")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _png(fig)
