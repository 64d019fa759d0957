"""The train/val/test data set: which tiles go to which split (the file is written and read
by :mod:`microvae.h5io`).

Tiles are split by *group*: one source file or volume, or the files that a source's ``group``
option puts together (serial sections of one volume), so that neighbouring sections never sit
on both sides of a split. A source with fewer groups than there are splits is split in space
instead: every group is cut into slabs (strips of a 2-D image, slabs of a volume along an axis
that no section is cut along), one per split, with a gap of at least one tile between slabs of
different splits; tiles in the gaps are left out, and the slabs are recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import MicrovaeError
from .h5io import SPLITS

REGION_COLUMNS = ("source", "group", "split", "axis", "start", "stop")
# A section: one 2-D image or one slice of a volume along one axis (origin columns 0-3).
SECTION_COLUMNS = ("source", "file", "axis", "slice")

log = logging.getLogger(__name__)


@dataclass
class SourceTiles:
    """The segmented tiles of one source with their origins (columns: entry, axis, slice, y, x),
    their first voxel in their entry's array (z, y, x; needed for a split in space) and the
    group label of each entry (default: every entry its own group)."""

    name: str
    images: np.ndarray
    origin: np.ndarray
    corner: np.ndarray | None = None
    groups: list[str] | None = None

    def tile_groups(self) -> tuple[np.ndarray, list[str]]:
        """Group index of each tile and the group labels, in order of first appearance."""
        entries = self.origin[:, 0].astype(np.int64)
        if self.groups is None:
            order = list(dict.fromkeys(entries.tolist()))
            position = {e: i for i, e in enumerate(order)}
            return np.array([position[e] for e in entries.tolist()], np.int64), \
                [str(e) for e in order]
        labels = list(dict.fromkeys(self.groups))
        entry_group = np.array([labels.index(g) for g in self.groups], np.int64)
        return entry_group[entries], labels


@dataclass
class Region:
    """A slab of one group that went to one split: voxels [start, stop) along ``axis``."""

    source: int
    group: int
    split: str
    axis: int
    start: int
    stop: int


@dataclass
class Split:
    """Indices into the concatenated tiles of the sources, per split, and how they were made."""

    index: dict[str, np.ndarray]
    mode: dict[str, str]  # source name -> "groups" or "regions"
    regions: list[Region] = field(default_factory=list)
    in_gaps: dict[str, int] = field(default_factory=dict)  # tiles left out, per source


def check_fractions(fractions: dict[str, float]) -> None:
    total = sum(fractions[s] for s in SPLITS)
    if any(fractions[s] < 0 for s in SPLITS) or abs(total - 1.0) > 1e-6:
        raise MicrovaeError(f"split: fractions train/val/test must be >= 0 and sum to 1, "
                            f"got {[fractions[s] for s in SPLITS]} (sum {total:g})")


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


def region_runs(starts: np.ndarray, size: int, fractions: dict[str, float],
                what: str) -> dict[str, tuple[int, int]]:
    """Consecutive runs of tile positions ``starts`` (sorted, unique, px) for each split with a
    positive fraction, in the order train, val, test, in proportion to the fractions (at least
    one position each) and with a gap of at least ``size`` px between the last tile of a run and
    the first tile of the next. Returns split -> (first, last) index into ``starts``."""
    wanted = [s for s in SPLITS if fractions[s] > 0]
    n = len(starts)
    gap = int(np.count_nonzero((starts > starts[0]) & (starts < starts[0] + 2 * size)))
    available = n - gap * (len(wanted) - 1)
    counts = {s: max(1, int(round(fractions[s] * available))) for s in wanted[1:]}
    counts[wanted[0]] = available - sum(counts.values())
    runs: dict[str, tuple[int, int]] = {}
    first = 0
    for k, split in enumerate(wanted):
        if k > 0:
            first = int(np.searchsorted(starts, starts[runs[wanted[k - 1]][1]] + 2 * size))
        last = n - 1 if k == len(wanted) - 1 else first + counts[split] - 1
        if counts[wanted[0]] < 1 or first > last or last >= n:
            extent = int(starts[-1] - starts[0]) + size
            raise MicrovaeError(
                f"{what}: {extent} px hold {n} tile positions along the split axis, too few for "
                f"{len(wanted)} regions ({', '.join(wanted)}) of at least one {size} px tile each "
                "with a gap of one tile between them; lower image_size or add images (a "
                "lower stride does not help: the gaps are whole tiles)")
        runs[split] = (first, last)
    return runs


def split_in_space(source: SourceTiles, group_of_tile: np.ndarray, labels: list[str],
                   fractions: dict[str, float], source_index: int
                   ) -> tuple[np.ndarray, list[Region]]:
    """Split label of each tile of a source ('' in a gap) and the slabs, group by group."""
    if source.corner is None:
        raise MicrovaeError(f"{source.name}: the segmented tiles carry no corner table (made by "
                            "an older version): re-run ingest and segment")
    size = int(source.images.shape[-1])
    label_of_tile = np.full(len(source.images), "", dtype=object)
    regions = []
    for g, group_label in enumerate(labels):
        rows = np.flatnonzero(group_of_tile == g)
        cut = {0 if a < 0 else int(a) for a in np.unique(source.origin[rows, 1])}
        free = [a for a in range(3) if a not in cut]
        if not free:
            raise MicrovaeError(
                f"{group_label}: too few files or volumes in source '{source.name}' for whole-file "
                "splits, and this volume is cut along every axis, so that no slab of it is free "
                "of sections of another split; cut it along fewer axes, or add volumes")
        corner = source.corner[rows]
        extents = [corner[:, a].max() - corner[:, a].min() for a in free]
        axis = free[int(np.argmax(extents))]
        starts = np.unique(corner[:, axis])
        runs = region_runs(starts, size, fractions, f"{group_label} (source '{source.name}')")
        for split, (first, last) in runs.items():
            inside = (corner[:, axis] >= starts[first]) & (corner[:, axis] <= starts[last])
            label_of_tile[rows[inside]] = split
            regions.append(Region(source_index, g, split, axis, int(starts[first]),
                                  int(starts[last]) + size))
    return label_of_tile, regions


def check_room_for_splits(source: SourceTiles) -> None:
    """What pack will need of any split, checked as soon as a source's tiles exist (at
    ingest, before the slower stages): a source of fewer groups than splits is split in
    space, which needs room for one slab per split with a gap between them. Pack checks the
    configured fractions again (uneven ones can need more room)."""
    group_of_tile, labels = source.tile_groups()
    if len(labels) < len(SPLITS):
        split_in_space(source, group_of_tile, labels, dict.fromkeys(SPLITS, 1 / len(SPLITS)), 0)


def split_tiles(sources: Sequence[SourceTiles], fractions: dict[str, float], seed: int) -> Split:
    """Split the concatenated tiles of ``sources`` (see the module docstring).

    A source with at least as many groups as splits with a positive fraction is split by whole
    groups; one with fewer is split in space. Every source is represented in every split.
    """
    check_fractions(fractions)
    n_wanted = sum(1 for s in SPLITS if fractions[s] > 0)
    rng = np.random.default_rng(seed)
    labels_per_source, mode, regions, in_gaps = [], {}, [], {}
    for i, source in enumerate(sources):
        group_of_tile, labels = source.tile_groups()
        if len(labels) >= n_wanted:
            sizes: dict[int, int] = {}
            for g in group_of_tile.tolist():
                sizes[g] = sizes.get(g, 0) + 1
            assignment = assign_groups(sizes, fractions, rng)
            labels_per_source.append(np.array([assignment[g] for g in group_of_tile.tolist()],
                                              dtype=object))
            mode[source.name] = "groups"
        else:
            label_of_tile, source_regions = split_in_space(source, group_of_tile, labels,
                                                           fractions, i)
            labels_per_source.append(label_of_tile)
            regions.extend(source_regions)
            mode[source.name] = "regions"
            in_gaps[source.name] = int(np.count_nonzero(label_of_tile == ""))
            log.info("source '%s': %d group(s) for %d splits: split in space into slabs "
                     "(%d of %d tiles lie in the gaps between slabs and are left out)",
                     source.name, len(labels), n_wanted, in_gaps[source.name],
                     len(label_of_tile))
    split_of_tile = np.concatenate(labels_per_source)
    index = {s: np.flatnonzero(split_of_tile == s) for s in SPLITS}
    return Split(index, mode, regions, in_gaps)


def pack(sources: Sequence[SourceTiles], fractions: dict[str, float], seed: int
         ) -> tuple[dict[str, np.ndarray], dict[str, Any], Split]:
    """The train/val/test data set of the sources: its arrays, its attributes and the split.

    Arrays: each split (uint8 {0,1}, (N,H,W)) with ``{split}_origin`` (N, 6): source index,
    then the tile origin, ``{split}_group`` (N,): the group of each tile (source index x 10^6
    + its group within the source), and, where known, ``{split}_corner`` (N, 3); ``regions`` lists the
    slabs of a split in space (columns :data:`REGION_COLUMNS`, split as its index in
    :data:`SPLITS`).
    """
    shapes = {s.images.shape[1:] for s in sources}
    if len(shapes) != 1:
        raise MicrovaeError(f"pack: sources have different tile shapes {sorted(shapes)}")
    images = np.concatenate([s.images for s in sources]).astype(np.uint8)
    # one label per tile for its group (file, volume or user group) across the sources
    group = np.concatenate([i * 1_000_000 + s.tile_groups()[0] for i, s in enumerate(sources)])
    origin = np.concatenate([
        np.concatenate([np.full((len(s.origin), 1), i, np.int32), s.origin], axis=1)
        for i, s in enumerate(sources)])
    corner = None
    if all(s.corner is not None for s in sources):
        corner = np.concatenate([s.corner for s in sources]).astype(np.int32)
    split = split_tiles(sources, fractions, seed)
    arrays: dict[str, np.ndarray] = {}
    for name in SPLITS:
        arrays[name] = images[split.index[name]]
        arrays[f"{name}_origin"] = origin[split.index[name]]
        arrays[f"{name}_group"] = group[split.index[name]].astype(np.int64)
        if corner is not None:
            arrays[f"{name}_corner"] = corner[split.index[name]]
    regions, covered, sections = training_regions(arrays["train"], arrays["train_origin"])
    arrays.update(train_regions=regions, train_regions_mask=covered,
                  train_regions_section=sections)
    arrays["regions"] = np.array(
        [(r.source, r.group, SPLITS.index(r.split), r.axis, r.start, r.stop)
         for r in split.regions], np.int64).reshape(-1, len(REGION_COLUMNS))
    counts = {s: int(len(split.index[s])) for s in SPLITS}
    attrs = {
        "sources": [s.name for s in sources], "split_fractions": fractions,
        "split_seed": seed, "split_counts": counts, "image_size": list(images.shape[1:]),
        "origin_columns": ["source", "file", "axis", "slice", "y", "x"],
        "split_mode": split.mode, "tiles_in_gaps": split.in_gaps,
        "region_columns": list(REGION_COLUMNS),
        "groups": {s.name: s.tile_groups()[1] for s in sources},
        "train_regions_section_columns": list(SECTION_COLUMNS),
    }
    return arrays, attrs, split


def evenly_spaced(images: np.ndarray, n: int | None) -> np.ndarray:
    """At most ``n`` images, evenly spaced over the array (all of them if ``n`` is None or
    not smaller): a fixed, seed-free subset that bounds the cost of a pass over a large set."""
    if not n or n >= len(images):
        return images
    return images[np.linspace(0, len(images) - 1, n).astype(int)]


def training_regions(images: np.ndarray, origin: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training tiles put back where they were cut: one canvas per section (source, file,
    axis, slice) with the tiles at their origin (y, x), and a mask of the pixels they cover.

    Random training crops are drawn where the mask is 1, so that a crop never holds a pixel of
    another split (the gaps between slabs and the whole-file split keep those out of the mask).
    Where tiles overlap (stride below the tile size) the later tile's pixels are kept: the
    segmentation of each tile is its own, so overlaps may differ at a few boundary pixels.
    Returns ``(canvases, mask, sections)``: uint8 (S, H, W) padded to the largest section, the
    uint8 mask of the same shape, and the section of each canvas (S, 4) in
    :data:`SECTION_COLUMNS`.
    """
    size_y, size_x = images.shape[1:]
    if len(images) == 0:
        return (np.zeros((0, size_y, size_x), np.uint8), np.zeros((0, size_y, size_x), np.uint8),
                np.zeros((0, len(SECTION_COLUMNS)), np.int64))
    keys, section_of_tile = np.unique(origin[:, :4].astype(np.int64), axis=0, return_inverse=True)
    section_of_tile = section_of_tile.reshape(-1)
    corners = origin[:, 4:6].astype(np.int64)
    height = int(corners[:, 0].max()) + size_y
    width = int(corners[:, 1].max()) + size_x
    canvases = np.zeros((len(keys), height, width), np.uint8)
    mask = np.zeros_like(canvases)
    for tile, section, (y, x) in zip(images, section_of_tile.tolist(), corners.tolist()):
        canvases[section, y:y + size_y, x:x + size_x] = tile
        mask[section, y:y + size_y, x:x + size_x] = 1
    return canvases, mask, keys


