"""Pictures: sample grids, the 1-D histogram of the seed, loss curves and end-of-run reports.
Matplotlib without a display; these functions draw, ``gan_pipeline.kinds`` picks which."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402


def denormalize(x):
    """float [-1, 1] -> uint8 [0, 255] (numpy), for pictures."""
    return np.clip(np.round((np.asarray(x, dtype=np.float32) + 1.0) * 127.5), 0,
                   255).astype(np.uint8)


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


def class_rows(images, labels, class_names: list[str], title: str = "") -> np.ndarray:
    """A conditional generator's samples as one uint8 RGB picture with one row per class,
    named on the left: row c holds the images generated for label c, in order."""
    labels = np.asarray(labels).reshape(-1)
    present = [c for c in range(len(class_names)) if np.any(labels == c)]
    per_row = max(int(np.sum(labels == c)) for c in present)
    blank = np.full_like(np.asarray(images[:1]), 1.0)  # white where a row is short
    rows = []
    for c in present:
        row = np.asarray(images)[labels == c]
        rows.append(np.concatenate([row, np.repeat(blank, per_row - len(row), axis=0)]))
    grid = image_grid(np.concatenate(rows), cols=per_row)
    # about 60 grid pixels an inch, plus room for the names and the title
    fig, ax = plt.subplots(figsize=(1.5 + grid.shape[1] / 60, 0.6 + grid.shape[0] / 60))
    ax.imshow(grid)
    step = grid.shape[0] / len(present)
    ax.set_yticks([step * (i + 0.5) for i in range(len(present))])
    ax.set_yticklabels([str(class_names[c]) for c in present], fontsize=8)
    ax.set_xticks([])
    ax.tick_params(length=0)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    try:
        return figure_pixels(fig)
    finally:
        close(fig)


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
    # sigmoid losses report D's mean probabilities, the others (hinge, least squares,
    # wasserstein) its mean raw scores
    probability = "d_real" in history
    real, fake = ("d_real", "d_fake") if probability else ("score_real", "score_fake")
    for key, label in ((real, "D(x)"), (fake, "D(G(z))")):
        if key in history:
            ax_d.plot(epochs, history[key], marker="o", label=label)
    if probability:
        ax_d.axhline(0.5, color="grey", linestyle=":", linewidth=1)
        ax_d.set_ylim(0, 1)
    ax_d.set_xlabel("epoch")
    ax_d.set_title("discriminator output (" + ("probability" if probability else "score") + ")")
    ax_d.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def close(fig) -> None:
    plt.close(fig)


def _quality_panel(ax_curves, steps: list[int], curves: dict[str, list[float]],
                   names: list[str]) -> None:
    """The first named figure on the left axis, the others on a twin axis."""
    names = [n for n in names if n in curves]
    for name in names[:1]:
        ax_curves.plot(steps, curves[name][-len(steps):], marker="o", color="k", label=name)
    ax_curves.set_ylabel(names[0] if names else "")
    ax_curves.set_xlabel("epoch")
    ax_curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(names) > 1:
        twin = ax_curves.twinx()
        for name in names[1:]:
            twin.plot(steps, curves[name][-len(steps):], marker=".", label=name)
        twin.legend(loc="upper right", fontsize=8)
    ax_curves.legend(loc="upper left", fontsize=8)
    ax_curves.set_title("quality while training")


def image_report_figure(real, generated, steps: list[int], curves: dict[str, list[float]],
                        final: dict, title: str = ""):
    """End-of-run report for images: real vs generated grids, the quality curves and the class
    histogram (when the evaluation has classes)."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    (ax_real, ax_fake), (ax_curves, ax_last) = axes
    for ax, images, label in ((ax_real, real, "real"), (ax_fake, generated, "generated")):
        ax.imshow(image_grid(images[:64]))
        ax.set_title(label)
        ax.set_axis_off()
    shares = final.get("class_histogram", [])
    if shares:
        ax_last.bar(range(len(shares)), shares)
        ax_last.axhline(1 / len(shares), color="grey", linestyle=":", linewidth=1)
        ax_last.set_xticks(range(len(shares)))
        ax_last.set_xlabel("predicted class")
        ax_last.set_ylabel("share of generated samples")
        ax_last.set_title("class histogram (dotted: uniform)")
    else:
        ax_last.set_axis_off()
    _quality_panel(ax_curves, steps, curves,
                   ["frechet_distance", "precision", "recall", "density", "coverage"])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def vector_report_figure(real, generated, steps: list[int], curves: dict[str, list[float]],
                         final: dict, title: str = ""):
    """End-of-run report for 1-D samples: one histogram panel, the curves, the last figures."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    (ax_real, ax_fake), (ax_curves, ax_last) = axes
    fig.delaxes(ax_fake)
    hist = histogram_figure({"Real": real, "Generated": generated})
    ax_real.imshow(figure_pixels(hist))
    close(hist)
    ax_real.set_axis_off()
    ax_real.set_title("real vs generated (fixed noise)")
    names = [k for k in ("ks", "wasserstein1", "abs_mean_error", "abs_std_error") if k in curves]
    ax_last.set_axis_off()
    ax_last.table(cellText=[[k, f"{final[k]:.4f}"] for k in names],
                  colLabels=["figure", "last value"], loc="center")
    _quality_panel(ax_curves, steps, curves, names)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def figure_pixels(fig) -> np.ndarray:
    """A matplotlib figure as a uint8 RGB array (for ``mlflow.log_image``)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
