"""HDF5 files: atomic writes of named arrays with attributes, checked reads, and the splits of
a packed data set."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .atomic import atomic_path
from .errors import MicrovaeError


def encode_attr(value: Any) -> Any:
    """HDF5 attributes hold numbers, strings and arrays; everything else goes in as JSON."""
    if isinstance(value, (str, int, float, bool, np.generic, np.ndarray)):
        return value
    return json.dumps(value, sort_keys=True)


def write_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                 attrs: Mapping[str, Any] | None = None) -> None:
    """Write ``arrays`` (name -> array, names may contain '/') to ``path`` atomically.

    Image stacks (3-D arrays) are stored chunked one image per chunk row and compressed.
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for name, array in arrays.items():
            array = np.asarray(array)
            kwargs: dict[str, Any] = {}
            if array.ndim == 3 and array.shape[0] > 0:
                kwargs = dict(chunks=(min(16, array.shape[0]),) + array.shape[1:],
                              compression="gzip", compression_opts=4, shuffle=True)
            h5.create_dataset(name, data=array, **kwargs)
        for key, value in (attrs or {}).items():
            h5.attrs[key] = encode_attr(value)


def open_h5(path: str | os.PathLike, required: tuple[str, ...] = ()) -> h5py.File:
    """Open an HDF5 file for reading; a clear error if it is missing, corrupt or incomplete."""
    path = Path(path)
    if not path.exists():
        raise MicrovaeError(f"{path}: file not found")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise MicrovaeError(f"{path}: not a readable HDF5 file ({exc})") from exc
    for name in required:
        if name not in h5:
            h5.close()
            raise MicrovaeError(f"{path}: dataset '{name}' is missing")
    return h5


def read_json_attr(h5: h5py.File | h5py.Dataset, key: str, default: Any = None) -> Any:
    """Read an attribute written by :func:`encode_attr` (JSON strings decoded)."""
    if key not in h5.attrs:
        return default
    value = h5.attrs[key]
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


SPLITS = ("train", "val", "test")


def load_split(path: str | os.PathLike, split: str) -> np.ndarray:
    """One split of a packed data set as a uint8 array (N, H, W); error if missing or empty."""
    if split not in SPLITS:
        raise MicrovaeError(f"unknown split {split!r}; use one of {SPLITS}")
    with open_h5(path, required=(split,)) as h5:
        images = h5[split][()]
    if images.ndim != 3 or images.shape[0] == 0:
        raise MicrovaeError(f"{path}: split '{split}' is empty (shape {images.shape}); "
                            "change the split fractions or add images")
    return images


def load_origin(path: str | os.PathLike, split: str) -> np.ndarray | None:
    """Where each image of a split was cut (N, 6): source, file, axis, slice, y, x; None for a
    data set packed without it."""
    with open_h5(path) as h5:
        key = f"{split}_origin"
        return h5[key][()] if key in h5 else None


def load_placement(path: str | os.PathLike, split: str) -> dict[str, np.ndarray | None]:
    """Where the images of a split lie: ``origin`` (N, 6: source, file, axis, slice, y, x),
    ``corner`` (N, 3: first voxel z, y, x in its file) and ``group`` (N,: its file, volume or
    user group); None for what a data set packed by an older version lacks."""
    with open_h5(path) as h5:
        return {name: h5[f"{split}_{name}"][()] if f"{split}_{name}" in h5 else None
                for name in ("origin", "corner", "group")}


def load_training_regions(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray] | None:
    """The training regions of a packed data set and their mask (uint8 (S, H, W) each), or
    None for a data set packed before they were kept."""
    with open_h5(path) as h5:
        if "train_regions" not in h5 or "train_regions_mask" not in h5:
            return None
        return h5["train_regions"][()], h5["train_regions_mask"][()]


def dataset_info(path: str | os.PathLike) -> dict[str, Any]:
    """The attributes of a packed data set (sources, pixel size, split counts, ...)."""
    with open_h5(path, required=SPLITS) as h5:
        return {k: read_json_attr(h5, k) for k in h5.attrs}
