"""Reading raw micrographs and volumes, and cutting them into 2-D tiles of the training size.

Conventions: arrays are indexed (row, column) = (y, x) for images and (z, y, x) for volumes.
Grey values are scaled to [0, 1] by the source's ``scale``: ``auto`` - 8-bit integers by 255,
16-bit by 65535, booleans to {0, 1}, floats already in [0, 1] kept, other floats and wider
integers min-max scaled per file; ``range`` - min-max per file for every file; ``[lo, hi]`` -
the same linear map for every file (a value outside is an error). Phase maps (at most
two distinct values, whatever the dtype) are kept exactly: the higher value becomes 1.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import check_options
from .errors import MicrovaeError, short_reason

IMAGE_SUFFIXES = {".png": "png", ".jpg": "png", ".jpeg": "png", ".bmp": "png",
                  ".tif": "tif", ".tiff": "tif", ".npy": "npy", ".h5": "h5", ".hdf5": "h5"}
# What the first bytes of each kind of file are (HDF5 may sit behind a user block of 512 * 2^k).
SIGNATURES = {"PNG": (b"\x89PNG\r\n\x1a\n",), "JPEG": (b"\xff\xd8\xff",), "BMP": (b"BM",),
              "TIFF": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), "NPY": (b"\x93NUMPY",),
              "HDF5": (b"\x89HDF\r\n\x1a\n",)}
SUFFIX_KINDS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF",
                ".tiff": "TIFF", ".npy": "NPY", ".h5": "HDF5", ".hdf5": "HDF5"}
FORMAT_KINDS = {"png": ("PNG", "JPEG", "BMP"), "tif": ("TIFF",), "npy": ("NPY",), "h5": ("HDF5",)}
# Columns of the per-tile origin table: the image entry (a file, or one series of a
# multi-series TIFF), the axis cut (-1 for a 2-D image), the section index and the tile's
# top-left corner in the cropped section.
ORIGIN_COLUMNS = ("file", "axis", "slice", "y", "x")
# Columns of the per-tile corner table: the tile's first voxel in its entry's own array, a 2-D
# image being a volume of one section (z = 0).
CORNER_COLUMNS = ("z", "y", "x")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceOptions:
    """How the files of one source are read and cut (the reader keys of ``sources[i]``)."""

    name: str = "source"
    format: str = "auto"
    dataset: str | None = None
    rgb: bool = False
    axes: tuple[int, ...] = (0,)
    slice_step: int = 1
    crop: dict[str, int] = field(default_factory=dict)
    stride: int | None = None
    pixel_size: float | None = None
    pixel_unit: str = "um"
    binary: bool | str = "auto"
    scale: str | tuple[float, float] = "auto"
    group: str | None = None

    @classmethod
    def from_options(cls, options: dict, key: str = "source") -> SourceOptions:
        options = check_options(options, "source", key)
        return cls(**{k: (tuple(v) if k in ("axes", "scale") and isinstance(v, list) else v)
                      for k, v in options.items()})


@dataclass
class TileSet:
    """Tiles of one source: grey images (or phase maps), optional truth, where each tile came from."""

    images: np.ndarray  # (N, H, W) float32 in [0, 1]; {0, 1} where ``binary``
    origin: np.ndarray  # (N, 5) int32, columns ORIGIN_COLUMNS
    corner: np.ndarray  # (N, 3) int32, columns CORNER_COLUMNS
    files: list[str]  # one label per image entry
    groups: list[str]  # the split group of each entry
    shapes: list[list[int]]  # the (Z, H, W) shape of each entry
    binary: bool = False
    truth: np.ndarray | None = None  # (N, H, W) uint8 {0, 1}


@dataclass
class ImageEntry:
    """One image or volume read from a file: the whole file, or one series of a TIFF."""

    label: str
    array: np.ndarray


def expand_paths(patterns: Sequence[str], key: str, suffixes: Sequence[str] = ()) -> list[Path]:
    """Expand globs in order (each pattern's matches sorted); a folder stands for the image
    files directly inside it (and files ending in ``suffixes``). Error if a pattern matches no
    file, or a link that points nowhere (it would be dropped without a word)."""
    accepted = set(IMAGE_SUFFIXES) | {s.lower() for s in suffixes}
    files: list[Path] = []

    def refuse_dangling(candidates):
        for candidate in candidates:
            if os.path.islink(candidate) and not os.path.exists(candidate):
                raise MicrovaeError(f"{key}: {candidate} is a link to "
                                    f"{os.readlink(candidate)}, which does not exist")

    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        if os.path.isdir(expanded):
            entries = sorted(p for p in Path(expanded).iterdir() if p.suffix.lower() in accepted)
            refuse_dangling(entries)
            inside = [p for p in entries if p.is_file()]
            if not inside:
                raise MicrovaeError(f"{key}: '{pattern}' is a folder with no image files "
                                    f"({' '.join(sorted(accepted))}) directly inside; give "
                                    f"a glob such as '{os.path.join(pattern, '**', '*.tif')}'")
            files.extend(inside)
            continue
        matches = sorted(glob.glob(expanded, recursive=True))
        refuse_dangling(matches)
        found = [m for m in matches if os.path.isfile(m)]
        if not found:
            hint = " (it matches only folders: end the pattern with a file name such as *.png)" \
                if matches else ""
            raise MicrovaeError(f"{key}: '{pattern}' matches no file{hint}")
        files.extend(Path(m) for m in found)
    return files


def detect_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    try:
        return IMAGE_SUFFIXES[path.suffix.lower()]
    except KeyError:
        raise MicrovaeError(f"{path}: unknown image format '{path.suffix}'; use one of "
                            f"{sorted(IMAGE_SUFFIXES)} or set the source's 'format'") from None


def check_signature(path: Path, fmt: str) -> None:
    """Refuse a file whose first bytes are not those of the format it is read as."""
    kinds = FORMAT_KINDS[fmt]
    with open(path, "rb") as handle:
        head = handle.read(16)
        if any(head.startswith(sig) for kind in kinds for sig in SIGNATURES[kind]):
            return
        if "HDF5" in kinds:  # the signature may follow a user block
            for offset in (512, 1024, 2048, 4096):
                handle.seek(offset)
                if handle.read(8) == SIGNATURES["HDF5"][0]:
                    return
    claimed = SUFFIX_KINDS.get(path.suffix.lower())
    if claimed not in kinds:
        claimed = kinds[0]
    actual = next((kind for kind, sigs in SIGNATURES.items()
                   if any(head.startswith(sig) for sig in sigs)), None)
    start = head[:8].decode("latin-1")
    printable = "".join(c if c.isprintable() else "." for c in start)
    what = f"it is a {actual} file" if actual else f"it starts with {printable!r}"
    raise MicrovaeError(f"{path}: not a {claimed} file ({what})")


def read_entries(path: Path, fmt: str = "auto", dataset: str | None = None,
                 rgb: bool = False) -> list[ImageEntry]:
    """Read one file as grey 2-D images (H, W) or 3-D volumes (Z, H, W), in their own dtype.

    Every file gives one entry, except a TIFF with several image series (pages of different
    shapes): every series becomes an entry of its own, so that no page is dropped. Colour
    images (RGB or RGBA) become grey by luminance (alpha dropped). For NPY and HDF5, a 3-D
    array is a volume unless ``rgb`` says its last axis holds colour channels.
    """
    fmt = detect_format(path, fmt)
    if not path.is_file():
        raise MicrovaeError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise MicrovaeError(f"{path}: file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise MicrovaeError(f"{path}: permission denied: this user cannot read the file")
    if fmt not in FORMAT_KINDS:
        raise MicrovaeError(f"{path}: unsupported format '{fmt}'")
    check_signature(path, fmt)
    parts: list[tuple[str, np.ndarray, bool]] = []  # label suffix, array, colour
    try:
        if fmt == "png":
            import imageio.v3 as iio

            array = np.asarray(iio.imread(path))
            array = apply_orientation(array, exif_orientation(path), (0, 1), path)
            parts.append(("", array, array.ndim == 3))
        elif fmt == "tif":
            parts.extend(_read_tiff(path))
        elif fmt == "npy":
            parts.append(("", np.load(path, allow_pickle=False), rgb))
        else:
            import h5py

            if not dataset:
                raise MicrovaeError(f"{path}: an HDF5 source needs 'dataset' (the path of the "
                                    "image data set inside the file)")
            with h5py.File(path, "r") as h5:
                if dataset not in h5 or not isinstance(h5[dataset], h5py.Dataset):
                    raise MicrovaeError(f"{path}: no data set '{dataset}' in this HDF5 file "
                                        f"(top-level entries: {sorted(h5.keys())})")
                parts.append(("", h5[dataset][()], rgb))
    except MicrovaeError:
        raise
    except Exception as exc:  # every reader has its own exception types
        raise MicrovaeError(f"{path}: cannot read as {fmt}, the file may be truncated or "
                            f"corrupt ({short_reason(exc)})") from exc
    entries = []
    for suffix, array, colour in parts:
        label = f"{path}{suffix}"
        if colour:
            array = colour_to_grey(array, label)
        elif fmt in ("npy", "h5") and array.ndim == 3 and array.shape[-1] in (3, 4) \
                and min(array.shape[:2]) > 4:
            raise MicrovaeError(f"{label}: array of shape {array.shape} looks like a colour image "
                                f"(last axis of {array.shape[-1]}); set 'rgb: true' for the source "
                                "to read it as one, or store volumes as (Z, H, W)")
        if array.ndim not in (2, 3) or min(array.shape) < 1:
            raise MicrovaeError(f"{label}: expected a 2-D image or 3-D volume, got shape "
                                f"{array.shape}")
        if array.dtype.kind not in "biuf":
            raise MicrovaeError(f"{label}: unsupported data type {array.dtype}")
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            raise MicrovaeError(f"{label}: contains {bad} NaN or infinite values")
        entries.append(ImageEntry(label, array))
    return entries


def _read_tiff(path: Path) -> list[tuple[str, np.ndarray, bool]]:
    """Every image series of a TIFF; error if a page belongs to none."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = list(tif.series)
        if not series:
            raise MicrovaeError(f"{path}: cannot read as tif, the file may be truncated or "
                                "corrupt (no image in it)")
        covered: set[int] = set()
        for s in series:
            for level in s.levels:
                covered.update(p.index for p in level.pages if p is not None
                               and isinstance(p.index, int))
        missing = sorted(set(range(len(tif.pages))) - covered)
        if missing:
            raise MicrovaeError(f"{path}: pages {missing} belong to no image series that can be "
                                "read; re-save the file with one image per page")
        parts = []
        for i, s in enumerate(series):
            first = s.pages[0].index if s.pages and s.pages[0] is not None else i
            suffix = "" if len(series) == 1 else \
                f"[series {i}: {len(s.pages)} page(s) from page {first}, shape {s.shape}]"
            array = s.asarray()
            tag = s.pages[0].tags.get("Orientation") if s.pages and s.pages[0] is not None \
                else None
            if tag is not None and "Y" in s.axes and "X" in s.axes:
                array = apply_orientation(array, int(tag.value),
                                          (s.axes.index("Y"), s.axes.index("X")), path)
            parts.append((suffix, array, "S" in s.axes))
        if len(series) > 1:
            log.warning("%s: %d image series of different shapes %s: each is read as an image "
                        "of its own", path, len(series), [s.shape for s in series])
        return parts


# EXIF/TIFF orientation: how the stored rows and columns become what a viewer shows.
ORIENTATIONS = {2: "mirrored left-right", 3: "rotated 180 degrees", 4: "mirrored top-bottom",
                5: "transposed", 6: "rotated 90 degrees clockwise", 7: "transverse",
                8: "rotated 90 degrees counter-clockwise"}


def exif_orientation(path: Path) -> int:
    """The EXIF orientation tag of a PNG, JPEG or BMP file (1, the stored order, if none)."""
    from PIL import Image

    with Image.open(path) as image:
        value = image.getexif().get(0x0112, 1)
    return int(value) if int(value) in range(1, 9) else 1


def apply_orientation(array: np.ndarray, orientation: int, axes: tuple[int, int],
                      path: Path | str) -> np.ndarray:
    """The image as a viewer shows it (and as the crop keys are meant): the orientation tag
    applied to the (row, column) ``axes`` of ``array``, with a warning, since the stored
    order changes."""
    if orientation not in ORIENTATIONS:
        return array
    y, x = axes
    flip_x = lambda a: np.flip(a, x)  # noqa: E731
    flip_y = lambda a: np.flip(a, y)  # noqa: E731
    swap = lambda a: np.swapaxes(a, y, x)  # noqa: E731
    oriented = {2: flip_x, 3: lambda a: flip_y(flip_x(a)), 4: flip_y, 5: swap,
                6: lambda a: flip_x(swap(a)), 7: lambda a: flip_y(flip_x(swap(a))),
                8: lambda a: flip_y(swap(a))}[orientation](array)
    log.warning("%s: orientation tag %d applied (%s): the image is read as a viewer shows it, "
                "and crop edges refer to that view", path, orientation, ORIENTATIONS[orientation])
    return np.ascontiguousarray(oriented)


def read_array(path: Path, fmt: str = "auto", dataset: str | None = None,
               rgb: bool = False) -> np.ndarray:
    """The one image or volume of a file (error if a TIFF holds several series)."""
    entries = read_entries(path, fmt, dataset, rgb)
    if len(entries) > 1:
        raise MicrovaeError(f"{path}: holds {len(entries)} images of different shapes where one "
                            "was expected")
    return entries[0].array


def colour_to_grey(array: np.ndarray, path: Path | str) -> np.ndarray:
    """Luminance (ITU-R 601, rounded to the integer levels of integer data) of an RGB or RGBA
    array whose last axis is the channel; where R = G = B, that channel itself."""
    if array.shape[-1] not in (3, 4):
        if array.shape[-1] in (1, 2):  # grey or grey+alpha
            return array[..., 0]
        raise MicrovaeError(f"{path}: colour image with {array.shape[-1]} channels")
    colour = array[..., :3]
    if np.array_equal(colour[..., 0], colour[..., 1]) and \
            np.array_equal(colour[..., 0], colour[..., 2]):
        return colour[..., 0]  # grey stored as RGB: its values exactly
    weights = np.array([0.299, 0.587, 0.114])
    grey = colour.astype(np.float64) @ weights
    # rounded, not truncated: 0.299 + 0.587 + 0.114 of a level is that level, not one below
    return np.rint(grey).astype(array.dtype) if array.dtype.kind in "ui" else grey


def scale_to_unit(array: np.ndarray, scale: str | Sequence[float] = "auto",
                  label: Path | str = "image") -> np.ndarray:
    """Grey values as float32 in [0, 1] by the rule ``scale`` (the source key: ``auto``,
    ``range`` or ``(lo, hi)``; the module docstring has the rules)."""
    if array.dtype == bool:
        return array.astype(np.float32)
    if not isinstance(scale, str):
        lo, hi = (float(v) for v in scale)
        if not hi > lo:
            raise MicrovaeError(f"scale: [{lo:g}, {hi:g}] needs lo < hi")
        low, high = float(array.min()), float(array.max())
        if low < lo or high > hi:
            raise MicrovaeError(f"{label}: grey values {low:g}..{high:g} fall outside scale "
                                f"[{lo:g}, {hi:g}]; widen scale or use scale: range")
        return ((array.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)
    if scale not in ("auto", "range"):
        raise MicrovaeError(f"scale: {scale!r} is not auto, range or [lo, hi]")
    if scale == "auto" and array.dtype.kind in "ui" and array.dtype.itemsize <= 2:
        return array.astype(np.float32) / (255.0 if array.dtype.itemsize == 1 else 65535.0)
    array = array.astype(np.float64)
    lo, hi = float(array.min()), float(array.max())
    if scale == "auto" and lo >= 0.0 and hi <= 1.0:
        return array.astype(np.float32)
    if hi == lo:
        return np.zeros(array.shape, np.float32)
    return ((array - lo) / (hi - lo)).astype(np.float32)


def slices(array: np.ndarray, axes: Sequence[int], step: int, path: Path | str
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


def crop_image(image: np.ndarray, crop: dict[str, int], path: Path | str) -> np.ndarray:
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


def distinct_values(array: np.ndarray) -> int:
    """How many distinct values ``array`` holds: 1, 2, or 3 for 'more than two'."""
    lo, hi = array.min(), array.max()
    if lo == hi:
        return 1
    return 3 if np.any((array != lo) & (array != hi)) else 2


def is_binary_source(entries: Sequence[ImageEntry], binary: bool | str) -> bool:
    """Whether the entries of a source are phase maps rather than grey images.

    ``auto``: every entry holds at most two distinct values (whatever its dtype: bool,
    {0, 1}, {0, 255}, {0.0, 1.0}, ...) and at least one holds two; a source that mixes such
    phase maps with grey images is refused, naming a grey file. ``True`` checks that.
    """
    counts = [distinct_values(e.array) for e in entries]
    if binary is True:
        for entry, count in zip(entries, counts):
            if count > 2:
                raise MicrovaeError(f"{entry.label}: the source is declared binary (binary: true) "
                                    "but this image has more than two distinct values; remove "
                                    "'binary: true' to threshold it")
        if max(counts) < 2:
            raise MicrovaeError(f"{entries[0].label}: the source is declared binary but every "
                                "image is constant (one value)")
        return True
    if binary is False:
        return False
    maps = [e for e, count in zip(entries, counts) if count == 2]
    greys = [e for e, count in zip(entries, counts) if count > 2]
    if maps and greys:
        # one rule for the whole source would either threshold the maps (and invert them
        # under the grey default phase: dark) or keep grey images as maps: both change data
        raise MicrovaeError(
            f"{greys[0].label}: a grey image (more than two values) in a source whose other "
            f"files are phase maps of two values (e.g. {maps[0].label}; {len(maps)} maps, "
            f"{len(greys)} grey): put them in two sources, or set 'binary: false' to threshold "
            "every file")
    return bool(maps)


def phase_indicator(entries: Sequence[ImageEntry]) -> list[np.ndarray]:
    """Binary entries as float32 {0, 1}: the higher of the two values is 1 (a constant entry is
    1 where its value is the higher of the source's values)."""
    lo = min(e.array.min() for e in entries)
    hi = max(e.array.max() for e in entries)
    out = []
    for entry in entries:
        e_lo, e_hi = entry.array.min(), entry.array.max()
        top = e_hi if e_lo != e_hi else hi
        out.append((entry.array == top).astype(np.float32) if top != lo
                   else np.zeros(entry.array.shape, np.float32))
    return out


def group_labels(paths: Sequence[Path], group: str | None, key: str = "group") -> list[str]:
    """The split group of each file: the file itself (None), one group for all files ('all'),
    or the first capture group (else the whole match) of a regular expression on the file name."""
    if group is None:
        return [str(p) for p in paths]
    if group == "all":
        return ["all"] * len(paths)
    try:
        pattern = re.compile(group)
    except re.error as exc:
        raise MicrovaeError(f"{key}: {group!r} is not a valid regular expression ({exc})") from exc
    labels = []
    for path in paths:
        match = pattern.search(path.name)
        if not match:
            raise MicrovaeError(f"{path}: the file name does not match {key} {group!r}")
        labels.append(match.group(1) if pattern.groups else match.group(0))
    return labels


def check_distinct(files: Sequence[Path]) -> None:
    """Refuse a file given twice: under two names of one file (a link) or as a byte copy. Each
    name would become a group of its own, and the same tiles could land in two splits."""
    import hashlib

    seen: dict[str, Path] = {}
    for path in files:
        real = os.path.realpath(path)
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
        for key, how in ((f"path:{real}", "the same file"),
                         (f"content:{digest.hexdigest()}", "byte for byte the same as")):
            if key in seen:
                raise MicrovaeError(f"{path}: {how} {seen[key]} (given twice, its tiles could "
                                    "land in two splits); remove one of them")
            seen[key] = path


def section_corner(ndim: int, axis: int, index: int, y: int, x: int) -> tuple[int, int, int]:
    """First voxel (z, y, x) of a tile in its entry's array (a 2-D image is one section)."""
    if ndim == 2:
        return 0, y, x
    corner = [0, 0, 0]
    rows, cols = (a for a in range(3) if a != axis)
    corner[axis], corner[rows], corner[cols] = index, y, x
    return corner[0], corner[1], corner[2]


def tile_source(files: Sequence[Path], size: int, stride: int | None = None,
                axes: Sequence[int] = (0,), slice_step: int = 1,
                crop: dict[str, int] | None = None, fmt: str = "auto",
                dataset: str | None = None, rgb: bool = False,
                truth_files: Sequence[Path] | None = None, binary: bool | str = "auto",
                group: str | None = None, scale: str | Sequence[float] = "auto") -> TileSet:
    """Read every file of a source and cut all its 2-D sections into tiles.

    Grey images are scaled to [0, 1] (module docstring) and must not be constant in any
    section; phase maps (``binary``, see :func:`is_binary_source`) become {0, 1} exactly.
    ``truth_files``, where given, pair one-to-one with ``files`` (same shapes) and are tiled
    the same way; they must be binary.
    """
    stride = stride or size
    crop = crop or {}
    check_distinct(files)
    if truth_files is not None and len(truth_files) != len(files):
        raise MicrovaeError(f"truth: {len(truth_files)} truth files for {len(files)} image files")
    groups_of_files = group_labels(files, group)
    entries: list[ImageEntry] = []
    entry_groups: list[str] = []
    truth_arrays: list[np.ndarray] = []
    for file_index, path in enumerate(files):
        read = read_entries(path, fmt, dataset, rgb)
        entries.extend(read)
        entry_groups.extend([groups_of_files[file_index]] * len(read))
        if truth_files is not None:
            truth_path = truth_files[file_index]
            truth_read = read_entries(truth_path, "auto", dataset, rgb)
            if [t.array.shape for t in truth_read] != [e.array.shape for e in read]:
                raise MicrovaeError(f"{truth_path}: truth shape {[t.array.shape for t in truth_read]}"
                                    f" differs from image shape {[e.array.shape for e in read]} "
                                    f"of {path}")
            truth_arrays.extend((t.array > 0).astype(np.uint8) for t in truth_read)
    binary_source = is_binary_source(entries, binary)
    arrays = phase_indicator(entries) if binary_source else \
        [scale_to_unit(e.array, scale, e.label) for e in entries]
    images: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    origin: list[tuple[int, int, int, int, int]] = []
    corners: list[tuple[int, int, int]] = []
    top, left = crop.get("top", 0), crop.get("left", 0)
    for entry_index, (entry, grey) in enumerate(zip(entries, arrays)):
        truth = truth_arrays[entry_index] if truth_files is not None else None
        n_before = len(origin)
        sections = slices(grey, axes, slice_step, entry.label)
        truth_sections = slices(truth, axes, slice_step, entry.label) if truth is not None \
            else None
        tiles_along: dict[int, int] = {}
        section_shapes: dict[int, tuple[int, ...]] = {}
        for axis, index, image in sections:
            image = crop_image(image, crop, entry.label)
            section_shapes[axis] = image.shape
            tiles_along.setdefault(axis, 0)
            if not binary_source and image.max() - image.min() <= 0:
                where = "the image" if axis < 0 else f"section {index} along axis {axis}"
                raise MicrovaeError(
                    f"{entry.label}: {where} is constant (every pixel has the same grey value): "
                    "it holds no microstructure and Otsu's threshold is undefined for it; "
                    "remove it from the source")
            truth_image = None
            if truth_sections is not None:
                truth_image = crop_image(next(truth_sections)[2], crop, entry.label)
            for y, x in tile_positions(*image.shape, size, stride):
                tiles_along[axis] += 1
                images.append(image[y:y + size, x:x + size])
                if truth_image is not None:
                    truths.append(truth_image[y:y + size, x:x + size])
                origin.append((entry_index, axis, index, y, x))
                corners.append(section_corner(grey.ndim, axis, index, y + top, x + left))
        if len(origin) == n_before:
            section_shape = crop_image(next(slices(grey, axes, slice_step, entry.label))[2],
                                       crop, entry.label).shape
            raise MicrovaeError(f"{entry.label}: image of {section_shape[0]}x{section_shape[1]} px "
                                f"(after crop) is smaller than one {size}x{size} tile")
        empty_axes = [axis for axis, n in tiles_along.items() if n == 0]
        if empty_axes:
            axis = empty_axes[0]
            h, w = section_shapes[axis]
            raise MicrovaeError(
                f"{entry.label}: the sections along axis {axis} are {h}x{w} px (after crop), "
                f"smaller than one {size}x{size} tile, so that axis gives no tile; remove "
                f"{axis} from the source's axes (now {list(axes)}) or lower image_size")
    return TileSet(
        images=np.stack(images).astype(np.float32, copy=False),
        origin=np.asarray(origin, dtype=np.int32).reshape(-1, len(ORIGIN_COLUMNS)),
        corner=np.asarray(corners, dtype=np.int32).reshape(-1, len(CORNER_COLUMNS)),
        files=[e.label for e in entries],
        groups=entry_groups,
        shapes=[list((1,) + e.array.shape if e.array.ndim == 2 else e.array.shape)
                for e in entries],
        binary=binary_source,
        truth=np.stack(truths) if truths else None,
    )
