"""Copy detection: how close generated images come to the training data, against how close
held-out real images come.

For each image, the nearest window of the training canvases (the training tiles put back in
place, :func:`microvae.dataset.training_regions`) over *every* translation inside the training
mask and the 8 rotations and reflections, measured by the IoU of phase 1. A search over every
translation at full resolution costs a correlation per canvas pixel and query (1e12 operations
for the default); it is done in two steps that find the same windows for copies:

1. coarse: queries and canvases average-pooled by p = tile / 8 (8 x 8 cells per query); the
   proxy IoU of every pooled window (translations in steps of p) by one convolution, keeping
   the best :data:`CANDIDATES` windows per query and transform;
2. fine: the exact IoU at every translation within p // 2 + 1 px of each candidate.

Images with less than :data:`NEAR_EMPTY` of either phase have no shape to copy (an all-matrix
tile equals every all-matrix window): they are counted and left out of the statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from .errors import MicrovaeError

CANDIDATES = 8
# Cells per side of a pooled query in the coarse search (8: finer cells than 4, which missed
# shifted copies; cells averaging twice the step missed more).
CELLS = 8
NEAR_EMPTY = 0.02
# The coarse search scores at most about this many pooled windows per query: where the
# canvases hold more, it visits every k-th canvas. The fine search visits the canvases within
# k // 2 + 1 of each candidate's (the canvases are ordered by section, so these are the
# neighbouring sections of a volume, which differ little, and where the best window of a
# near-duplicate section lies).
COARSE_WINDOWS = 2**18
# Canvases scored per matrix product of the coarse search.
CHUNK_VALUES = 2**25


def dihedral(images: np.ndarray) -> np.ndarray:
    """The 8 rotations and reflections of each square image, (8, N, H, W) (4 of them, the ones
    that keep the shape, for non-square images)."""
    turns = [images, images[:, ::-1], images[:, :, ::-1], images[:, ::-1, ::-1]]
    if images.shape[1] == images.shape[2]:
        swapped = np.swapaxes(images, 1, 2)
        turns += [swapped, swapped[:, ::-1], swapped[:, :, ::-1], swapped[:, ::-1, ::-1]]
    return np.stack(turns)


def near_empty(images: np.ndarray) -> np.ndarray:
    """Images with less than :data:`NEAR_EMPTY` of one of the phases, (N,) bool."""
    phi = images.reshape(len(images), -1).mean(1)
    return np.minimum(phi, 1 - phi) < NEAR_EMPTY


def box_sums(images: torch.Tensor, size: int) -> torch.Tensor:
    """Sum of every ``size`` x ``size`` window of each image (S, H, W) -> (S, H - size + 1,
    W - size + 1), from the integral image."""
    integral = F.pad(images.float().cumsum(1).cumsum(2), (1, 0, 1, 0))  # exact below 2^24
    return (integral[:, size:, size:] - integral[:, :-size, size:]
            - integral[:, size:, :-size] + integral[:, :-size, :-size])


def patch_keys(images: np.ndarray, patch: int, stride: int = 1) -> np.ndarray:
    """A 64-bit key of every ``patch`` x ``patch`` patch of binary images (N, H, W) at a step
    of ``stride``: sum over the patch's phase-1 pixels (i, j) of u_i v_j (mod 2^64), u and v
    fixed random numbers, so that equal patches have equal keys and different ones almost never
    do (a match is verified pixel by pixel anyway). Separable: a pass along the rows, then one
    along the columns. (N, rows, cols)."""
    u, v = np.random.default_rng(20261129).integers(1, 2**63, (2, patch), dtype=np.uint64)
    n, height, width = images.shape
    rows = (height - patch) // stride + 1
    cols = (width - patch) // stride + 1
    ones = images.astype(np.uint64)
    along = np.zeros((n, height, cols), np.uint64)
    keys = np.zeros((n, rows, cols), np.uint64)
    with np.errstate(over="ignore"):
        for j in range(patch):
            along += ones[:, :, j:j + (cols - 1) * stride + 1:stride] * v[j]
        for i in range(patch):
            keys += along[:, i:i + (rows - 1) * stride + 1:stride] * u[i]
    return keys


def informative(images: np.ndarray, patch: int, stride: int = 1) -> np.ndarray:
    """Patches with at least :data:`NEAR_EMPTY` of each phase (the others match anywhere)."""
    ones = box_sums(torch.from_numpy(images).float(), patch)[:, ::stride, ::stride].numpy()
    share = ones / (patch * patch)
    return np.minimum(share, 1 - share) >= NEAR_EMPTY


def patch_index(canvases: np.ndarray, mask: np.ndarray, patch: int, stride: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """The sorted keys of the informative patches of the canvases inside the mask at a step of
    ``stride``, and where each lies (canvas, row, column)."""
    keys = patch_keys(canvases, patch, stride)
    inside = box_sums(torch.from_numpy(mask).float(), patch)[:, ::stride, ::stride].numpy()
    keep = informative(canvases, patch, stride) & (inside >= patch * patch - 0.5)
    canvas, row, col = np.nonzero(keep)
    flat = keys[keep]
    order = np.argsort(flat, kind="stable")
    where = np.stack([canvas, row * stride, col * stride], 1).astype(np.int32)[order]
    return flat[order], where


@dataclass
class Library:
    """The training canvases prepared for the search of windows of ``size`` px."""

    canvases: torch.Tensor  # (S, H + 2R, W + 2R) float32, padded by R with phase 0
    valid: torch.Tensor  # (S, H + 2R - size + 1, W + 2R - size + 1) bool: window inside the mask
    area: torch.Tensor  # the same shape: phase-1 pixels of each window
    coarse_origin: np.ndarray  # (C, 3) canvas, row and column offset of each coarse grid
    coarse_windows: np.ndarray  # (C * P, cells^2) float32: the pooled windows of each grid
    coarse_penalty: np.ndarray  # (C * P,) -|w|^2 / 2, -inf where the window leaves the mask
    coarse_shape: tuple[int, int]  # pooled positions per grid (rows, columns)
    size: int
    pool: int
    reach: int  # R: the fine search covers +-R px around each coarse window
    neighbours: int  # the fine search also visits this many canvases on either side
    n_windows: int
    patch: int  # the side of the patches of the exact index
    patch_keys: np.ndarray  # (M,) uint64, sorted: the keys of the library's patches
    patch_where: np.ndarray  # (M, 3) int32: canvas, row, column of each

    @classmethod
    def of(cls, canvases: np.ndarray, mask: np.ndarray, size: int) -> Library:
        canvases = np.asarray(canvases, np.uint8)
        if canvases.shape[1] < size or canvases.shape[2] < size:
            raise MicrovaeError(f"the training canvases ({canvases.shape[1]}x{canvases.shape[2]}"
                                f" px) are smaller than one {size} px image")
        pool = max(1, size // CELLS)
        cells = size // pool
        phases = (0,)
        reach = pool // 2 + 1
        c = torch.from_numpy(canvases).float()
        m = torch.from_numpy(np.asarray(mask, np.uint8)).float()
        padded = F.pad(c, (reach,) * 4)
        valid = box_sums(F.pad(m, (reach,) * 4), size) >= size * size - 0.5
        n_windows = int(valid[:, reach:valid.shape[1] - reach, reach:valid.shape[2] - reach].sum())
        if n_windows == 0:
            raise MicrovaeError(f"no {size} px window lies inside the training regions: nothing "
                                "to compare generated images with")
        top = max(phases)
        height = ((canvases.shape[1] - top) // pool) * pool
        width = ((canvases.shape[2] - top) // pool) * pool
        out_h, out_w = height // pool - cells + 1, width // pool - cells + 1
        per_canvas = out_h * out_w * len(phases) ** 2
        step = max(1, int(np.ceil(len(canvases) * per_canvas / COARSE_WINDOWS)))
        chosen = np.arange(0, len(canvases), step)
        origins, windows, penalties = [], [], []
        positions = torch.arange(out_h * out_w)
        rows, cols = (positions // out_w) * pool, (positions % out_w) * pool
        for a in phases:
            for b in phases:
                pooled = F.avg_pool2d(c[chosen, None, a:a + height, b:b + width], pool)
                grid = F.unfold(pooled, cells).permute(0, 2, 1)  # (C, P, cells^2)
                inside = valid[chosen][:, rows + a + reach, cols + b + reach]
                windows.append(grid)
                penalties.append(torch.where(inside, -0.5 * grid.square().sum(2),
                                             -float("inf")))
                origins.append(np.stack([chosen, np.full_like(chosen, a),
                                         np.full_like(chosen, b)], 1))
        patch = max(2, size // 2)
        keys, where = patch_index(canvases, np.asarray(mask, np.uint8), patch, max(1, patch // 4))
        return cls(padded, valid, box_sums(padded, size), np.concatenate(origins),
                   torch.cat(windows).reshape(-1, cells * cells).numpy(),
                   torch.cat(penalties).reshape(-1).numpy(), (out_h, out_w), size, pool, reach,
                   step // 2 + (1 if step > 1 else 0), n_windows, patch, keys, where)


def _coarse(library: Library, queries: torch.Tensor, candidates: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each query (Q, s, s), the ``candidates`` coarse grids whose best pooled window is
    nearest it in the Euclidean distance of the pooled images (the pooled symmetric difference:
    one matrix product), and that window: canvas, row and column (full-resolution top-left
    corners), each (Q, candidates). One window per grid, so that near-duplicate windows of one
    canvas do not crowd out the others."""
    pooled_q = F.avg_pool2d(queries[:, None], library.pool).flatten(1).numpy()  # (Q, cells^2)
    n_positions = library.coarse_shape[0] * library.coarse_shape[1]
    n_grids = len(library.coarse_origin)
    chunk = max(1, CHUNK_VALUES // (len(queries) * n_positions))
    best = torch.empty((len(queries), n_grids))
    where = torch.empty((len(queries), n_grids), dtype=torch.long)
    for start in range(0, n_grids, chunk):
        stop = min(start + chunk, n_grids)
        rows = slice(start * n_positions, stop * n_positions)
        # -|q - w|^2 / 2 + |q|^2 / 2 = q.w - |w|^2 / 2 (numpy: its BLAS is the faster here)
        score = pooled_q @ library.coarse_windows[rows].T
        score += library.coarse_penalty[rows]
        values = torch.from_numpy(score).view(len(queries), stop - start, n_positions).max(2)
        best[:, start:stop], where[:, start:stop] = values.values, values.indices
    k = min(candidates, n_grids)
    chosen = best.topk(k, dim=1).indices
    position = where.gather(1, chosen)
    origin = torch.from_numpy(library.coarse_origin)[chosen]  # (Q, k, 3)
    width = library.coarse_shape[1]
    return (origin[..., 0], origin[..., 1] + (position // width) * library.pool,
            origin[..., 2] + (position % width) * library.pool)


def _windows(canvases: torch.Tensor, size: int) -> torch.Tensor:
    """Every ``size`` x ``size`` window of the canvases as a view (S, H', W', size, size)."""
    n, height, width = canvases.shape
    sn, sh, sw = canvases.stride()
    return canvases.as_strided((n, height - size + 1, width - size + 1, size, size),
                               (sn, sh, sw, sh, sw))


def _fine(library: Library, queries: torch.Tensor, canvas: torch.Tensor, rows: torch.Tensor,
          cols: torch.Tensor) -> torch.Tensor:
    """The exact best IoU of phase 1 of each query over every translation within +-R px of
    its candidate windows, on the candidate's canvas and its neighbours, (Q,)."""
    size, reach = library.size, library.reach
    span = size + 2 * reach
    regions_of = _windows(library.canvases, span)
    n_canvases = library.canvases.shape[0]
    shifts = torch.arange(2 * reach + 1)
    best = torch.full((len(queries),), -1.0)
    for offset in range(-library.neighbours, library.neighbours + 1):
        visited = (canvas + offset).clamp(0, n_canvases - 1)
        n, k = visited.shape
        flat, r, c = visited.reshape(-1), rows.reshape(-1), cols.reshape(-1)
        # the region of translations (r - R .. r + R, c - R .. c + R), in padded coordinates
        regions = regions_of[flat, r, c]  # (n k, span, span)
        weights = queries.repeat_interleave(k, dim=0)[:, None]
        inter = F.conv2d(regions[None], weights, groups=n * k)[0]  # (n k, 2R+1, 2R+1)
        corner_r, corner_c = r[:, None] + shifts, c[:, None] + shifts
        area_w = library.area[flat[:, None, None], corner_r[:, :, None], corner_c[:, None, :]]
        valid = library.valid[flat[:, None, None], corner_r[:, :, None], corner_c[:, None, :]]
        area_q = weights.flatten(1).sum(1)[:, None, None]
        union = area_q + area_w - inter
        score = torch.where(valid & (union > 0), inter / union.clamp(min=1.0),
                            torch.tensor(-1.0))
        best = torch.maximum(best, score.reshape(n, -1).max(1).values)
    return best


# Patches of a query looked up in the exact index, and the matches a patch may have before it
# counts as too common to place the query.
MAX_MATCHES = 64
EXACT_CANDIDATES = 64


def _exact_candidates(library: Library, queries: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Translations at which a query shares a whole patch with the library (the index holds
    the library's patches at a step of patch / 4; each query patch at every position is looked
    up): ``(query, canvas, row, column)`` of the :data:`EXACT_CANDIDATES` translations per query
    with the most votes, each matching patch voting 1 / its number of matches. These place exact
    and near-exact copies exactly."""
    patch = library.patch
    keys = patch_keys(queries, patch)
    useful = informative(queries, patch)
    query, row, col = np.nonzero(useful)
    wanted = keys[useful]
    low = np.searchsorted(library.patch_keys, wanted, "left")
    high = np.searchsorted(library.patch_keys, wanted, "right")
    count = high - low
    keep = (count > 0) & (count <= MAX_MATCHES)
    query, row, col, low, count = query[keep], row[keep], col[keep], low[keep], count[keep]
    if not len(query):
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, empty
    repeat = np.repeat(np.arange(len(query)), count)
    match = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count) + low[repeat]
    where = library.patch_where[match].astype(np.int64)
    q = query[repeat]
    t_row, t_col = where[:, 1] - row[repeat], where[:, 2] - col[repeat]
    limit_r = library.valid.shape[1] - 2 * library.reach
    limit_c = library.valid.shape[2] - 2 * library.reach
    inside = (t_row >= 0) & (t_col >= 0) & (t_row < limit_r) & (t_col < limit_c)
    candidates = np.stack([q, where[:, 0], t_row, t_col], 1)[inside]
    rarity = 1.0 / count[repeat][inside]  # a patch found once places the query best
    unique, inverse = np.unique(candidates, axis=0, return_inverse=True)
    votes = np.bincount(inverse.reshape(-1), weights=rarity)
    order = np.lexsort((-votes, unique[:, 0]))
    unique = unique[order]
    rank = np.arange(len(unique)) - np.searchsorted(unique[:, 0], unique[:, 0], "left")
    unique = unique[rank < EXACT_CANDIDATES]
    return unique[:, 0], unique[:, 1], unique[:, 2], unique[:, 3]


def _iou_at(library: Library, queries: torch.Tensor, query: np.ndarray, canvas: np.ndarray,
            row: np.ndarray, col: np.ndarray) -> torch.Tensor:
    """The IoU of each query with the window at (canvas, row, column), -1 outside the mask."""
    reach = library.reach
    canvas_t, row_t, col_t = (torch.from_numpy(a) for a in (canvas, row, col))
    windows = _windows(library.canvases, library.size)[canvas_t, row_t + reach, col_t + reach]
    q = queries[torch.from_numpy(query)]
    inter = (windows * q).flatten(1).sum(1)
    union = q.flatten(1).sum(1) + library.area[canvas_t, row_t + reach, col_t + reach] - inter
    valid = library.valid[canvas_t, row_t + reach, col_t + reach]
    return torch.where(valid & (union > 0), inter / union.clamp(min=1.0), torch.tensor(-1.0))


@torch.no_grad()
def nearest_iou(images: np.ndarray, library: Library, candidates: int = CANDIDATES,
                batch: int = 256) -> np.ndarray:
    """For each binary image (N, s, s), the highest IoU of phase 1 with any window of the
    library (every translation inside the mask, the 8 rotations and reflections). Near-empty
    images (:func:`near_empty`) get NaN."""
    images = np.asarray(images > 0.5, np.uint8) if images.dtype != np.uint8 else images
    if images.shape[1:] != (library.size, library.size):
        raise MicrovaeError(f"images of {images.shape[1]}x{images.shape[2]} px, the library "
                            f"holds windows of {library.size} px")
    best = np.full(len(images), np.nan)
    usable = np.flatnonzero(~near_empty(images))
    for start in range(0, len(usable), batch):
        index = usable[start:start + batch]
        turned = dihedral(images[index])  # (T, n, s, s)
        queries = torch.from_numpy(np.ascontiguousarray(
            turned.reshape(-1, library.size, library.size))).float()
        canvas, rows, cols = _coarse(library, queries, candidates)
        scores = _fine(library, queries, canvas, rows, cols)
        query, e_canvas, e_row, e_col = _exact_candidates(
            library, np.ascontiguousarray(turned.reshape(-1, library.size, library.size)))
        if len(query):
            exact = _iou_at(library, queries, query, e_canvas, e_row, e_col)
            scores = scores.scatter_reduce(0, torch.from_numpy(query), exact, "amax")
        best[index] = scores.reshape(turned.shape[0], len(index)).max(0).values.double().numpy()
    return best


def novelty(generated: np.ndarray, reference: np.ndarray, library: Library,
            reference_best: np.ndarray | None = None) -> dict[str, float | int]:
    """How close the generated images come to the training windows, against how close the
    held-out real ``reference`` images come: the share of (not near-empty) generated images
    nearer a training window than 95% of the reference images are (a copier scores about 1, a
    generator as novel as real data about 0.05). ``reference_best``: the reference's
    :func:`nearest_iou`, where already computed."""
    if reference_best is None:
        reference_best = nearest_iou(reference, library)
    best = nearest_iou(generated, library)
    ref = reference_best[np.isfinite(reference_best)]
    gen = best[np.isfinite(best)]
    if not len(ref):
        raise MicrovaeError("every real reference image is near-empty: no novelty threshold")
    limit = float(np.percentile(ref, 95.0))
    return {"n_images": int(len(best)), "n_near_empty": int(np.isnan(best).sum()),
            "share_near_empty": float(np.isnan(best).mean()),
            "median_best_iou": float(np.median(gen)) if len(gen) else float("nan"),
            "reference_median_best_iou": float(np.median(ref)),
            "threshold_best_iou": limit,
            "fraction_closer": float(np.mean(gen > limit)) if len(gen) else float("nan"),
            "reference_fraction_closer": float(np.mean(ref > limit)),
            "reference_share_near_empty": float(np.isnan(reference_best).mean()),
            "library_windows": library.n_windows}
