"""Export of phase maps for simulation: VTK image data (``.vti``) that ParaView and DAMASK's
``GeomGrid.load`` read, and PNG / TIFF / NPY.

A ``.vti`` file holds one phase map as a grid of cells (a 2-D map: one cell thick) with the
pixel size as spacing and two cell arrays: ``material`` (int32, the name DAMASK reads) and
``phase`` (uint8), both 0 for the matrix and 1 for the second phase. Cell (x, y, z) is pixel
[z, y, x] of the array (row y = 0 first, as in the image file). The ``pixel_unit`` is kept as
field data. Written with VTK's own XML writer (zlib-compressed), read back with its reader.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path, write_json
from ..errors import MicrovaeError
from ..h5io import dataset_info, open_h5
from ..modes import UNSEEDED_MODES, in_mode_order
from ..samplesfile import conditioned_keys, large_keys, stack_maps
from ..vti import write_vti
from . import EXPORT_FORMATS, real_test_windows

log = logging.getLogger("microvae.stages.export")



def write_phase_map(path: Path, phase: np.ndarray, fmt: str, pixel_size: float,
                    pixel_unit: str) -> None:
    """One phase map in one format (PNG/TIFF: 0 and 255; NPY: 0 and 1)."""
    if fmt == "vti":
        write_vti(path, phase, pixel_size, pixel_unit)
        return
    with atomic_path(path) as tmp:
        if fmt == "npy":
            np.save(tmp, phase.astype(np.uint8))
        elif fmt == "png":
            import imageio.v3 as iio

            iio.imwrite(tmp, phase.astype(np.uint8) * 255)
        elif fmt == "tif":
            import tifffile

            tifffile.imwrite(tmp, phase.astype(np.uint8) * 255)
        else:
            raise MicrovaeError(f"--format: unknown format {fmt!r}; use {list(EXPORT_FORMATS)}")


def generated_maps(samples_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The sets to export from a samples file: the large ones (``large/{mode}_{size}``) where
    there are any, else the unseeded modes at the training size, and the sets generated at a
    target phase fraction or a graded one (``conditioned/``, ``graded/``: named
    ``{group}_{name}``); their phase maps as the sample stage finished them, or cut at 0.5
    where it did not."""
    with open_h5(samples_path) as h5:
        keys = large_keys(h5) or {name: name for name in in_mode_order(UNSEEDED_MODES)
                                  if name in h5}
        keys.update(conditioned_keys(h5))
        sets = {name: stack_maps(h5, key)[0] for name, key in keys.items()}
    if not sets:
        raise MicrovaeError(f"{samples_path}: holds no generated images to export")
    return sets


def export(samples_path: str | os.PathLike, out_dir: str | os.PathLike,
           formats: tuple[str, ...] = ("vti",), n: int = 4,
           dataset: str | os.PathLike | None = None, real: bool = False,
           pixel_size: float | None = None, pixel_unit: str | None = None) -> dict[str, Any]:
    """Write the first ``n`` generated phase maps of each set (and with ``real``, ``n`` real
    test windows of each generated size from ``dataset``) in each format, and a
    ``manifest.json`` (written last) listing the files with the pixel size. The pixel size is
    the data set's unless given."""
    unknown = set(formats) - set(EXPORT_FORMATS)
    if unknown:
        raise MicrovaeError(f"--format: unknown format(s) {sorted(unknown)}; use "
                            f"{list(EXPORT_FORMATS)}")
    if real and dataset is None:
        raise MicrovaeError("--real needs --dataset (the real test windows come from it)")
    if dataset is not None and pixel_size is None:
        info = dataset_info(dataset)
        pixel_size = info.get("pixel_size")
        pixel_unit = pixel_unit or info.get("pixel_unit")
    pixel_size = float(pixel_size) if pixel_size else 1.0
    pixel_unit = pixel_unit or ("px" if pixel_size == 1.0 else "um")
    sets = {name: images[:n] for name, images in generated_maps(samples_path).items()}
    if real:
        for size in sorted({images.shape[-1] for images in sets.values()}):
            window, windows, _ = real_test_windows(dataset, size)
            sets[f"real_{window}"] = windows[:n]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, images in sets.items():
        for i, phase in enumerate(images):
            for fmt in formats:
                path = out / f"{name}_{i:03d}.{fmt}"
                write_phase_map(path, phase, fmt, pixel_size, pixel_unit)
                files.append({"file": path.name, "set": name, "index": i, "format": fmt,
                              "shape": list(phase.shape),
                              "phase_fraction": float(phase.mean())})
    manifest = {"samples": str(samples_path), "dataset": str(dataset or ""),
                "pixel_size": pixel_size, "pixel_unit": pixel_unit, "files": files,
                "cell_arrays": {"material": "int32, 0 matrix, 1 second phase (DAMASK)",
                                "phase": "uint8, the same ids"}}
    write_json(out / "manifest.json", manifest)
    log.info("exported %d file(s) to %s", len(files), out)
    return manifest
