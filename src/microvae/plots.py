"""Figures of the pipeline (matplotlib, Agg backend). Each function returns a Figure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def image_grid(rows: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None, title: str | None = None,
               size: float = 1.4, cmap: str | Sequence[str] = "gray_r"):
    """A grid of images in [0, 1]; rows may differ in length. ``cmap`` is one colour map or one
    per row; with ``gray_r`` (the default) phase 1 shows dark."""
    cmaps = [cmap] * len(rows) if isinstance(cmap, str) else list(cmap)
    n_rows = len(rows)
    n_cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols + 0.8, size * n_rows + 0.5),
                             squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                ax.imshow(row[j], cmap=cmaps[i], vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.axis("off")
            if col_labels is not None and i == 0 and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=8)
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def segmentation_examples(grey: np.ndarray, binary: np.ndarray, truth: np.ndarray | None,
                          summary: dict[str, Any], n: int = 6):
    """Grey tiles, their segmentation and (where known) the truth, for ``n`` evenly spaced tiles."""
    picks = np.linspace(0, len(grey) - 1, min(n, len(grey))).astype(int)
    rows = [[grey[i] for i in picks], [binary[i] for i in picks]]
    labels = ["grey (IQ)", "segmented"]
    if truth is not None:
        rows.append([truth[i] for i in picks])
        labels.append("truth")
    title = f"{summary.get('source')}: threshold {summary['threshold']:.3f}, " \
            f"phase fraction {summary['phase_fraction']:.3f}"
    if "mean_iou" in summary:
        title += f" (truth {summary['truth_phase_fraction']:.3f}), mean IoU {summary['mean_iou']:.3f}"
    return image_grid(rows, row_labels=labels, title=title, size=1.6,
                      cmap=["gray"] + ["gray_r"] * (len(rows) - 1))
