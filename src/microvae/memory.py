"""Memory the data stages declare (the rules' ``mem_mb``), from the size of their input.

Each stage holds its whole input in memory, so its peak grows with the pixels it reads. The
bytes per pixel below are the peaks measured by ``benchmarks/speed/stage_memory.py`` (one grey
micrograph of 1 000 to 16 000 px and volumes to 512^3; docs/performance.md) with a margin on
top; a retry after a job was killed asks for more (``attempt``). Only headers are read here:
the stages themselves report bad files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

# Measured peak per pixel (benchmarks/speed/stage_memory.py): ingest holds the raw array, its float32
# scaling and the float32 tiles; segment the float32 tiles, the binary maps and the
# morphology's copies; pack the binary tiles of every source and their split copies.
BYTES_PER_TILE_PIXEL = {"ingest": 8.0, "segment": 20.0, "pack": 6.0}
SCALED_BYTES_PER_RAW_PIXEL = 4.0  # the float32 copy of every raw pixel, in ingest
INTERPRETER_MB = 300  # Python, numpy, h5py, matplotlib and the figures' fixed-size canvases
MARGIN = 1.25
FLOOR_MB = 1000


def declared_mb(stage: str, tile_pixels: int, raw_pixels: int = 0, raw_bytes: int = 0,
                attempt: int = 1) -> int:
    """mem_mb for ``stage`` given the pixels of its tiles (and, for ingest, of its raw files)."""
    need = BYTES_PER_TILE_PIXEL[stage] * tile_pixels
    if stage == "ingest":
        need += raw_bytes + SCALED_BYTES_PER_RAW_PIXEL * raw_pixels
    mb = INTERPRETER_MB + MARGIN * need / 2**20
    return int(max(FLOOR_MB, mb)) * max(1, attempt)


def raw_size(path: str | os.PathLike, dataset: str | None = None) -> tuple[int, int]:
    """(pixels, bytes) of one image or volume file, from its header; (0, file size) where the
    header cannot be read (the ingest stage will say why)."""
    path = Path(path)
    try:
        suffix = path.suffix.lower()
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shapes = [(s.shape, s.dtype.itemsize, "S" in s.axes) for s in tif.series]
            pixels = sum(math.prod(shape[:-1] if colour else shape) for shape, _, colour in shapes)
            return pixels, sum(math.prod(shape) * size for shape, size, _ in shapes)
        if suffix == ".npy":
            import numpy as np

            array = np.load(path, mmap_mode="r", allow_pickle=False)
            return int(array.size), int(array.nbytes)
        if suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as h5:
                data = h5[dataset]
                return int(data.size), int(data.size * data.dtype.itemsize)
        from PIL import Image

        with Image.open(path) as image:
            bands = len(image.getbands())
            depth = 2 if image.mode.startswith("I;16") else (4 if image.mode in ("I", "F")
                                                             else 1)
            return image.width * image.height, image.width * image.height * bands * depth
    except Exception:  # noqa: BLE001 - a bad file is the ingest stage's to report
        return 0, path.stat().st_size if path.exists() else 0


def ingest_mb(files: Iterable[str | os.PathLike], image_size: int, stride: int | None = None,
              dataset: str | None = None, attempt: int = 1) -> int:
    """mem_mb of ingesting ``files`` (one source): tiles at ``stride`` overlap by
    (image_size / stride)^2."""
    sizes = [raw_size(f, dataset) for f in files if Path(f).exists()]
    pixels, nbytes = sum(s[0] for s in sizes), sum(s[1] for s in sizes)
    overlap = (image_size / (stride or image_size)) ** 2
    return declared_mb("ingest", int(pixels * overlap), pixels, nbytes, attempt)


def tile_pixels(h5_files: Iterable[str | os.PathLike]) -> int:
    """Pixels of the ``images`` data sets of ingested or segmented files (0 where missing)."""
    import h5py

    total = 0
    for path in h5_files:
        try:
            with h5py.File(path, "r") as h5:
                total += int(h5["images"].size)
        except Exception:  # noqa: BLE001 - not made yet (planning) or bad: the stage says
            continue
    return total


def tiles_mb(stage: str, h5_files: Iterable[str | os.PathLike], attempt: int = 1) -> int:
    """mem_mb of ``segment`` or ``pack`` reading the tiles in ``h5_files``."""
    return declared_mb(stage, tile_pixels(h5_files), attempt=attempt)
