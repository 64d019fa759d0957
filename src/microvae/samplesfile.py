"""The samples file (samples.h5, written by the sample stage): the one owner of its layout.

Every generated stack holds the decoder's probabilities of phase 1 (float16 on disk):

- ``{mode}`` for the unseeded modes (:data:`~microvae.modes.UNSEEDED_MODES`) and ``posterior``
  at the training size, with their latent codes under ``{mode}_z``;
- ``noise/{sigma}``, ``interpolation/midpoint`` and ``interpolation/path`` (the real test
  images they start from: ``posterior_index``, ``noise_index``, ``interpolation/pairs``),
  ``reconstruction`` of every test image (``reconstruction_bce`` per image);
- ``large/{mode}_{size}``: images larger than the tiles;
- ``conditioned/diffusion_{target}_{size}`` and ``graded/diffusion_{size}``: generated at a
  target phase fraction or map, the target under ``targets/{key}``.

Where the stage finished them, a stack's phase maps (uint8 0/1) lie under ``finished/{key}``
and the record of each calibration under ``finish/{calibration}/``; fits lie under
``{mode}_fit/``. The other modules build and read keys only through this one.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .h5io import write_arrays
from .modes import UNSEEDED_MODES

FINISHED = "finished"
FINISH = "finish"
RECONSTRUCTION = "reconstruction"
RECONSTRUCTION_BCE = "reconstruction_bce"
POSTERIOR = "posterior"
POSTERIOR_INDEX = "posterior_index"
NOISE = "noise"
NOISE_INDEX = "noise_index"
INTERPOLATION_MIDPOINT = "interpolation/midpoint"
INTERPOLATION_PATH = "interpolation/path"
INTERPOLATION_PAIRS = "interpolation/pairs"
LARGE = "large"
CONDITIONED = "conditioned"
GRADED = "graded"
TARGETS = "targets"
# The condition each conditioned or graded stack was drawn with (its target, calibrated).
CONDITIONS = "conditions"
STORAGE = ("every image stack: float16 probabilities of phase 1 in [0, 1]; with match_training "
           f"its phase maps (uint8 0/1) under {FINISHED}/ and the calibration of each finishing "
           f"under {FINISH}/")


def noise_key(sigma: float) -> str:
    return f"{NOISE}/{sigma:g}"


def large_key(mode: str, size: int) -> str:
    return f"{LARGE}/{mode}_{size}"


def conditioned_key(target: float, size: int) -> str:
    return f"{CONDITIONED}/diffusion_{target:g}_{size}"


def graded_key(size: int) -> str:
    return f"{GRADED}/diffusion_{size}"


def target_key(key: str) -> str:
    """Where the target of a conditioned or graded stack lies."""
    return f"{TARGETS}/{key}"


def condition_key(key: str) -> str:
    """Where the condition a conditioned or graded stack was drawn with lies (the target moved
    by the calibration of sample.calibrate_targets)."""
    return f"{CONDITIONS}/{key}"


def conditions_of(arrays) -> dict[str, np.ndarray]:
    """Key of each conditioned or graded stack -> the condition it was drawn with."""
    return {k.split("/", 1)[1]: arrays[k] for k in arrays if k.startswith(f"{CONDITIONS}/")}


def latent_key(mode: str) -> str:
    return f"{mode}_z"


def fit_key(mode: str, name: str) -> str:
    return f"{mode}_fit/{name}"


def finished_key(key: str) -> str:
    return f"{FINISHED}/{key}"


def finish_key(calibration: str, name: str) -> str:
    return f"{FINISH}/{calibration}/{name}"


def set_name(key: str) -> str:
    """The name of a generated set in tables and file names: its key with ``_`` for ``/``
    (``noise/0.5`` -> ``noise_0.5``); large sets keep their ``{mode}_{size}``."""
    return key.split("/", 1)[1] if key.startswith(f"{LARGE}/") else key.replace("/", "_")


def image_keys(arrays) -> list[str]:
    """The keys of the generated image stacks among the arrays of a samples file (a dict of
    arrays, or an open HDF5 file's flattened key list)."""
    groups = (f"{NOISE}/", INTERPOLATION_MIDPOINT, INTERPOLATION_PATH, f"{LARGE}/",
              f"{CONDITIONED}/", f"{GRADED}/")
    return [k for k in arrays if k in (*UNSEEDED_MODES, POSTERIOR, RECONSTRUCTION)
            or k.startswith(groups)]


def calibration_of(key: str) -> str:
    """The calibration that finishes a stack: its own prior's for the unseeded modes
    (``large/{mode}_{size}`` too), the unconditional diffusion prior's for the conditioned and
    graded sets (it does not force their target), ``encoded`` (posterior draws of training
    images) for every set made from encoded images."""
    if key.startswith((f"{CONDITIONED}/", f"{GRADED}/")):
        return "diffusion"
    mode = key.split("/", 1)[1].rsplit("_", 1)[0] if key.startswith(f"{LARGE}/") else key
    return mode if mode in UNSEEDED_MODES else "encoded"


def finish_records(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Calibration -> its record (threshold, draws, phase fractions after each step)."""
    records: dict[str, dict[str, float]] = {}
    for key, value in arrays.items():
        if key.startswith(f"{FINISH}/"):
            _, calibration, name = key.split("/", 2)
            records.setdefault(calibration, {})[name] = float(value)
    return records


def write_samples(path: str | os.PathLike, arrays: dict[str, np.ndarray],
                  attrs: dict[str, Any]) -> None:
    """Write generated arrays: image stacks as float16 probabilities, the rest as they are."""
    images = set(image_keys(arrays))
    stored = {name: array.astype(np.float16) if name in images else array
              for name, array in arrays.items()}
    write_arrays(path, stored, attrs={**attrs, "storage": STORAGE})


# Reading an open samples file (h5py.File)

def stack_maps(h5, key: str) -> tuple[np.ndarray, bool]:
    """The phase maps (uint8) of a stack: finished where the sample stage finished it, else cut
    at 0.5; and whether they were finished."""
    if FINISHED in h5 and key in h5[FINISHED]:
        return h5[FINISHED][key][()].astype(np.uint8), True
    return (h5[key][()] > 0.5).astype(np.uint8), False


def judged_keys(h5) -> dict[str, str]:
    """Set name -> key of every set at the training size that the evaluation judges."""
    keys = {name: name for name in (*UNSEEDED_MODES, POSTERIOR) if name in h5}
    if NOISE in h5:
        for sigma in sorted(h5[NOISE], key=float):
            keys[f"{NOISE}_{sigma}"] = f"{NOISE}/{sigma}"
    if INTERPOLATION_MIDPOINT in h5:
        keys[set_name(INTERPOLATION_MIDPOINT)] = INTERPOLATION_MIDPOINT
    if RECONSTRUCTION in h5:
        keys[RECONSTRUCTION] = RECONSTRUCTION
    return keys


def seed_indices(h5) -> dict[str, tuple[np.ndarray, int | None]]:
    """Set name -> the real test images its images started from: (index per seed image, draws
    per seed image) for posterior and noise sets, (pairs, None) for interpolation midpoints."""
    seeds: dict[str, tuple[np.ndarray, int | None]] = {}
    if POSTERIOR_INDEX in h5 and POSTERIOR in h5:
        seeds[POSTERIOR] = h5[POSTERIOR_INDEX][()], h5[POSTERIOR].shape[1]
    if NOISE_INDEX in h5 and NOISE in h5:
        for sigma in h5[NOISE]:
            seeds[f"{NOISE}_{sigma}"] = h5[NOISE_INDEX][()], h5[NOISE][sigma].shape[1]
    if INTERPOLATION_PAIRS in h5:
        seeds[set_name(INTERPOLATION_MIDPOINT)] = h5[INTERPOLATION_PAIRS][()], None
    return seeds


def large_keys(h5) -> dict[str, str]:
    """``{mode}_{size}`` -> key of every large set."""
    return {name: f"{LARGE}/{name}" for name in h5.get(LARGE, {})}


def conditioned_keys(h5) -> dict[str, str]:
    """``{group}_{name}`` -> key of every set generated at a target (conditioned, graded)."""
    return {f"{group}_{name}": f"{group}/{name}" for group in (CONDITIONED, GRADED)
            for name in h5.get(group, {})}


def finish_record(h5, calibration: str) -> dict[str, float]:
    """The record of one calibration (:meth:`~microvae.sample.Finishing.record`)."""
    group = h5[f"{FINISH}/{calibration}"]
    return {name: float(group[name][()]) for name in group}


def target_of(h5, key: str) -> np.ndarray:
    return h5[target_key(key)][()]
