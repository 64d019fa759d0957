"""Random training crops from the training regions, with dihedral augmentation.

Training draws, for every example of every step, a fresh window of the training size from the
training regions (the training tiles put back in place, :func:`microvae.dataset.training_regions`)
instead of cycling over a fixed set of tiles: a 256 x 256 region holds 50 625 distinct 32 px
windows where tiling gives it 64. A window is drawn only where all its pixels are covered by
training tiles, so no pixel of the validation or test split is ever seen.

Each example is gathered in one indexing operation from precomputed index grids, one grid per
transform, so that rotating or flipping costs nothing beyond the gather.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import MicrovaeError

AUGMENTATIONS = ("dihedral", "flips", "none")


def transform_grids(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column offsets (8, size, size) of the 8 dihedral transforms of a square window:
    output pixel (i, j) of transform t is window pixel (rows[t, i, j], cols[t, i, j]).

    Order: identity, the two flips and the rotation by 180 degrees (the 4 that keep the axes),
    then the transpose and the rotations by 90 and 270 degrees and the anti-transpose."""
    i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    last = size - 1
    rows = torch.stack([i, i, last - i, last - i, j, last - j, j, last - j])
    cols = torch.stack([j, last - j, j, last - j, i, i, last - i, last - i])
    return rows, cols


def n_transforms(augment: str) -> int:
    """How many of the :func:`transform_grids` an augmentation draws from."""
    try:
        return {"dihedral": 8, "flips": 4, "none": 1}[augment]
    except KeyError:
        raise MicrovaeError(f"train.augment: unknown augmentation {augment!r}; use one of "
                            f"{AUGMENTATIONS}") from None


def window_origins(mask: np.ndarray, size: int) -> np.ndarray:
    """Where a ``size`` window may start: bool (S, H - size + 1, W - size + 1), True where the
    window lies wholly inside the mask (S, H, W) (a summed-area table of the mask)."""
    n, height, width = mask.shape
    if height < size or width < size:
        return np.zeros((n, max(0, height - size + 1), max(0, width - size + 1)), bool)
    table = np.zeros((n, height + 1, width + 1), np.int64)
    table[:, 1:, 1:] = mask.astype(np.int64).cumsum(1).cumsum(2)
    inside = (table[:, size:, size:] - table[:, :-size, size:] - table[:, size:, :-size]
              + table[:, :-size, :-size])
    return inside == size * size


class CropSampler:
    """Random windows of ``size`` px from the regions (S, H, W) {0, 1}, inside ``mask``.

    ``sample(n, generator)`` returns float32 (n, 1, size, size) on the regions' device; all the
    randomness (window, transform) comes from ``generator``, so a saved generator state repeats
    the draws exactly. Windows are uniform over every allowed (section, y, x), by rejection
    from uniform draws over the padded canvases (few are rejected: the canvases are mostly
    covered by their own split's tiles).
    """

    def __init__(self, regions: torch.Tensor, mask: np.ndarray, size: int, augment: str = "none"):
        allowed = window_origins(mask, size)
        self.n_windows = int(allowed.sum())
        if self.n_windows == 0:
            raise MicrovaeError(f"train.crops: no {size} px window lies inside the training "
                                "regions; set train.crops to false or lower image_size")
        self.regions = regions
        self.size = size
        self.allowed = torch.from_numpy(allowed.reshape(-1))
        self.grid_shape = allowed.shape
        self.acceptance = self.n_windows / self.allowed.numel()
        self.n_transforms = n_transforms(augment)
        rows, cols = transform_grids(size)
        width = regions.shape[-1]
        self.offsets = (rows * width + cols).to(regions.device)  # (8, size, size)
        self.flat = regions.reshape(-1)

    def origins(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` allowed window origins as indices into the flattened (S, H', W') grid."""
        picked = []
        missing = n
        while missing > 0:
            draws = max(16, int(1.25 * missing / self.acceptance) + 1)
            candidates = torch.randint(self.allowed.numel(), (draws,), generator=generator)
            candidates = candidates[self.allowed[candidates]][:missing]
            picked.append(candidates)
            missing -= len(candidates)
        return torch.cat(picked)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        origin = self.origins(n, generator)
        transform = torch.randint(self.n_transforms, (n,), generator=generator)
        _, grid_h, grid_w = self.grid_shape
        section, rest = origin // (grid_h * grid_w), origin % (grid_h * grid_w)
        y, x = rest // grid_w, rest % grid_w
        height, width = self.regions.shape[-2:]
        start = (section * height + y) * width + x
        device = self.regions.device
        index = start.to(device)[:, None, None] + self.offsets[transform.to(device)]
        return self.flat[index].unsqueeze(1).float()


def tiled_windows(canvases: np.ndarray, mask: np.ndarray, size: int, with_corners: bool = False
                  ) -> tuple[np.ndarray, ...]:
    """Non-overlapping ``size`` windows of the regions, on a grid of step ``size`` from each
    canvas's first covered pixel, kept where wholly inside the mask: ``(windows (N, size,
    size), canvas index of each)``, and with ``with_corners`` the top-left corner (y, x) of
    each. The real windows a large generated image is compared with."""
    inside = window_origins(mask, size)
    windows, owner, corners = [], [], []
    for index in range(len(canvases)):
        rows, cols = np.nonzero(mask[index])
        if rows.size == 0 or inside.shape[1] == 0 or inside.shape[2] == 0:
            continue
        for y in range(int(rows.min()), inside.shape[1], size):
            for x in range(int(cols.min()), inside.shape[2], size):
                if inside[index, y, x]:
                    windows.append(canvases[index, y:y + size, x:x + size])
                    owner.append(index)
                    corners.append((y, x))
    if not windows:
        out = np.zeros((0, size, size), np.uint8), np.zeros(0, np.int64)
        return (*out, np.zeros((0, 2), np.int64)) if with_corners else out
    out = np.stack(windows).astype(np.uint8), np.asarray(owner, np.int64)
    return (*out, np.asarray(corners, np.int64).reshape(-1, 2)) if with_corners else out


def split_into_windows(images: np.ndarray, size: int) -> np.ndarray:
    """Each image (N, H, W) cut into its non-overlapping ``size`` windows (row-major), (N *
    (H // size) * (W // size), size, size)."""
    n, height, width = images.shape
    rows, cols = height // size, width // size
    cut = images[:, :rows * size, :cols * size].reshape(n, rows, size, cols, size)
    return cut.transpose(0, 1, 3, 2, 4).reshape(-1, size, size)
