"""Pictures: sample grids, the 1-D histogram of the seed, loss curves. Matplotlib, no display."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from gan_pipeline.data import denormalize  # noqa: E402


def image_grid(images, cols: int | None = None, pad: int = 2) -> np.ndarray:
    """Images (N, H, W, C) in [-1, 1] -> one uint8 RGB picture, ``cols`` per row, 2-px gutters."""
    images = denormalize(images)
    n, h, w, c = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y:y + h, x:x + w] = img if c == 3 else np.repeat(img[..., :1], 3, axis=-1)
    return grid


def histogram_figure(series: dict[str, np.ndarray], title: str = ""):
    """Overlaid histograms of 1-D values, e.g. the seed's {"Real", "Generated", "Input"}."""
    fig, ax = plt.subplots(figsize=(7, 4))
    values = {label: np.ravel(v) for label, v in series.items() if v is not None}
    lo = min(float(v.min()) for v in values.values())
    hi = max(float(v.max()) for v in values.values())
    bins = np.linspace(lo, hi, 80)
    for label, v in values.items():
        ax.hist(v, bins=bins, alpha=0.45, density=True,
                label=f"{label} (mean {v.mean():.3f}, std {v.std():.3f})")
    ax.set_xlabel("value")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def loss_figure(history: dict[str, list[float]], title: str = ""):
    """D and G losses per epoch, and D's mean output on real and fake samples."""
    fig, (ax_loss, ax_d) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = np.arange(1, len(history.get("d_loss", [])) + 1)
    for key in ("d_loss", "g_loss"):
        if key in history:
            ax_loss.plot(epochs, history[key], marker="o", label=key)
    for ax in (ax_loss, ax_d):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set_xlabel("epoch")
    ax_loss.set_title("losses")
    ax_loss.legend()
    for key, label in (("d_real", "D(x)"), ("d_fake", "D(G(z))")):
        if key in history:
            ax_d.plot(epochs, history[key], marker="o", label=label)
    ax_d.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax_d.set_ylim(0, 1)
    ax_d.set_xlabel("epoch")
    ax_d.set_title("discriminator output (probability)")
    ax_d.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)
