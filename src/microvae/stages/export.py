"""Export of phase maps for simulation: VTK image data (``.vti``) that ParaView and DAMASK's
``GeomGrid.load`` read, and PNG / TIFF / NPY.

A ``.vti`` file holds one phase map as a grid of cells (a 2-D map: one cell thick) with the
pixel size as spacing and two cell arrays: ``material`` (int32, the name DAMASK reads) and
``phase`` (uint8), both 0 for the matrix and 1 for the second phase. Cell (x, y, z) is pixel
[z, y, x] of the array (row y = 0 first, as in the image file). The ``pixel_unit`` is kept as
field data. Written with VTK's own XML writer (zlib-compressed), read back with its reader.

``microvae volume``: a periodic 3-D volume from 2-D micrographs (their statistics read from
files or a packed data set, matched by :mod:`microvae.reconstruct3d`), written as ``.vti`` or
``.npy`` with a report of what was asked for and what was reached, and of what sections do not
show (the connectivity of each phase through the volume, its Euler characteristic).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path, write_json
from ..errors import MicrovaeError
from ..h5io import dataset_info, open_h5
from ..modes import UNSEEDED_MODES, in_mode_order
from ..samplesfile import conditioned_keys, large_keys, stack_maps
from ..vti import write_vti
from . import EXPORT_FORMATS, phase_maps, real_test_windows

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


# --- volumes from 2-D micrographs (microvae volume) -------------------------------------


# the section planes a user names, by the axis normal to them (volumes are (z, y, x))
PLANE_NAMES = {"xy": 0, "xz": 1, "yz": 2}
OUTPUT_SUFFIXES = (".vti", ".npy")


def read_micrographs(paths: list[str], key: str, phase: str = "auto",
                     threshold: float | None = None) -> np.ndarray:
    """The 2-D binary phase maps of image files (a volume contributes its z sections), cut to
    the smallest shape among them (from the top left)."""
    from ..ingest import expand_paths, read_entries

    maps = []
    for path in expand_paths(paths, key):
        for entry in read_entries(path):
            binary = phase_maps(np.asarray(entry.array), entry.label, phase, threshold)
            maps.extend(binary if binary.ndim == 3 else [binary])
    height = min(m.shape[0] for m in maps)
    width = min(m.shape[1] for m in maps)
    return np.stack([m[:height, :width] for m in maps])


def statistics_of(images: np.ndarray, label: str, isotropic: bool, volume_side: int):
    """:func:`microvae.reconstruct3d.plane_statistics` at the default lags that fit the images
    and the volume (lags up to half the shorter side of either; fewer where they are small, said
    in the log)."""
    from ..reconstruct3d import LINEAL_LAGS, plane_statistics

    half = min(min(images.shape[1:]) // 2, (volume_side - 1) // 2)
    lags = tuple(lag for lag in LINEAL_LAGS if lag <= half)
    if len(lags) < 3:
        raise MicrovaeError(f"{label}: images of {images.shape[1]}x{images.shape[2]} px and a "
                            f"volume side of {volume_side} voxels are too small for a "
                            f"reconstruction (both at least {2 * LINEAL_LAGS[2] + 1})")
    r_max = min(24, half)
    if lags != LINEAL_LAGS or r_max < 24:
        log.info("%s: images of %dx%d px: statistics at lags up to %d px (S2) and %d px "
                 "(lineal path)", label, images.shape[1], images.shape[2], r_max, max(lags))
    return plane_statistics(images, r_max, lags, isotropic)


def reconstruct_from_sections(out: str | os.PathLike, shape: tuple[int, int, int],
                              images: list[str] | None = None,
                              planes: dict[str, list[str]] | None = None,
                              dataset: str | os.PathLike | None = None, split: str = "train",
                              steps: int | None = None, seed: int = 0, pixel_size: float = 1.0,
                              pixel_unit: str = "px", phase: str = "auto",
                              threshold: float | None = None,
                              report: str | os.PathLike | None = None) -> dict[str, Any]:
    """Reconstruct one periodic volume of ``shape`` (z, y, x) from micrographs: ``images`` (or
    the ``split`` of a packed ``dataset``) of a statistically isotropic structure, every section
    plane alike; or ``planes`` (``xy``, ``xz``, ``yz`` -> files) for one whose sections differ
    by orientation (planes without images are free). Writes ``out`` (.vti or .npy) and, given
    ``report``, a JSON report; returns the report."""
    import torch

    from ..h5io import load_split
    from ..reconstruct3d import (
        ReconstructionSettings,
        plane_targets,
        reconstruct_volume,
        section_s2,
    )
    from ..volumes import volume_descriptors

    out = Path(out)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise MicrovaeError(f"--out {out}: write a .vti (DAMASK, ParaView) or .npy file")
    sources = [images is not None, bool(planes), dataset is not None]
    if sum(sources) != 1:
        raise MicrovaeError("give exactly one of --images, --xy/--xz/--yz, --dataset")
    if len(shape) != 3 or min(shape) < 1:
        raise MicrovaeError(f"--shape: three positive sizes (z y x), got {list(shape)}")
    if images is not None:
        targets = statistics_of(read_micrographs(images, "--images", phase, threshold),
                                "--images", True, min(shape))
        inputs: dict[str, Any] = {"images": list(images)}
    elif dataset is not None:
        targets = statistics_of(load_split(dataset, split), f"{dataset} ({split})", True,
                                min(shape))
        inputs = {"dataset": str(dataset), "split": split}
    else:
        unknown = set(planes) - set(PLANE_NAMES)
        if unknown:
            raise MicrovaeError(f"unknown section planes {sorted(unknown)}; use {list(PLANE_NAMES)}")
        stacks = {name: read_micrographs(paths, f"--{name}", phase, threshold)
                  for name, paths in planes.items()}
        side = min(min(s.shape[1:]) for s in stacks.values())
        targets = {PLANE_NAMES[name]: statistics_of(stack[:, :side, :side], f"--{name}", False,
                                                    min(shape))
                   for name, stack in stacks.items()}
        inputs = {"planes": {name: list(paths) for name, paths in planes.items()}}
    settings = ReconstructionSettings() if steps is None else ReconstructionSettings(steps=steps)
    start = time.perf_counter()
    volume, losses = reconstruct_volume(targets, tuple(shape), torch.Generator().manual_seed(seed),
                                        settings)
    seconds = time.perf_counter() - start
    by_plane = plane_targets(targets)
    reached = {}
    for name, axis in PLANE_NAMES.items():
        if axis in by_plane:
            target = by_plane[axis]
            s2 = section_s2(torch.from_numpy(volume).double(), axis, target.r_max).numpy()
            reached[name] = {"s2_rms_difference": float(np.sqrt(np.mean((s2 - target.s2) ** 2))),
                             "target_phase_fraction": target.phase_fraction}
    result = {"out": str(out), "shape": list(shape), "seed": seed, "inputs": inputs,
              "settings": settings.__dict__, "phase_fraction": float(volume.mean()),
              "sections": reached, "loss_first": losses[0], "loss_last": losses[-1],
              "seconds": round(seconds, 1), "periodic": True,
              "pixel_size": pixel_size, "pixel_unit": pixel_unit,
              "volume": volume_descriptors(volume)}
    write_volume(out, volume, pixel_size, pixel_unit)
    if report is not None:
        write_json(report, result)
    log.info("%s: volume %s, phase fraction %.4f (asked %s), loss %.4g -> %.4g, %.0f s", out,
             "x".join(map(str, shape)), result["phase_fraction"],
             ", ".join(f"{r['target_phase_fraction']:.4f}" for r in reached.values()),
             losses[0], losses[-1], seconds)
    return result


VOLUME_MODES = ("diffusion", "field", "prior")


def write_volume(out: Path, volume: np.ndarray, pixel_size: float, pixel_unit: str) -> None:
    if out.suffix.lower() == ".vti":
        write_vti(out, volume, pixel_size, pixel_unit)
    else:
        with atomic_path(out) as tmp, open(tmp, "wb") as handle:
            np.save(handle, volume)


def generate_volume(out: str | os.PathLike, model_path: str | os.PathLike,
                    shape: tuple[int, int, int], mode: str = "diffusion", seed: int = 0,
                    periodic: bool = True, phase_fraction: float | None = None,
                    pixel_size: float = 1.0, pixel_unit: str = "px", slab_cells: int = 4,
                    report: str | os.PathLike | None = None,
                    calibrate: bool = True) -> dict[str, Any]:
    """One volume of ``shape`` (multiples of 8; of 32 and at least 64 for a periodic diffusion
    draw: the library's checks say so) from a conv3d model (``microvae train-volume``) and one
    of its priors (``mode``), periodic unless asked otherwise, decoded in slabs of
    ``slab_cells`` latent cells, cut at 0.5; written as ``.vti`` or ``.npy`` with a report. A
    target ``phase_fraction`` is met by the calibrated condition (``calibrate``; draws of a
    generator of their own, seeded ``seed + 1``), else asked for as it is."""
    import torch

    from ..diffusion import DiffusionPrior
    from ..field import FieldPrior
    from ..modelfile import load_model
    from ..volume_vae import generate_volumes, target_condition
    from ..volumes import volume_descriptors

    out = Path(out)
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise MicrovaeError(f"--out {out}: write a .vti (DAMASK, ParaView) or .npy file")
    if mode not in VOLUME_MODES:
        raise MicrovaeError(f"--mode: unknown mode {mode!r}; use one of {list(VOLUME_MODES)}")
    model, payload = load_model(model_path)
    if model.config.get("architecture") != "conv3d":
        raise MicrovaeError(f"{model_path}: a {model.config.get('architecture', 'table1')} "
                            "model makes 2-D images; --model takes a conv3d model (microvae "
                            "train-volume)")
    extra = payload["extra"]
    if mode == "diffusion" and "diffusion" not in extra:
        raise MicrovaeError(f"{model_path}: the model was trained without its diffusion "
                            "prior; use --mode field or prior, or train it with one")
    if phase_fraction is not None and mode != "diffusion":
        raise MicrovaeError("--phase-fraction needs --mode diffusion")
    prior = {"diffusion": lambda: DiffusionPrior.from_state(extra["diffusion"]),
             "field": lambda: FieldPrior.from_state(extra["field"]),
             "prior": lambda: None}[mode]()
    start = time.perf_counter()
    model = model.float()
    condition = phase_fraction
    if phase_fraction is not None and calibrate:
        condition = target_condition(model, prior, phase_fraction, tuple(shape),
                                     torch.Generator().manual_seed(seed + 1), periodic,
                                     slab_cells)
        log.info("target phase fraction %.4f: condition %.4f (calibrated)", phase_fraction,
                 condition)
    volume = generate_volumes(model, prior, 1, tuple(shape), torch.Generator().manual_seed(seed),
                              periodic, slab_cells, condition)[0]
    seconds = time.perf_counter() - start
    result = {"out": str(out), "model": str(model_path), "mode": mode, "shape": list(shape),
              "seed": seed, "periodic": periodic, "phase_fraction_asked": phase_fraction,
              "condition": condition, "calibrated": phase_fraction is not None and calibrate,
              "training_phase_fraction": extra.get("phase_fraction"),
              "phase_fraction": float(volume.mean()), "seconds": round(seconds, 1),
              "pixel_size": pixel_size, "pixel_unit": pixel_unit,
              "volume": volume_descriptors(volume)}
    write_volume(out, volume, pixel_size, pixel_unit)
    if report is not None:
        write_json(report, result)
    log.info("%s: %s volume %s from %s, phase fraction %.4f (training %.4f), %.1f s", out, mode,
             "x".join(map(str, shape)), model_path, result["phase_fraction"],
             extra.get("phase_fraction", float("nan")), seconds)
    return result