# The real-vs-real floor needs this many independent blocks of real images (see
# :func:`independent_blocks`).
MIN_BLOCKS = 8


def tile_extents(origin: np.ndarray, corner: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The box (z, y, x) each tile occupies in its entry's array: ``(low, high)`` (N, 3), one
    voxel thick along the axis its section was cut along (a 2-D image: z)."""
    low = np.asarray(corner, np.int64)
    axis = np.asarray(origin[:, -4], np.int64)  # the axis column of the origin
    axis = np.where(axis < 0, 0, axis)
    extent = np.full(low.shape, size, np.int64)
    extent[np.arange(len(low)), axis] = 1
    return low, low + extent


def _slab_counts(low: np.ndarray, high: np.ndarray, wanted: int, gap: int) -> list[int]:
    """Slabs per axis for a group: added one at a time on the axis whose slabs stay thickest
    (in px), while every slab still holds a tile."""
    counts = [1, 1, 1]
    while int(np.prod(counts)) < wanted:
        sizes = {}
        for a in range(3):
            runs = _slab_runs(low[:, a], high[:, a], counts[a] + 1, gap)
            if runs is not None:
                starts = np.unique(low[:, a])
                sizes[a] = min(high[:, a][low[:, a] <= starts[last]].max() - starts[first]
                               for first, last in runs)
        if not sizes:
            break
        counts[max(sizes, key=sizes.get)] += 1
    return counts


def _slab_runs(low: np.ndarray, high: np.ndarray, n: int, gap: int
               ) -> list[tuple[int, int]] | None:
    """``n`` runs of consecutive tile positions along one axis (indices into the sorted
    distinct positions), as equal as they can be, the next run starting at least ``gap`` px
    after the end of the tiles of the one before; None where ``n`` do not fit."""
    starts = np.unique(low)
    ends = np.array([high[low == s].max() for s in starts])
    for per_run in range(len(starts) // n, 0, -1):
        runs, first = [], 0
        for k in range(n):
            last = len(starts) - 1 if k == n - 1 else first + per_run - 1
            if first > last or last >= len(starts):
                break
            runs.append((first, last))
            first = int(np.searchsorted(starts, ends[first:last + 1].max() + gap))
        if len(runs) == n:
            return runs
    return None


def independent_blocks(origin: np.ndarray, corner: np.ndarray, size: int, gap: int,
                       groups: np.ndarray | None = None, min_blocks: int = MIN_BLOCKS
                       ) -> np.ndarray:
    """Blocks of real tiles that are independent of each other, for the real-vs-real floor:
    the label of each tile's block, -1 for a tile in a gap between blocks.

    Blocks are the groups (files or volumes; ``groups``: one label per tile, default the
    source and file of its origin) where there are at least ``min_blocks`` of them. Otherwise
    each group is cut into boxes, along the axes where it is largest, with ``gap`` px between
    boxes (at least the correlation length, so that neighbouring boxes share no structure); a
    tile in a gap is left out.
    """
    origin = np.asarray(origin)
    if groups is None:
        groups = origin[:, 0].astype(np.int64) * 1_000_000 + origin[:, 1].astype(np.int64)
    group_labels, group_of_tile = np.unique(groups, return_inverse=True)
    group_of_tile = group_of_tile.reshape(-1)
    if len(group_labels) >= min_blocks:
        return group_of_tile.astype(np.int64)
    low, high = tile_extents(origin, corner, size)
    wanted = int(np.ceil(min_blocks / len(group_labels)))
    labels = np.full(len(origin), -1, np.int64)
    for g in range(len(group_labels)):
        rows = np.flatnonzero(group_of_tile == g)
        lo, hi = low[rows], high[rows]
        counts = _slab_counts(lo, hi, wanted, gap)
        cell = np.zeros(len(rows), np.int64)
        inside = np.ones(len(rows), bool)
        for a in range(3):
            if counts[a] == 1:
                continue
            runs = _slab_runs(lo[:, a], hi[:, a], counts[a], gap)
            starts = np.unique(lo[:, a])
            position = np.searchsorted(starts, lo[:, a])
            slab = np.full(len(rows), -1, np.int64)
            for k, (first, last) in enumerate(runs):
                slab[(position >= first) & (position <= last)] = k
            inside &= slab >= 0
            cell = cell * counts[a] + np.maximum(slab, 0)
        labels[rows[inside]] = g * 1000 + cell[inside]
    return labels


def stacked_volumes(canvases: np.ndarray, mask: np.ndarray, sections: np.ndarray,
                    min_depth: int = 8) -> list[tuple[np.ndarray, np.ndarray, tuple[int, ...]]]:
    """The sections of :func:`training_regions` stacked back into volumes: per (source, file,
    axis) each run of consecutive slices of at least ``min_depth`` becomes a volume (slices,
    H, W) with its mask (the voxels of the split); returns ``(volume, mask, (source, file, axis,
    first slice))`` per run. Shorter runs (and 2-D images, one slice each) are left out: the
    caller says how many were."""
    out = []
    keys = sections[:, :3]
    for key in np.unique(keys, axis=0):
        rows = np.flatnonzero((keys == key).all(1))
        rows = rows[np.argsort(sections[rows, 3])]
        slices = sections[rows, 3]
        breaks = np.flatnonzero(np.diff(slices) != 1) + 1
        for run in np.split(rows, breaks):
            if len(run) >= min_depth:
                out.append((canvases[run], mask[run],
                            tuple(int(v) for v in key) + (int(sections[run[0], 3]),)))
    return out
