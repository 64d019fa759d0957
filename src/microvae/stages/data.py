"""Stages of the data half: synthesize, ingest, segment, pack.

Each function reads its inputs, calls the science (:mod:`microvae.synthetic`,
:mod:`microvae.ingest`, :mod:`microvae.segment`, :mod:`microvae.dataset`) and writes every
output it is given, atomically; the command line (``microvae.cli``) calls these.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path, save_figure, write_json
from ..dataset import SourceTiles, check_room_for_splits, pack
from ..descriptors import iou, phase_fraction, pooled_iou
from ..errors import MicrovaeError
from ..h5io import open_h5, read_json_attr, write_arrays
from ..ingest import CORNER_COLUMNS, ORIGIN_COLUMNS, SourceOptions, tile_source
from ..plots import segmentation_examples, split_figure
from ..segment import MORPHOLOGY_WARNING, SegmentationParameters, morphology_change, segment
from ..synthetic import SteelParameters, synthesize_volume

log = logging.getLogger(__name__)
# Share of one-phase tiles of a grey source above which the segmentation is warned about.
CONSTANT_TILES_WARNING = 0.5


def synthesize(params: SteelParameters, seed: int, iq_path: str | os.PathLike,
               phase_path: str | os.PathLike) -> None:
    """Write one synthetic volume: 8-bit IQ map and true phase map, as multi-page TIFFs."""
    import tifffile

    iq, phase = synthesize_volume(params, seed)
    for path, volume in ((iq_path, iq), (phase_path, phase)):
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, volume, compression="zlib", photometric="minisblack",
                             metadata={"axes": "ZYX"})


def ingest_files(files: Sequence[str], out: str | os.PathLike, source: SourceOptions,
                 image_size: int, truth: Sequence[str] | None = None) -> int:
    """Tile the files of one source into ``out``; return the tile count."""
    if not files:
        raise MicrovaeError(f"sources[{source.name}]: no input files")
    if image_size % 8:
        raise MicrovaeError(f"image_size: must be a multiple of 8, got {image_size}")
    tiles = tile_source(
        [Path(f) for f in files], image_size, stride=source.stride or image_size,
        axes=source.axes, slice_step=source.slice_step, crop=source.crop, fmt=source.format,
        dataset=source.dataset, rgb=source.rgb,
        truth_files=[Path(t) for t in truth] if truth else None,
        binary=source.binary, group=source.group, scale=source.scale)
    check_room_for_splits(SourceTiles(source.name, tiles.images, tiles.origin, tiles.corner,
                                      tiles.groups))
    arrays = {"images": tiles.images, "origin": tiles.origin, "corner": tiles.corner}
    if tiles.truth is not None:
        arrays["truth"] = tiles.truth
    if tiles.binary:
        log.info("%s: phase maps (two values per image): kept exactly, the higher value is "
                 "phase 1 unless segmentation.phase says 'dark'", source.name)
    write_arrays(out, arrays, attrs={
        "source": source.name, "files": tiles.files, "groups": tiles.groups,
        "shapes": tiles.shapes, "image_size": image_size, "origin_columns": list(ORIGIN_COLUMNS),
        "corner_columns": list(CORNER_COLUMNS), "binary": tiles.binary,
        "pixel_size": source.pixel_size or 0.0, "pixel_unit": source.pixel_unit,
        "options": asdict(source),
    })
    return len(tiles.images)


def segment_file(ingested: str | os.PathLike, out: str | os.PathLike,
                 qa_json: str | os.PathLike, params: SegmentationParameters,
                 figure: str | os.PathLike | None = None) -> dict[str, Any]:
    """Segment the tiles of an ingested source; per-tile QA in ``out``, a summary in ``qa_json``.

    The summary records the phase fraction after thresholding and after each morphological
    step; a change of more than :data:`MORPHOLOGY_WARNING` (relative) is warned about.
    """
    with open_h5(ingested, required=("images", "origin")) as h5:
        images = h5["images"][()]
        origin = h5["origin"][()]
        corner = h5["corner"][()] if "corner" in h5 else None
        truth = h5["truth"][()] if "truth" in h5 else None
        attrs = {k: read_json_attr(h5, k) for k in h5.attrs}
    binary_input = bool(attrs.get("binary", False))
    seg = params.resolved(binary_input)
    binary, threshold, steps = segment(images, seg, binary_input=binary_input,
                                       source=str(ingested))
    fractions = phase_fraction(binary)
    grey = {"min": float(images.min()), "max": float(images.max()),
            "p01": float(np.percentile(images, 1)), "p99": float(np.percentile(images, 99))}
    if not 0.0 < float(fractions.mean()) < 1.0:
        what = "phase 1" if fractions.mean() >= 1.0 else "phase 0"
        raise MicrovaeError(
            f"{attrs.get('source')}: the segmentation made every pixel {what} (threshold "
            f"{threshold:.4g} on grey values from {grey['min']:.4g} to {grey['max']:.4g}, as "
            f"scaled to [0, 1]): nothing to learn. A fixed threshold must lie inside that range "
            "(12-bit data in a 16-bit file spans only 0 to 0.0625 of it: give the source "
            "scale: [0, 4095]); or use 'otsu'")
    constant = float(np.mean((fractions == 0) | (fractions == 1)))
    arrays = {"images": binary, "origin": origin, "qa/phase_fraction": fractions}
    if corner is not None:
        arrays["corner"] = corner
    resolved = {k: getattr(seg, k) for k in SegmentationParameters.__dataclass_fields__}
    change = morphology_change(steps)
    summary: dict[str, Any] = {
        "source": attrs.get("source"), "n_tiles": int(len(binary)), "threshold": threshold,
        "phase": seg.phase, "phase_fraction": float(fractions.mean()),
        "binary_input": binary_input, "parameters": resolved,
        "phase_fraction_after": dict(steps), "morphology_change": change,
        "grey_range": grey, "share_of_tiles_of_one_phase": constant,
    }
    if constant > CONSTANT_TILES_WARNING and not binary_input:
        log.warning("%s: %.0f%% of the tiles are of one phase after segmentation (threshold "
                    "%.4g, grey values %.4g to %.4g): check the threshold and the examples "
                    "figure", attrs.get("source"), 100 * constant, threshold, grey["min"],
                    grey["max"])
    if abs(change) > MORPHOLOGY_WARNING:
        summary["warning"] = (
            f"the morphological steps changed the phase fraction by {100 * change:+.0f}% "
            f"({steps[0][1]:.4f} after thresholding -> {steps[-1][1]:.4f}); check the examples "
            "figure and lower opening_radius, closing_radius, fill_holes or min_island")
        log.warning("%s: %s", attrs.get("source"), summary["warning"])
    if truth is not None:
        scores = iou(binary, truth)
        arrays["qa/iou"] = scores
        arrays["qa/truth_phase_fraction"] = phase_fraction(truth)
        pooled = pooled_iou(binary, truth)
        pooled_matrix = pooled_iou(1 - binary, 1 - truth)
        summary.update(mean_iou=float(scores.mean()), min_iou=float(scores.min()),
                       iou_pooled=pooled, iou_class_mean=0.5 * (pooled + pooled_matrix),
                       truth_phase_fraction=float(truth.mean()),
                       phase_fraction_error=float(fractions.mean() - truth.mean()))
    write_arrays(out, arrays, attrs={**attrs, "segmentation": resolved, "threshold": threshold})
    write_json(qa_json, summary)
    if figure is not None:
        save_figure(segmentation_examples(images, binary, truth, summary), figure)
    return summary


def pack_files(segmented: Sequence[str], out: str | os.PathLike, fractions: dict[str, float],
               seed: int, figure: str | os.PathLike | None = None) -> dict[str, int]:
    """Pack the segmented sources into the train/val/test data set; ``figure`` shows which
    part of each group (file, volume) went to which split."""
    sources, segmentation, pixel = [], {}, {}
    for path in segmented:
        with open_h5(path, required=("images", "origin")) as h5:
            name = read_json_attr(h5, "source", Path(path).stem)
            sources.append(SourceTiles(name, h5["images"][()], h5["origin"][()],
                                       h5["corner"][()] if "corner" in h5 else None,
                                       read_json_attr(h5, "groups", None)))
            segmentation[name] = read_json_attr(h5, "segmentation", {})
            pixel[name] = {"pixel_size": float(read_json_attr(h5, "pixel_size", 0.0) or 0.0),
                           "pixel_unit": read_json_attr(h5, "pixel_unit", "px"),
                           "files": read_json_attr(h5, "files", [])}
    if not sources:
        raise MicrovaeError("pack: no segmented sources given")
    sizes = {p["pixel_size"] for p in pixel.values()}
    arrays, attrs, split = pack(sources, fractions, seed)
    write_arrays(out, arrays, attrs={
        "segmentation": segmentation, "provenance": pixel,
        "pixel_size": sizes.pop() if len(sizes) == 1 else 0.0,
        "pixel_unit": next(iter(pixel.values()))["pixel_unit"], **attrs,
    })
    if figure is not None:
        save_figure(split_figure(sources, split), figure)
    return {s: int(len(split.index[s])) for s in split.index}
