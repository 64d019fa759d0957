"""The stage layer: one function per pipeline stage, taking its input paths, its output paths
and a typed parameter object, and doing all the file and figure I/O around the science.

One word per stage group, the same in the rule files (``workflow/rules/{group}.smk``), the
stage modules and the command line's headings:

* :mod:`.data`: synthesize, ingest, segment, pack
* :mod:`.train`: train, train_prior
* :mod:`.sample`: sample
* :mod:`.evaluate`: baselines, evaluate, evaluate_large, score, summarize
* :mod:`.export`: phase maps as VTK image data (.vti), PNG, TIFF, NPY

Stage functions are named by what they do to what (``train_model``, ``sample_model``,
``evaluate_samples``, ``ingest_files``), never as the science module they call.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from ..segment import SegmentationParameters

# The figures each stage can write, by the name of their option (``--{name}-figure``); the
# sample stage's come with the modes' registry.
EVALUATION_FIGURES = ("verdict", "curves", "distributions")
# The formats of the export stage (the command line lists them without importing the stage).
EXPORT_FORMATS = ("vti", "png", "tif", "npy")
MORPHOLOGY_STEPS = ("opening_radius", "closing_radius", "fill_holes", "min_island")
# The priors of a Table 1 model (aggregate, mixture, diffusion) are fitted to the codes of at
# most this many evenly spaced training images.
MAX_FIT_IMAGES = 5000


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


def phase_maps(array: np.ndarray, label: str, phase: str = "auto",
               threshold: float | None = None) -> np.ndarray:
    """A file's array as phase maps {0, 1}: two distinct values are a phase map (the higher is
    phase 1, or the lower with ``phase`` dark); more values need a ``threshold`` (on the values
    scaled to [0, 1] as the ingest stage scales them)."""
    import numpy as np

    from ..errors import MicrovaeError

    values = np.unique(array)
    if len(values) == 1:
        binary = np.zeros(array.shape, np.uint8) if phase == "dark" else \
            np.full(array.shape, int(values[0] > 0), np.uint8)
    elif len(values) == 2:
        binary = (array == values[1]).astype(np.uint8)
    elif threshold is None:
        raise MicrovaeError(f"{label}: {len(values)} distinct values, not a phase map of two; "
                            "give --threshold (on values scaled to [0, 1]) to cut it")
    else:
        from ..ingest import scale_to_unit

        binary = (scale_to_unit(array) > threshold).astype(np.uint8)
    return 1 - binary if phase == "dark" else binary


def read_volumes(paths: list[str], key: str, phase: str = "auto",
                 threshold: float | None = None) -> list[np.ndarray]:
    """The binary phase volumes (uint8, z y x) of files (TIFF stacks, NPY, VTI, HDF5 datasets;
    each 3-D array a volume); a 2-D image is refused by name."""
    import numpy as np

    from ..errors import MicrovaeError
    from ..ingest import expand_paths, read_entries

    volumes = []
    for path in expand_paths(paths, key):
        for entry in read_entries(path):
            array = np.asarray(entry.array)
            if array.ndim != 3:
                raise MicrovaeError(f"{entry.label}: a {array.ndim}-D image, not a volume; "
                                    f"{key} takes volumes (microvae volume --images takes 2-D "
                                    "micrographs)")
            volumes.append(phase_maps(array, entry.label, phase, threshold))
    return volumes


def dataset_volumes(dataset_path: str | os.PathLike, split: str, min_depth: int = 8
                    ) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """The volumes of one split of a packed data set: its tiles put back in place and the
    sections of each file stacked along the axis they were cut across (runs of at least
    ``min_depth`` consecutive sections). Returns ``(volumes, masks, sections left out)``."""
    from ..dataset import stacked_volumes, training_regions
    from ..errors import MicrovaeError
    from ..h5io import load_placement, load_split

    tiles = load_split(dataset_path, split)
    origin = load_placement(dataset_path, split)["origin"]
    if origin is None:
        raise MicrovaeError(f"{dataset_path}: its {split} tiles carry no origin (packed by an "
                            "older version): re-run pack")
    canvases, mask, sections = training_regions(tiles, origin)
    runs = stacked_volumes(canvases, mask, sections, min_depth)
    left_out = len(canvases) - sum(len(volume) for volume, _, _ in runs)
    if not runs:
        raise MicrovaeError(f"{dataset_path}: the {split} split holds no volume (no run of "
                            f"{min_depth} consecutive sections of one file): its sources are "
                            "2-D images")
    return [v for v, _, _ in runs], [m for _, m, _ in runs], left_out


# The real windows that generated images larger than the tiles are compared with (the
# evaluation of large images and the export of real windows beside generated ones).
# The real windows a size is compared with must number at least this many (two halves of 4).
MIN_REAL_WINDOWS = 8


def real_test_windows(dataset_path: str | os.PathLike, size: int, split: str = "test"
                      ) -> tuple[int, np.ndarray, dict[str, np.ndarray]]:
    """The real windows of a split for generated images of ``size`` px: its tiles put back in
    place, cut into non-overlapping windows of ``size``, or of the largest size (halving) of
    which at least :data:`MIN_REAL_WINDOWS` fit. Returns ``(window size, windows, placement)``
    (origin, corner and group of each window, as :func:`microvae.h5io.load_placement`)."""
    from ..crops import tiled_windows  # PyTorch: not at import (the command line starts fast)
    from ..dataset import training_regions
    from ..errors import MicrovaeError
    from ..h5io import load_placement, load_split

    tiles = load_split(dataset_path, split)
    placement = load_placement(dataset_path, split)
    origin = placement["origin"]
    if origin is None:
        raise MicrovaeError(f"{dataset_path}: its {split} tiles carry no origin (packed by an "
                            "older version): re-run pack")
    canvases, mask, sections = training_regions(tiles, origin)
    window = size
    while window >= tiles.shape[1]:
        windows, owner, corners = tiled_windows(canvases, mask, window, with_corners=True)
        if len(windows) >= MIN_REAL_WINDOWS:
            return window, windows, window_placement(sections, owner, corners, origin,
                                                     placement)
        if window % 16:
            break
        window //= 2
    raise MicrovaeError(f"{dataset_path}: the {split} region holds fewer than "
                        f"{MIN_REAL_WINDOWS} real windows of {size} px or of any size down to "
                        f"the tile size {tiles.shape[1]} px: nothing to compare {size} px images "
                        "with")


def window_placement(sections: np.ndarray, owner: np.ndarray, corners: np.ndarray,
                     tile_origin: np.ndarray, placement: dict[str, np.ndarray | None]
                     ) -> dict[str, np.ndarray | None]:
    """Origin, corner and group of windows cut from the canvases of ``sections``."""
    import numpy as np

    from ..ingest import section_corner

    section = sections[owner]  # (N, 4): source, file, axis, slice
    origin = np.concatenate([section, corners], 1)
    group = None
    if placement["group"] is not None:
        lookup = {tuple(o[:2]): g for o, g in zip(tile_origin.tolist(), placement["group"])}
        group = np.array([lookup[tuple(s[:2])] for s in section.tolist()], np.int64)
    corner = None
    if placement["corner"] is not None:
        volume = {tuple(o[:2]): o[2] >= 0 for o in tile_origin.tolist()}
        corner = np.array([section_corner(3 if volume[(s[0], s[1])] else 2, s[2], s[3], y, x)
                           for s, (y, x) in zip(section.tolist(), corners.tolist())], np.int64)
    return {"origin": origin, "corner": corner, "group": group}
