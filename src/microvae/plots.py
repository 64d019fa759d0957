"""Figures of the pipeline (matplotlib, Agg backend). Each function returns a Figure."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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
        canvas = np.ones((ys.max() + size, xs.max() + size, 3))
        for row, y, x in zip(rows, ys, xs):
            colour = np.array(SPLIT_COLOURS.get(split_of_tile[offset + row], (0.6, 0.6, 0.6)))
            tile = source.images[row].astype(float)[..., None]
            canvas[y:y + size, x:x + size] = 0.35 + 0.65 * ((1 - tile) * colour + tile * colour * 0.3)
        ax.imshow(canvas, interpolation="nearest")
        for region in split.regions:
            if region.source != i or region.group != g or region.axis not in plane:
                continue
            extent = canvas.shape[:2]
            if region.axis == plane[0]:
                box = (-0.5, region.start - 0.5, extent[1], region.stop - region.start)
            else:
                box = (region.start - 0.5, -0.5, region.stop - region.start, extent[0])
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


def s2_figure(real, modes: dict[str, Any], pixel_size: float = 0.0, unit: str = "px",
              title: str = ""):
    """S2 of generated sets against the real ones (mean +- 1 std of real images as a band),
    radially and along x and y."""
    scale, xlabel = _length_label(pixel_size, unit)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), sharey=True)
    for ax, direction in zip(axes, ("radial", "x", "y")):
        curves = getattr(real.s2, direction)
        r = real.s2.r * scale
        mean, std = curves.mean(0), curves.std(0)
        ax.fill_between(r, mean - std, mean + std, color="0.8", label="real ±1 std")
        ax.plot(r, mean, color="k", lw=2, label="real")
        for i, (name, stats) in enumerate(modes.items()):
            ax.plot(r, stats.mean_curve(direction), color=f"C{i}", lw=1.2, label=name)
        ax.set_xlabel(xlabel.replace("r (", f"r along {direction} (") if direction != "radial"
                      else xlabel)
        ax.set_title(f"S2, {direction}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("S2(r): probability both points in phase 1")
    axes[0].legend(fontsize=7)
    return _finish(fig, title)


def phase_fraction_figure(real, modes: dict[str, Any], title: str = ""):
    """Histograms of per-image phase fractions, real against each generated set."""
    n = len(modes)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    bins = np.linspace(0, 1, 41)
    for ax, (name, stats) in zip(axes.ravel(), modes.items()):
        ax.hist(real.phi, bins=bins, density=True, color="0.6", label="real")
        ax.hist(stats.phi, bins=bins, density=True, histtype="step", lw=1.5, color="C0",
                label=name)
        ax.set_title(f"{name}: mean {stats.phi.mean():.3f} (real {real.phi.mean():.3f})",
                     fontsize=8)
        ax.set_xlabel("phase fraction per image")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    axes[0, 0].set_ylabel("density")
    return _finish(fig, title)


def chord_island_figure(real, modes: dict[str, Any], pixel_size: float = 0.0, unit: str = "px",
                        title: str = ""):
    """Chord-length distributions of both phases along x and y, and island-size distributions."""
    scale, _ = _length_label(pixel_size, unit)
    length_unit = unit if scale != 1.0 else "px"
    fig, axes = plt.subplots(1, 5, figsize=(20, 3.6))
    keys = [("1x", "phase 1 chords along x"), ("1y", "phase 1 chords along y"),
            ("0x", "phase 0 chords along x"), ("0y", "phase 0 chords along y")]
    for ax, (key, label) in zip(axes, keys):
        top = max([real.chords[key].max(initial=1)] + [s.chords[key].max(initial=1)
                                                       for s in modes.values()])
        bins = np.linspace(0, top * scale, 30)
        ax.hist(real.chords[key] * scale, bins=bins, density=True, color="0.6", label="real")
        for i, (name, stats) in enumerate(modes.items()):
            ax.hist(stats.chords[key] * scale, bins=bins, density=True, histtype="step",
                    color=f"C{i}", label=name)
        ax.set_xlabel(f"chord length ({length_unit})")
        ax.set_title(label, fontsize=9)
    ax = axes[4]
    area_scale = scale**2
    bins = np.logspace(0, np.log10(max(2, real.island_areas.max(initial=2))), 30) * area_scale
    ax.hist(real.island_areas * area_scale, bins=bins, density=True, color="0.6", label="real")
    for i, (name, stats) in enumerate(modes.items()):
        ax.hist(stats.island_areas * area_scale, bins=bins, density=True, histtype="step",
                color=f"C{i}", label=name)
    ax.set_xscale("log")
    ax.set_xlabel(f"island area ({length_unit}²)")
    ax.set_title("phase 1 island sizes", fontsize=9)
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize=7)
    return _finish(fig, title)


def latent_comparison(rows: list[dict[str, Any]]):
    """Across latent sizes: reconstruction IoU and BCE, and the distances of the unseeded
    samples (prior, aggregate, mixture; field for conv models) with the floor as a band."""
    import pandas as pd

    table = pd.DataFrame(rows)
    recon = table[table["mode"] == "reconstruction"].sort_values("latent")
    prior = table[table["mode"] == "prior"].sort_values("latent")
    fitted = table[table["mode"] == "aggregate"].sort_values("latent")
    mixture = table[table["mode"] == "mixture"].sort_values("latent")
    field = table[table["mode"] == "field"].sort_values("latent")
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    axes[0].plot(recon["latent"], recon["recon_iou"], "o-")
    axes[0].set_ylabel("test-set IoU (thresholded at 0.5)")
    axes[0].set_title("reconstruction IoU", fontsize=10)
    axes[1].plot(recon["latent"], recon["recon_bce_per_pixel"], "o-")
    axes[1].set_ylabel("BCE per pixel (nats)")
    axes[1].set_title("reconstruction loss", fontsize=10)
    for ax, key, label in ((axes[2], "s2_nrmse_radial", "S2 NRMSE (radial)"),
                           (axes[3], "phase_fraction_wasserstein", "W1 of phase fraction")):
        for rows, marker, name in ((prior, "o-", "prior"), (fitted, "^-", "aggregate"),
                                   (mixture, "s-", "mixture"), (field, "d-", "field")):
            if len(rows):
                ax.errorbar(rows["latent"], rows[key],
                            yerr=[np.zeros(len(rows)), rows[f"upper_{key}"] - rows[key]],
                            fmt=marker, capsize=3, label=f"{name} vs real (median, upper 95%)")
        ax.fill_between(prior["latent"], 0, prior[f"floor_p95_{key}"], color="0.85",
                        label="real vs real: floor up to its 95th percentile")
        ax.plot(prior["latent"], prior[f"floor_{key}"], "--", color="0.5",
                label="floor median")
        ax.set_title(f"unseeded samples: {label}", fontsize=10)
        ax.legend(fontsize=7)
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
