"""Reading raw micrographs and volumes, and cutting them into 2-D tiles of the training size.

Conventions: arrays are indexed (row, column) = (y, x) for images and (z, y, x) for volumes.
Grey values are scaled to [0, 1]: 8-bit by 255, 16-bit by 65535, booleans to {0, 1}, floats
already in [0, 1] are kept and other floats are min-max scaled per file.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import MicrovaeError

IMAGE_SUFFIXES = {".png": "png", ".jpg": "png", ".jpeg": "png", ".bmp": "png",
                  ".tif": "tif", ".tiff": "tif", ".npy": "npy", ".h5": "h5", ".hdf5": "h5"}
# Columns of the per-tile origin table.
ORIGIN_COLUMNS = ("file", "axis", "slice", "y", "x")


@dataclass
class TileSet:
    """Tiles of one source: grey images, optional truth, and where each tile came from."""

    images: np.ndarray  # (N, H, W) float32 in [0, 1]
    origin: np.ndarray  # (N, 5) int32, columns ORIGIN_COLUMNS
    files: list[str]
    truth: np.ndarray | None = None  # (N, H, W) uint8 {0, 1}
    notes: list[str] = field(default_factory=list)


def expand_paths(patterns: Sequence[str], key: str) -> list[Path]:
    """Expand globs in order (each pattern's matches sorted); error if a pattern matches nothing."""
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        matches = [m for m in matches if os.path.isfile(m)]
        if not matches:
            raise MicrovaeError(f"{key}: '{pattern}' matches no file")
        files.extend(Path(m) for m in matches)
    return files


def detect_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    try:
        return IMAGE_SUFFIXES[path.suffix.lower()]
    except KeyError:
        raise MicrovaeError(f"{path}: unknown image format '{path.suffix}'; use one of "
                            f"{sorted(IMAGE_SUFFIXES)} or set the source's 'format'") from None


def read_array(path: Path, fmt: str = "auto", dataset: str | None = None,
               rgb: bool = False) -> np.ndarray:
    """Read one file as a grey 2-D image (H, W) or 3-D volume (Z, H, W), in its own dtype.

    Colour images (RGB or RGBA) become grey by luminance (alpha dropped). For NPY and HDF5,
    a 3-D array is a volume unless ``rgb`` says its last axis holds colour channels.
    """
    fmt = detect_format(path, fmt)
    if not path.is_file():
        raise MicrovaeError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise MicrovaeError(f"{path}: file is empty (0 bytes)")
    try:
        if fmt == "png":
            import imageio.v3 as iio

            array = np.asarray(iio.imread(path))
            colour = array.ndim == 3
        elif fmt == "tif":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                array = series.asarray()
                colour = "S" in series.axes
        elif fmt == "npy":
            array = np.load(path, allow_pickle=False)
            colour = rgb
        elif fmt == "h5":
            import h5py

            if not dataset:
                raise MicrovaeError(f"{path}: an HDF5 source needs 'dataset' (the path of the "
                                    "image data set inside the file)")
            with h5py.File(path, "r") as h5:
                if dataset not in h5 or not isinstance(h5[dataset], h5py.Dataset):
                    raise MicrovaeError(f"{path}: no data set '{dataset}' in this HDF5 file "
                                        f"(top-level entries: {sorted(h5.keys())})")
                array = h5[dataset][()]
            colour = rgb
        else:
            raise MicrovaeError(f"{path}: unsupported format '{fmt}'")
    except MicrovaeError:
        raise
    except Exception as exc:  # every reader has its own exception types
        raise MicrovaeError(f"{path}: cannot read as {fmt} ({type(exc).__name__}: {exc})") from exc
    if colour:
        array = colour_to_grey(array, path)
    if array.ndim not in (2, 3) or min(array.shape) < 1:
        raise MicrovaeError(f"{path}: expected a 2-D image or 3-D volume, got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise MicrovaeError(f"{path}: unsupported data type {array.dtype}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise MicrovaeError(f"{path}: contains {bad} NaN or infinite values")
    return array


def colour_to_grey(array: np.ndarray, path: Path) -> np.ndarray:
    """Luminance (ITU-R 601) of an RGB or RGBA array whose last axis is the channel."""
    if array.shape[-1] not in (3, 4):
        if array.shape[-1] in (1, 2):  # grey or grey+alpha
            return array[..., 0]
        raise MicrovaeError(f"{path}: colour image with {array.shape[-1]} channels")
    weights = np.array([0.299, 0.587, 0.114])
    grey = array[..., :3].astype(np.float64) @ weights
    return grey.astype(array.dtype) if array.dtype.kind in "ui" else grey


def scale_to_unit(array: np.ndarray) -> np.ndarray:
    """Grey values as float32 in [0, 1] (see the module docstring for the rules)."""
    if array.dtype == bool:
        return array.astype(np.float32)
    if array.dtype.kind in "ui":
        if array.dtype.itemsize == 1:
            return array.astype(np.float32) / 255.0
        if array.dtype.itemsize == 2:
            return array.astype(np.float32) / 65535.0
        array = array.astype(np.float64)
    lo, hi = float(array.min()), float(array.max())
    if lo >= 0.0 and hi <= 1.0:
        return array.astype(np.float32)
    if hi == lo:
        return np.zeros(array.shape, np.float32)
    return ((array - lo) / (hi - lo)).astype(np.float32)


def slices(array: np.ndarray, axes: Sequence[int], step: int, path: Path
           ) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(axis, index, image)`` for every 2-D section; a 2-D image yields itself once.

    Axis -1 marks a 2-D image.
    """
    if array.ndim == 2:
        yield -1, 0, array
        return
    for axis in axes:
        if not -array.ndim <= axis < array.ndim:
            raise MicrovaeError(f"{path}: cannot slice along axis {axis}: the volume has "
                                f"{array.ndim} axes (shape {array.shape})")
        moved = np.moveaxis(array, axis, 0)
        for index in range(0, moved.shape[0], step):
            yield axis % array.ndim, index, moved[index]


def crop_image(image: np.ndarray, crop: dict[str, int], path: Path) -> np.ndarray:
    """Remove ``crop['top'|'bottom'|'left'|'right']`` pixels from the edges of a 2-D image."""
    top, bottom = crop.get("top", 0), crop.get("bottom", 0)
    left, right = crop.get("left", 0), crop.get("right", 0)
    h, w = image.shape
    if top + bottom >= h or left + right >= w:
        raise MicrovaeError(f"{path}: crop {crop} removes the whole {h}x{w} image")
    return image[top:h - bottom, left:w - right]


def tile_positions(height: int, width: int, size: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of the ``size`` x ``size`` tiles at ``stride`` that fit inside."""
    return [(y, x) for y in range(0, height - size + 1, stride)
            for x in range(0, width - size + 1, stride)]


def tile_source(files: Sequence[Path], size: int, stride: int | None = None,
                axes: Sequence[int] = (0,), slice_step: int = 1,
                crop: dict[str, int] | None = None, fmt: str = "auto",
                dataset: str | None = None, rgb: bool = False,
                truth_files: Sequence[Path] | None = None) -> TileSet:
    """Read every file of a source and cut all its 2-D sections into tiles.

    ``truth_files``, where given, pair one-to-one with ``files`` (same shapes) and are tiled
    the same way; they must be binary.
    """
    stride = stride or size
    crop = crop or {}
    if truth_files is not None and len(truth_files) != len(files):
        raise MicrovaeError(f"truth: {len(truth_files)} truth files for {len(files)} image files")
    images: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    origin: list[tuple[int, int, int, int, int]] = []
    for file_index, path in enumerate(files):
        grey = scale_to_unit(read_array(path, fmt, dataset, rgb))
        truth = None
        if truth_files is not None:
            truth = read_array(truth_files[file_index], "auto", dataset, rgb)
            if truth.shape != grey.shape:
                raise MicrovaeError(f"{truth_files[file_index]}: truth shape {truth.shape} differs "
                                    f"from image shape {grey.shape} of {path}")
            truth = (truth > 0).astype(np.uint8)
        n_before = len(origin)
        sections = slices(grey, axes, slice_step, path)
        truth_sections = slices(truth, axes, slice_step, path) if truth is not None else None
        for axis, index, image in sections:
            image = crop_image(image, crop, path)
            truth_image = None
            if truth_sections is not None:
                truth_image = crop_image(next(truth_sections)[2], crop, path)
            for y, x in tile_positions(*image.shape, size, stride):
                images.append(image[y:y + size, x:x + size])
                if truth_image is not None:
                    truths.append(truth_image[y:y + size, x:x + size])
                origin.append((file_index, axis, index, y, x))
        if len(origin) == n_before:
            section_shape = crop_image(next(slices(grey, axes, slice_step, path))[2], crop,
                                       path).shape
            raise MicrovaeError(f"{path}: image of {section_shape[0]}x{section_shape[1]} px "
                                f"(after crop) is smaller than one {size}x{size} tile")
    return TileSet(
        images=np.stack(images).astype(np.float32),
        origin=np.asarray(origin, dtype=np.int32).reshape(-1, len(ORIGIN_COLUMNS)),
        files=[str(f) for f in files],
        truth=np.stack(truths) if truths else None,
    )
