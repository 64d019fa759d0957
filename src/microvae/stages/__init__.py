"""The stage layer: one function per pipeline stage, taking its input paths, its output paths
and a typed parameter object, and doing all the file and figure I/O around the science.

* :mod:`.data`: synthesize, ingest, segment, pack
* :mod:`.network`: train, sample
* :mod:`.statistics`: baselines, evaluate, evaluate_large, score, summarize
* :mod:`.export`: phase maps as VTK image data (.vti), PNG, TIFF, NPY
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..segment import SegmentationParameters

# The figures each stage can write, by the name of their option (``--{name}-figure``); for the
# sample stage, with the generation mode each shows (None: the encoded test images).
SAMPLE_FIGURES = {"prior": "prior", "posterior": "posterior", "noise": "noise",
                  "interpolation": "interpolation", "latent_map": None}
EVALUATION_FIGURES = ("verdict", "curves", "distributions")
# The formats of the export stage (the command line lists them without importing the stage).
EXPORT_FORMATS = ("vti", "png", "tif", "npy")
MORPHOLOGY_STEPS = ("opening_radius", "closing_radius", "fill_holes", "min_island")


def segmentation_morphology(dataset: str | os.PathLike) -> SegmentationParameters | None:
    """The morphological clean-up every source of the data set went through (per step the
    mildest over the sources, as recorded by pack); None where there was none. Generated sets
    are finished with it (the sample and baselines stages)."""
    from ..h5io import open_h5, read_json_attr
    from ..segment import SegmentationParameters

    with open_h5(dataset) as h5:
        recorded = read_json_attr(h5, "segmentation", {}) or {}
    if not recorded:
        return None
    steps = {key: min(int(source.get(key) or 0) for source in recorded.values())
             for key in MORPHOLOGY_STEPS}
    return SegmentationParameters(**steps) if any(steps.values()) else None


def describe_morphology(morphology: SegmentationParameters | None) -> str:
    if morphology is None:
        return "none"
    return ", ".join(f"{key} {getattr(morphology, key)}" for key in MORPHOLOGY_STEPS)
