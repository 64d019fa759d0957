"""Segmentation of grey tiles into binary phase maps.

Phase indicator: 1 = the phase of interest (martensite: the dark phase of an EBSD
image-quality map by default), 0 = matrix. All functions work on stacks (N, H, W) and treat
each image separately (4-connectivity within an image, nothing across images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .config import check_options
from .errors import MicrovaeError

_CROSS = ndimage.generate_binary_structure(2, 1)


def _per_image(structure2d: np.ndarray) -> np.ndarray:
    """A 3-D structuring element that acts within each image of a stack only."""
    structure = np.zeros((3,) + structure2d.shape, dtype=bool)
    structure[1] = structure2d
    return structure


def disk(radius: int) -> np.ndarray:
    """Boolean disk of the given radius (px): the structuring element of erosion-dilation."""
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (yy**2 + xx**2) <= radius**2 + 0.5


def otsu_threshold(images: np.ndarray, source: str = "images") -> float:
    """Otsu's threshold over all pixels of a stack (one threshold per source)."""
    from skimage.filters import threshold_otsu

    lo, hi = float(images.min()), float(images.max())
    if hi - lo < 1e-6:
        raise MicrovaeError(f"{source}: every pixel has the value {lo:.4g}; Otsu's threshold "
                            "is undefined for a constant image (set segmentation.threshold "
                            "to a number, or check the input)")
    # A 1-in-4 subsample gives the same histogram to well within one grey level.
    values = images[:, ::2, ::2] if images.size > 4_000_000 else images
    return float(threshold_otsu(values, nbins=256))


def binarize(images: np.ndarray, threshold: float, phase: str) -> np.ndarray:
    """Indicator of the phase of interest: ``dark`` (below threshold) or ``bright`` (above)."""
    if phase == "dark":
        return (images < threshold).astype(np.uint8)
    if phase == "bright":
        return (images > threshold).astype(np.uint8)
    raise MicrovaeError(f"segmentation.phase: must be 'dark' or 'bright', got {phase!r}")


def erode_dilate(binary: np.ndarray, opening_radius: int, closing_radius: int) -> np.ndarray:
    """Opening (erosion then dilation) removes specks and thin lines below the radius;
    closing (dilation then erosion) bridges gaps. Radii in pixels, 0 skips the step."""
    out = binary.astype(bool)
    # Edge padding keeps phase at the tile border from being eroded away as if it ended there.
    for radius, operation in ((opening_radius, ndimage.binary_opening),
                              (closing_radius, ndimage.binary_closing)):
        if radius > 0:
            padded = np.pad(out, ((0, 0),) + ((radius, radius),) * 2, mode="edge")
            padded = operation(padded, structure=_per_image(disk(radius)))
            out = padded[:, radius:-radius, radius:-radius]
    return out.astype(np.uint8)


def remove_small(binary: np.ndarray, max_area: int, value: int) -> np.ndarray:
    """Flip connected regions of ``value`` smaller than ``max_area`` px that do not touch the
    image border (a region cut by the border may be part of a larger one).

    ``value=1`` removes small islands of the phase; ``value=0`` fills small holes in it.
    """
    if max_area <= 0:
        return binary
    target = binary == value
    labels, n = ndimage.label(target, structure=_per_image(_CROSS))
    if n == 0:
        return binary
    areas = np.bincount(labels.ravel())
    border = np.zeros(n + 1, dtype=bool)
    for edge in (labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]):
        border[np.unique(edge)] = True
    small = (areas < max_area) & ~border
    small[0] = False
    out = binary.copy()
    out[small[labels]] = 1 - value
    return out


# Morphology of grey images by default; phase maps that are already binary are kept as they are
# unless the user asks for a step.
MORPHOLOGY_DEFAULTS = {"grey": {"opening_radius": 1, "closing_radius": 1, "fill_holes": 10,
                                "min_island": 10},
                       "binary": {"opening_radius": 0, "closing_radius": 0, "fill_holes": 0,
                                  "min_island": 0}}
# Relative change of the phase fraction by the morphological steps above which a warning is given.
MORPHOLOGY_WARNING = 0.10


@dataclass(frozen=True)
class SegmentationParameters:
    """Parameters of :func:`segment` (areas in px, radii in px). ``None`` = the default for the
    kind of input (:data:`MORPHOLOGY_DEFAULTS`; ``phase``: dark for grey, bright for binary)."""

    threshold: str | float = "otsu"
    phase: str | None = None
    fill_holes: int | None = None
    min_island: int | None = None
    opening_radius: int | None = None
    closing_radius: int | None = None

    @classmethod
    def from_options(cls, options: dict, key: str = "segmentation") -> SegmentationParameters:
        """From the ``segmentation`` options of a source (checked against the schema)."""
        options = check_options(options, "segmentation", key)
        values = {k: (None if v == "auto" and k == "phase" else v) for k, v in options.items()}
        return cls(**values)

    def resolved(self, binary_input: bool) -> SegmentationParameters:
        """The parameters with every ``None`` replaced by the default for the input kind."""
        defaults = MORPHOLOGY_DEFAULTS["binary" if binary_input else "grey"]
        values = {k: (defaults[k] if getattr(self, k) is None else int(getattr(self, k)))
                  for k in defaults}
        phase = self.phase or ("bright" if binary_input else "dark")
        return SegmentationParameters(threshold=self.threshold, phase=phase, **values)


def segment(images: np.ndarray, params: SegmentationParameters, binary_input: bool = False,
            source: str = "images") -> tuple[np.ndarray, float, list[tuple[str, float]]]:
    """Binary phase maps of a stack of grey tiles in [0, 1].

    Steps: threshold (Otsu over the whole source, or a fixed value; phase maps, which are
    {0, 1} already, are cut at 0.5) -> erosion-dilation (opening, closing) -> region filling
    (holes below ``fill_holes`` px) -> removal of islands below ``min_island`` px.
    Returns the uint8 stack, the threshold used and the phase fraction after each step that
    ran, starting with ``threshold``.
    """
    params = params.resolved(binary_input)
    if binary_input:
        if distinct := np.unique(images[(images != 0) & (images != 1)]).size:
            raise MicrovaeError(f"{source}: declared binary, but has {distinct} values other than "
                                "0 and 1; remove 'binary: true' to threshold it")
        threshold = 0.5
    elif params.threshold == "otsu":
        threshold = otsu_threshold(images, source)
    else:
        threshold = float(params.threshold)
    binary = binarize(images, threshold, params.phase)
    steps = [("threshold", float(binary.mean()))]
    for name, opening, closing in (("opening", params.opening_radius, 0),
                                   ("closing", 0, params.closing_radius)):
        if opening or closing:
            binary = erode_dilate(binary, opening, closing)
            steps.append((name, float(binary.mean())))
    if params.fill_holes > 0:
        binary = remove_small(binary, params.fill_holes, value=0)
        steps.append(("fill_holes", float(binary.mean())))
    if params.min_island > 0:
        binary = remove_small(binary, params.min_island, value=1)
        steps.append(("min_island", float(binary.mean())))
    return binary, threshold, steps


def morphology_change(steps: list[tuple[str, float]]) -> float:
    """Relative change of the phase fraction from thresholding to the last step (1.0 where
    the steps create phase 1 in an image that had none)."""
    first, last = steps[0][1], steps[-1][1]
    return (last - first) / first if first > 0 else (0.0 if last == 0 else 1.0)
