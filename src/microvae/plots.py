"""Figures of the pipeline (matplotlib, Agg backend). Each function returns a Figure."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .modes import UNSEEDED_MODES, in_mode_order  # noqa: E402


def image_grid(rows: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None, title: str | None = None,
               size: float = 1.4, cmap: str | Sequence[str] = "gray_r"):
    """A grid of images in [0, 1] drawn as one mosaic (fast for many images); rows may differ
    in length. ``cmap`` is one colour map or one per row; with ``gray_r`` (the default) phase 1
    shows dark."""
    cmaps = [cmap] * len(rows) if isinstance(cmap, str) else list(cmap)
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    h, w = np.asarray(rows[0][0]).shape
    gap = max(1, h // 16)
    canvas = np.ones((n_rows * (h + gap) - gap, n_cols * (w + gap) - gap, 4))
    canvas[..., :3] = 0.85  # grey gaps
    for i, row in enumerate(rows):
        colour_map = matplotlib.colormaps[cmaps[i]]
        for j, image in enumerate(row):
            y, x = i * (h + gap), j * (w + gap)
            canvas[y:y + h, x:x + w] = colour_map(np.clip(np.asarray(image, float), 0, 1))
    fig, ax = plt.subplots(figsize=(size * n_cols + 1.2, size * n_rows + 0.6))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([(w + gap) * j + w / 2 for j in range(len(col_labels or []))])
    ax.set_xticklabels(list(col_labels or []), fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks([(h + gap) * i + h / 2 for i in range(len(row_labels or []))])
    ax.set_yticklabels(list(row_labels or []), fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10, pad=18 if col_labels else 6)
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
        title += (f" (truth {summary['truth_phase_fraction']:.3f}), IoU {summary['iou_pooled']:.3f} "
                  f"(pooled), {summary['mean_iou']:.3f} (mean per tile)")
    if "warning" in summary:
        steps = summary["phase_fraction_after"]
        title += ("\nWARNING: morphology changed the phase fraction by "
                  f"{100 * summary['morphology_change']:+.0f}% "
                  + " -> ".join(f"{k} {v:.3f}" for k, v in steps.items()))
    return image_grid(rows, row_labels=labels, title=title, size=1.6,
                      cmap=["gray"] + ["gray_r"] * (len(rows) - 1))


SPLIT_COLOURS = {"train": (0.12, 0.47, 0.71), "val": (1.0, 0.5, 0.05), "test": (0.17, 0.63, 0.17)}


# The longest side (px) of a panel of the split figure.
MAX_PANEL_PX = 800


def split_figure(sources, split, max_panels: int = 12):
    """One section of each group (file, volume) of each source, the segmented tiles pasted at
    their place and tinted by split (grey: in a gap, left out), with the slabs of a split in
    space outlined. ``sources`` are :class:`microvae.dataset.SourceTiles`, ``split`` the
    :class:`microvae.dataset.Split` of their concatenation."""
    from matplotlib.patches import Patch, Rectangle

    split_of_tile = np.full(sum(len(s.images) for s in sources), "", dtype=object)
    for name, rows in split.index.items():
        split_of_tile[rows] = name
    panels, offset = [], 0
    for i, source in enumerate(sources):
        group_of_tile, labels = source.tile_groups()
        for g, label in enumerate(labels):
            rows = np.flatnonzero(group_of_tile == g)
            entry, axis, index = source.origin[rows[0], :3]
            rows = rows[(source.origin[rows, 0] == entry) & (source.origin[rows, 1] == axis)
                        & (source.origin[rows, 2] == index)]
            panels.append((i, g, f"{source.name}: {os.path.basename(label)[:40]}", rows, offset))
        offset += len(source.images)
    shown = panels[:max_panels]
    n_cols = min(4, len(shown))
    n_rows = -(-len(shown) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.4 * n_cols, 3.2 * n_rows + 0.5),
                             squeeze=False)
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    for ax, (i, g, title, rows, offset) in zip(axes.flat, shown):
        source = sources[i]
        size = source.images.shape[-1]
        axis = int(source.origin[rows[0], 1])
        plane = [a for a in range(3) if a != (0 if axis < 0 else axis)]
        if source.corner is not None:
            ys, xs = source.corner[rows, plane[0]], source.corner[rows, plane[1]]
        else:
            ys, xs = source.origin[rows, 3], source.origin[rows, 4]
        # a panel of at most MAX_PANEL_PX on its longer side, whatever the image's size (a
        # full-resolution canvas of a 12 000 px micrograph took 12 GB)
        height, width = int(ys.max()) + size, int(xs.max()) + size
        step = max(1, -(-max(height, width) // MAX_PANEL_PX))
        canvas = np.ones((-(-height // step), -(-width // step), 3), np.float32)
        for row, y, x in zip(rows, ys, xs):
            colour = np.array(SPLIT_COLOURS.get(split_of_tile[offset + row], (0.6, 0.6, 0.6)),
                              np.float32)
            tile = source.images[row, ::step, ::step].astype(np.float32)[..., None]
            y0, x0 = int(y) // step, int(x) // step
            part = canvas[y0:y0 + tile.shape[0], x0:x0 + tile.shape[1]]
            part[...] = (0.35 + 0.65 * ((1 - tile) * colour + tile * colour * 0.3))[
                :part.shape[0], :part.shape[1]]
        ax.imshow(canvas, interpolation="nearest")
        for region in split.regions:
            if region.source != i or region.group != g or region.axis not in plane:
                continue
            extent = canvas.shape[:2]
            start, length = region.start / step, (region.stop - region.start) / step
            if region.axis == plane[0]:
                box = (-0.5, start - 0.5, extent[1], length)
            else:
                box = (start - 0.5, -0.5, length, extent[0])
            ax.add_patch(Rectangle(box[:2], box[2], box[3], fill=False, lw=2,
                                   edgecolor=SPLIT_COLOURS[region.split]))
        mode = split.mode.get(source.name, "groups")
        ax.set_title(f"{title}\n({'slabs' if mode == 'regions' else 'whole group'})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(color=c, label=n) for n, c in SPLIT_COLOURS.items()]
    handles.append(Patch(color=(0.6, 0.6, 0.6), label="gap (left out)"))
    note = f" (first {max_panels} of {len(panels)} groups)" if len(panels) > max_panels else ""
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8)
    _finish(fig, f"train/val/test split: one section per group{note}")
    fig.tight_layout(rect=(0, 0.5 / fig.get_figheight(), 1, 1))
    return fig


def loss_curves(histories: dict[int, list[dict[str, Any]]]):
    """Training and validation loss per epoch (the paper's Figure 6), one colour per latent size,
    with the BCE and KL terms in their own panels."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for i, (latent, rows) in enumerate(sorted(histories.items())):
        colour = f"C{i}"
        epochs = [float(r["epoch"]) for r in rows]
        for ax, key in zip(axes, ("loss", "bce", "kl")):
            ax.plot(epochs, [float(r[f"train_{key}"]) for r in rows], color=colour, ls="-",
                    label=f"latent {latent} train")
            ax.plot(epochs, [float(r[f"val_{key}"]) for r in rows], color=colour, ls="--",
                    label=f"latent {latent} val")
    titles = ("loss = BCE + w KL", "BCE (nats per image)", "KL (nats per image)")
    for ax, title in zip(axes, titles):
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("per image")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def diffusion_loss(history: list[dict[str, Any]], window: int = 50, title: str = ""):
    """The denoiser's training loss (velocity-prediction MSE) per step, with its running mean."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    steps = np.array([h["step"] for h in history], float)
    loss = np.array([h["loss"] for h in history], float)
    ax.plot(steps, loss, color="0.75", lw=0.5, label="per step")
    if len(loss) >= window:
        running = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], running, color="C0", label=f"mean of {window} steps")
    ax.set_xlabel("step")
    ax.set_ylabel("velocity-prediction MSE")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _finish(fig, title)


def _finish(fig, title: str = ""):
    """Title (if any) and tight layout of a multi-panel figure."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _binary(p: np.ndarray) -> np.ndarray:
    return (p > 0.5).astype(np.float32)


def prior_grid(sets: dict[str, np.ndarray], n: int = 8, title: str = ""):
    """Samples of each unseeded mode (name -> probabilities), one below the other: rows
    alternate probability and binarised (at 0.5) views."""
    rows, labels = [], []
    blocks = 3 if len(sets) == 1 else (2 if len(sets) == 2 else 1)
    for name, images in sets.items():
        k = min(n, len(images))
        for i in range(min(blocks, (len(images) + k - 1) // max(k, 1))):
            block = images[i * k:(i + 1) * k]
            rows += [list(block), [_binary(p) for p in block]]
            labels += [f"{name} prob.", f"{name} binary"]
    return image_grid(rows, row_labels=labels, title=title)


def posterior_figure(inputs: np.ndarray, recon: np.ndarray, draws: np.ndarray, n: int = 5,
                     title: str = ""):
    """Figure 8: input | reconstruction (z_mean) | posterior draws (eq. 1), binarised."""
    n = min(n, len(inputs))
    k = draws.shape[1]
    rows = [[inputs[i], _binary(recon[i])] + [_binary(d) for d in draws[i][:6]] for i in range(n)]
    cols = ["input", "recon."] + [f"draw {j + 1}" for j in range(min(k, 6))]
    return image_grid(rows, col_labels=cols, title=title)


def noise_figure(inputs: np.ndarray, noisy: dict[str, np.ndarray], n: int = 5, title: str = ""):
    """Figure 9: input | z_mean + sigma * eps for each sigma (two draws each), binarised."""
    n = min(n, len(inputs))
    rows, cols = [], ["input"]
    for sigma in noisy:
        cols += [f"σ={sigma} #1", f"σ={sigma} #2"]
    for i in range(n):
        row = [inputs[i]]
        for images in noisy.values():
            row += [_binary(images[i, 0]), _binary(images[i, min(1, images.shape[1] - 1)])]
        rows.append(row)
    return image_grid(rows, col_labels=cols, title=title)


def interpolation_figure(first: np.ndarray, second: np.ndarray, midpoint: np.ndarray,
                         path: np.ndarray, n: int = 4, title: str = ""):
    """Figure 10: image 1 | decoded midpoint | image 2, then the decoded path from z1 to z2
    (probability row and binarised row)."""
    n = min(n, len(first))
    rows, labels = [], []
    for i in range(n):
        rows.append([first[i], _binary(midpoint[i]), second[i]])
        labels.append(f"pair {i + 1}")
        rows.append(list(path[i]))
        labels.append("path (prob.)")
        rows.append([_binary(p) for p in path[i]])
        labels.append("path (binary)")
    return image_grid(rows, row_labels=labels, title=title + "\npair: image 1 | midpoint | image 2")


def latent_map(z_mean: np.ndarray, phase_fraction: np.ndarray, manifold: np.ndarray | None = None,
               extent: float = 3.0, title: str = ""):
    """Figure 7: test-set z_mean in 2-D (directly for latent size 2, else the first two principal
    components), coloured by phase fraction; with the decoded manifold grid for latent size 2."""
    n_panels = 2 if manifold is not None else 1
    fig, axes = plt.subplots(1, n_panels, figsize=(5.2 * n_panels, 4.6), squeeze=False)
    ax = axes[0, 0]
    if z_mean.shape[1] == 2:
        coords, xlabel, ylabel, note = z_mean, "z1", "z2", ""
    else:
        centred = z_mean - z_mean.mean(0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        coords = centred @ vt[:2].T
        explained = (s**2 / max(float((s**2).sum()), 1e-12))[:2]
        xlabel, ylabel = f"PC1 ({explained[0]:.0%})", f"PC2 ({explained[1]:.0%})"
        note = f", PCA: {explained.sum():.0%} of the variance explained"
    points = ax.scatter(coords[:, 0], coords[:, 1], c=phase_fraction, s=6, cmap="viridis")
    fig.colorbar(points, ax=ax, label="phase fraction")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"test set z_mean{note}", fontsize=9)
    if manifold is not None:
        g = manifold.shape[0]
        h, w = manifold.shape[2:]
        canvas = manifold.transpose(0, 2, 1, 3).reshape(g * h, g * w)
        axes[0, 1].imshow(canvas, cmap="gray_r", vmin=0, vmax=1,
                          extent=(-extent, extent, -extent, extent))
        axes[0, 1].set_xlabel("z1")
        axes[0, 1].set_ylabel("z2")
        axes[0, 1].set_title("decoded manifold (probabilities)", fontsize=9)
    return _finish(fig, title)


def _length_label(pixel_size: float, unit: str) -> tuple[float, str]:
    """Scale factor and axis label of lengths: physical units where the pixel size is known."""
    if pixel_size and pixel_size > 0:
        return pixel_size, f"r ({unit}; 1 px = {pixel_size:g} {unit})"
    return 1.0, "r (px)"


ROLE_STYLES = {"real": dict(color="k", lw=2.2), "ceiling": dict(color="0.45", lw=1.6, ls="--"),
               "baseline": dict(lw=1.3, ls=":")}


def _style(name: str, role: str, index: int) -> dict[str, Any]:
    style = dict(ROLE_STYLES.get("real" if name == "real" else role, dict(lw=1.3)))
    style.setdefault("color", f"C{index}")
    return style


def verdict_figure(metrics: dict[str, Any], title: str = ""):
    """The judge's table: for each set (rows) and descriptor (columns) the median distance as a
    multiple of the floor's 95th percentile, green within the floor, red outside, grey where
    calibrated (set by the finishing, not judged)."""
    names = sorted(metrics["sets"], key=lambda n: ({"ceiling": 0, "baseline": 1}.get(
        metrics["sets"][n]["role"], 2), n))
    keys = list(metrics["descriptors"])
    fig, ax = plt.subplots(figsize=(1.05 * len(keys) + 3.6, 0.42 * len(names) + 1.6))
    colours = np.ones((len(names), len(keys), 3))
    for i, name in enumerate(names):
        values = metrics["sets"][name]
        for j, key in enumerate(keys):
            multiple = values["floor_multiple"][key]
            if key not in values["judged"]:
                colours[i, j] = (0.88, 0.88, 0.88)
                text = "cal." if key in values["calibrated"] else "n/a"
            else:
                colours[i, j] = (0.72, 0.9, 0.72) if values["within_floor"][key] \
                    else (0.96, 0.66, 0.62)
                text = f"{multiple:.2g}" if np.isfinite(multiple) else "-"
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
    ax.imshow(colours, aspect="auto")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([k.replace("_", " ") for k in keys], rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([f"{n} ({metrics['sets'][n]['n_within']}/{metrics['sets'][n]['n_judged']})"
                        for n in names], fontsize=8)
    ax.set_title((title + "\n" if title else "") + "median distance / floor p95 (green: within "
                 "the floor by exceedance; grey: calibrated)", fontsize=9)
    fig.tight_layout()
    return fig


def curves_figure(curves: dict[str, dict[str, np.ndarray]], roles: dict[str, str],
                  pixel_size: float = 0.0, unit: str = "px", title: str = ""):
    """The correlation functions of every set against the real reference: the scaled
    autocovariance, S2, the lineal path and the connectedness C2 / S2 (x and y averaged)."""
    scale, xlabel = _length_label(pixel_size, unit)
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    panels = (("s2", "scaled autocovariance (S2 - phi^2) / (phi - phi^2)"),
              ("s2_raw", "S2(r), radial"), ("lineal_path", "lineal path L(r) / L(0)"),
              ("cluster", "connectedness C2(r) / S2(r)"))
    for ax, (key, label) in zip(axes, panels):
        for i, (name, values) in enumerate(curves.items()):
            y = values[key] if key in values else 0.5 * (values[f"{key}_x"] + values[f"{key}_y"])
            ax.plot(values["r"] * scale, y, label=name, **_style(name, roles.get(name, ""), i))
        ax.set_title(label, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    return _finish(fig, title)


def distributions_figure(curves: dict[str, dict[str, np.ndarray]], roles: dict[str, str],
                         title: str = ""):
    """Cumulative distributions of every set against the real reference: chord lengths of
    phase 1 (x, y) and phase 0, island areas (octaves) and per-image phase fractions."""
    fig, axes = plt.subplots(1, 5, figsize=(20, 3.6))
    panels = (("chord_1x_cdf", "chord length of phase 1 along x (px)", None),
              ("chord_1y_cdf", "chord length of phase 1 along y (px)", None),
              ("chord_0_cdf", "chord length of phase 0 (px)", None),
              ("island_cdf", "log2 island area (px^2)", 8),
              ("phi_cdf", "phase fraction per image", "phi"))
    for ax, (key, label, kind) in zip(axes, panels):
        for i, (name, values) in enumerate(curves.items()):
            cdf = values[key]
            if kind == "phi":
                x = (np.arange(len(cdf)) + 1) / len(cdf)
            elif kind:
                x = (np.arange(len(cdf)) + 1) / kind
            else:
                x = np.arange(len(cdf))
            ax.step(x, cdf, where="post", label=name, **_style(name, roles.get(name, ""), i))
        ax.set_xlabel(label, fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cumulative fraction")
    axes[0].legend(fontsize=6)
    return _finish(fig, title)


def latent_comparison(rows: list[dict[str, Any]]):
    """Across latent sizes: reconstruction IoU, and for each unseeded set the number of
    descriptors within the floor and the median multiple of the floor's 95th percentile,
    beside the baselines and the real held-out set (constant over latent sizes)."""
    import pandas as pd

    table = pd.DataFrame(rows)
    table = table[table["size"] == table["size"].min()] if "size" in table else table
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    recon = table[table["set"] == "reconstruction"].sort_values("latent")
    axes[0].plot(recon["latent"], recon["recon_iou"], "o-")
    axes[0].set_ylabel("test-set IoU (thresholded at 0.5)")
    axes[0].set_title("reconstruction IoU", fontsize=10)
    multiple_columns = [c for c in table.columns if c.endswith("_floor_multiple")]
    table = table.assign(median_multiple=table[multiple_columns].median(axis=1),
                         share_within=table["n_within_floor"] / table["n_judged"])
    unseeded = in_mode_order(UNSEEDED_MODES)
    markers = dict(zip(unseeded, "o^vsd", strict=True))
    for name in unseeded:
        part = table[table["set"] == name].sort_values("latent")
        if len(part):
            axes[1].plot(part["latent"], part["share_within"], markers[name] + "-", label=name)
            axes[2].plot(part["latent"], part["median_multiple"], markers[name] + "-",
                         label=name)
    latents = sorted(table["latent"].unique())
    for name, style in (("real_heldout", dict(color="0.4", ls="--")),
                        ("baseline_grf", dict(color="C3", ls=":")),
                        ("baseline_copy", dict(color="C4", ls=":"))):
        part = table[table["set"] == name]
        if len(part):
            axes[1].plot(latents, [part["share_within"].median()] * len(latents), label=name,
                         **style)
            axes[2].plot(latents, [part["median_multiple"].median()] * len(latents), label=name,
                         **style)
    axes[1].set_title("share of descriptors within the floor", fontsize=10)
    axes[1].set_ylim(-0.03, 1.03)
    axes[2].set_title("median distance / floor p95 (over descriptors)", fontsize=10)
    axes[2].axhline(1.0, color="0.7", lw=0.8)
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("latent size")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def large_figure(real: dict[int, np.ndarray], generated: dict[str, np.ndarray], n: int = 3,
                 title: str = ""):
    """Generated microstructures of each size (binarised at 0.5) beside real windows: one row
    per set, real windows first (``real``: window size -> binary windows)."""
    rows = [(f"real test windows, {size} px", list(images[:n]))
            for size, images in sorted(real.items())]
    rows += [(f"{name}", [_binary(p) for p in images[:n]]) for name, images in generated.items()]
    width = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), width, figsize=(3.0 * width, 3.1 * len(rows)),
                             squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(width):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                ax.imshow(images[c], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
                ax.set_title(label if c == 0 else "", fontsize=8)
            else:
                ax.axis("off")
    return _finish(fig, title)


def conditioning_figure(examples: dict[str, np.ndarray], metrics: dict[str, dict[str, Any]],
                        title: str = ""):
    """Phase maps generated at target phase fractions (one column each: ``examples`` name ->
    one map, titled with target and achieved fraction from ``metrics``), and for each graded
    set its profile: target and achieved phase fraction per vertical band."""
    graded = [name for name in examples if "target_bands" in metrics.get(name, {})]
    columns = len(examples) + len(graded)
    fig, axes = plt.subplots(1, columns, figsize=(3.2 * columns, 3.5), squeeze=False)
    for ax, (name, image) in zip(axes[0], examples.items()):
        values = metrics.get(name, {})
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        label = "graded" if name in graded else f"target {values.get('target', float('nan')):.2f}"
        ax.set_title(f"{label}\nachieved {values.get('phase_fraction_mean', float('nan')):.3f}",
                     fontsize=8)
    for ax, name in zip(axes[0][len(examples):], graded):
        values = metrics[name]
        centres = (np.arange(len(values["target_bands"])) + 0.5) / len(values["target_bands"])
        ax.plot(centres, values["target_bands"], "k--", label="target")
        ax.plot(centres, values["achieved_bands"], "o-", color="C0", label="achieved (mean)")
        ax.set_xlabel("position across the image (left to right)")
        ax.set_ylabel("phase fraction per band")
        ax.set_title(f"graded profile, worst band off by {values['max_band_error']:.3f}",
                     fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _finish(fig, title)


def scorecard_html(metrics: dict[str, Any], figures: dict[str, str | os.PathLike]) -> str:
    """A self-contained HTML page of a scorecard: the verdict of every set, the multiples of the
    floor per descriptor, the novelty, and the figures (embedded)."""
    import base64
    import html

    keys = list(metrics["descriptors"])
    head = "".join(f"<th title='{html.escape(metrics['descriptors'][k][1])}'>"
                   f"{html.escape(k.replace('_', ' '))}</th>" for k in keys)
    rows = []
    order = sorted(metrics["sets"], key=lambda n: ({"generator": 0, "ceiling": 1}.get(
        metrics["sets"][n]["role"], 2), n))
    for name in order:
        values = metrics["sets"][name]
        cells = []
        for key in keys:
            multiple = values["floor_multiple"][key]
            if key not in values["judged"]:
                cells.append("<td class='cal'>cal.</td>" if key in values["calibrated"]
                             else "<td class='cal'>n/a</td>")
                continue
            kind = "in" if values["within_floor"][key] else "out"
            cells.append(f"<td class='{kind}' title='exceedance {values['exceedance'][key]:.3f}'>"
                         f"{multiple:.2f}</td>")
        novelty = values.get("novelty", {}).get("fraction_closer")
        rows.append(f"<tr><th>{html.escape(name)}</th><td>{values['role']}</td>"
                    f"<td>{values['n_images']}</td><td>{values['n_within']} / "
                    f"{values['n_judged']}</td>{''.join(cells)}<td>"
                    f"{'' if novelty is None else f'{novelty:.2f}'}</td></tr>")
    images = []
    for name, path in figures.items():
        with open(path, "rb") as handle:
            data = base64.b64encode(handle.read()).decode()
        images.append(f"<h2>{html.escape(name)}</h2><img alt='{name}' "
                      f"src='data:image/png;base64,{data}' style='max-width:100%'>")
    reference = metrics["reference"]
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>microvae scorecard</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 7px}}
td.in{{background:#b8e6b8}}td.out{{background:#f5a89e}}td.cal{{background:#e0e0e0;color:#555}}
</style></head><body>
<h1>microvae scorecard</h1>
<p>Generated: {html.escape(', '.join(metrics['generated']))}<br>
Real reference: the test split of {html.escape(metrics['dataset'])}
({reference['n_in_blocks']} images of {metrics['image_size']} px in {reference['n_blocks']}
independent blocks, separated by {reference['gap_px']} px).</p>
<p>Each cell: the median distance to the real reference as a multiple of the floor's 95th
percentile (the floor: the distance between two independent halves of the real images, over
{metrics['n_draws']} draws). Green: within the floor (the set lies farther than the real
complement in at most 1 - {metrics['alpha']} / D of the draws); red: outside; grey: calibrated
or not measurable. Novelty: the share of images closer to a training window than 95% of real
test images are (a copier scores about 1, real data about 0.05).</p>
<table><tr><th>set</th><th>role</th><th>images</th><th>within</th>{head}<th>novelty</th></tr>
{''.join(rows)}</table>
{''.join(images)}
</body></html>
"""
