"""Packing segmented tiles into the train/val/test HDF5 data set, and reading it back.

Tiles are split by *group* (one source file or volume), so that neighbouring slices of one
volume never sit on both sides of a split. Where a source has too few files for every split to
get one, each file is cut into contiguous blocks of slices that are split instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import MicrovaeError
from .h5io import open_h5, read_json_attr, write_arrays

SPLITS = ("train", "val", "test")


@dataclass
class SourceTiles:
    """The segmented tiles of one source with their origins (columns: file, axis, slice, y, x)."""

    name: str
    images: np.ndarray
    origin: np.ndarray


def check_fractions(fractions: dict[str, float]) -> None:
    total = sum(fractions[s] for s in SPLITS)
    if any(fractions[s] < 0 for s in SPLITS) or abs(total - 1.0) > 1e-6:
        raise MicrovaeError(f"split: fractions train/val/test must be >= 0 and sum to 1, "
                            f"got {[fractions[s] for s in SPLITS]} (sum {total:g})")


def tile_groups(origin: np.ndarray, blocks_per_file: int) -> np.ndarray:
    """Group id of each tile: its file, or (file, block of contiguous slices) when
    ``blocks_per_file`` > 1."""
    files = origin[:, 0].astype(np.int64)
    if blocks_per_file <= 1:
        return files
    key = origin[:, 1].astype(np.int64) * 1_000_000 + origin[:, 2]  # (axis, slice) order
    groups = np.empty(len(origin), dtype=np.int64)
    for f in np.unique(files):
        mask = files == f
        order = np.unique(key[mask])
        block = np.minimum((np.searchsorted(order, key[mask]) * blocks_per_file) // len(order),
                           blocks_per_file - 1)
        groups[mask] = f * blocks_per_file + block
    return groups


def assign_groups(sizes: dict[Any, int], fractions: dict[str, float],
                  rng: np.random.Generator) -> dict[Any, str]:
    """Assign whole groups to splits so that tile counts approach the fractions.

    Groups are visited in a seeded random order; each goes to the split furthest below its
    target. Every split with a positive fraction gets at least one group.
    """
    keys = list(sizes)
    order = [keys[i] for i in rng.permutation(len(keys))]
    total = sum(sizes.values())
    wanted = [s for s in SPLITS if fractions[s] > 0]
    counts = dict.fromkeys(SPLITS, 0)
    assignment: dict[Any, str] = {}
    # Smallest splits first get one group each, so that none stays empty.
    for split, key in zip(sorted(wanted, key=lambda s: fractions[s]), order):
        assignment[key] = split
        counts[split] += sizes[key]
    for key in order[len(wanted):]:
        split = max(wanted, key=lambda s: fractions[s] * total - counts[s])
        assignment[key] = split
        counts[split] += sizes[key]
    return assignment


def split_tiles(sources: Sequence[SourceTiles], fractions: dict[str, float], seed: int,
                blocks_per_file: int = 8) -> dict[str, np.ndarray]:
    """Split indices into the concatenated tiles of ``sources``: split name -> sorted indices."""
    check_fractions(fractions)
    n_wanted = sum(1 for s in SPLITS if fractions[s] > 0)
    n_files = sum(len(np.unique(s.origin[:, 0])) for s in sources)
    blocks = 1 if n_files >= n_wanted else blocks_per_file
    keys = np.concatenate([
        np.stack([np.full(len(s.origin), i), tile_groups(s.origin, blocks)], axis=1)
        for i, s in enumerate(sources)])
    group_keys = [tuple(k) for k in keys.tolist()]
    sizes: dict[Any, int] = {}
    for k in group_keys:
        sizes[k] = sizes.get(k, 0) + 1
    if len(sizes) < n_wanted:
        raise MicrovaeError(f"split: {len(sizes)} groups of tiles cannot fill {n_wanted} "
                            "non-empty splits; add images or set a split fraction to 0")
    assignment = assign_groups(sizes, fractions, np.random.default_rng(seed))
    labels = np.array([assignment[k] for k in group_keys])
    return {s: np.flatnonzero(labels == s) for s in SPLITS}


def pack(sources: Sequence[SourceTiles], path: str | os.PathLike, fractions: dict[str, float],
         seed: int, attrs: dict[str, Any]) -> dict[str, int]:
    """Write the train/val/test data set (uint8 {0,1}, (N,H,W)) to ``path`` atomically.

    Each split also gets ``{split}_origin`` (N, 6): source index, then the tile origin.
    Returns the number of tiles per split.
    """
    shapes = {s.images.shape[1:] for s in sources}
    if len(shapes) != 1:
        raise MicrovaeError(f"pack: sources have different tile shapes {sorted(shapes)}")
    images = np.concatenate([s.images for s in sources]).astype(np.uint8)
    origin = np.concatenate([
        np.concatenate([np.full((len(s.origin), 1), i, np.int32), s.origin], axis=1)
        for i, s in enumerate(sources)])
    index = split_tiles(sources, fractions, seed)
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        arrays[split] = images[index[split]]
        arrays[f"{split}_origin"] = origin[index[split]]
    counts = {s: int(len(index[s])) for s in SPLITS}
    write_arrays(path, arrays, attrs={
        **attrs, "sources": [s.name for s in sources], "split_fractions": fractions,
        "split_seed": seed, "split_counts": counts, "image_size": list(images.shape[1:]),
        "origin_columns": ["source", "file", "axis", "slice", "y", "x"],
    })
    return counts


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


def evenly_spaced(images: np.ndarray, n: int | None) -> np.ndarray:
    """At most ``n`` images, evenly spaced over the array (all of them if ``n`` is None or
    not smaller): a fixed, seed-free subset that bounds the cost of a pass over a large set."""
    if not n or n >= len(images):
        return images
    return images[np.linspace(0, len(images) - 1, n).astype(int)]


def dataset_info(path: str | os.PathLike) -> dict[str, Any]:
    """The attributes of a packed data set (sources, pixel size, split counts, ...)."""
    with open_h5(path, required=SPLITS) as h5:
        return {k: read_json_attr(h5, k) for k in h5.attrs}
