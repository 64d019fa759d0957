"""Synthetic dual-phase (ferrite/martensite) steel volumes and their EBSD image-quality maps.

The default data of the pipeline, standing in for the EBSD reconstructions of the paper,
which are not public. Lengths are in pixels (voxels); the generator keeps its physical
scale whatever the tile size of the training, so a smaller tile shows a smaller field of
view of the same microstructure, never a coarser one.

Model
-----
* Ferrite grains: a Poisson-Voronoi tessellation (optionally elongated along one axis).
* Martensite: islands on grain boundaries and at triple junctions. A score field is high
  close to a boundary (distance to the Voronoi bisector) and higher still where three grains
  meet; a smooth random field breaks the boundary films into islands of a chosen size, and the
  score is cut at the quantile that gives the requested martensite fraction. Optional banding
  modulates the score along one axis (segregation bands of rolled steel).
* Image quality (IQ): bright ferrite with a grain-to-grain spread, dark mottled martensite,
  darker grain-boundary lines, a Gaussian blur (the beam's interaction volume) and noise,
  quantised to 8 bits as an EBSD export would be.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .config import check_options, check_parameters


@dataclass(frozen=True)
class SteelParameters:
    """Parameters of one synthetic volume (lengths in pixels)."""

    shape: tuple[int, int, int] = (48, 256, 256)
    grain_size: float = 60.0
    island_size: float = 12.0
    martensite_fraction: float = 0.25
    banding: float = 0.0
    band_axis: int = 1
    band_period: float = 90.0
    elongation: float = 1.0
    elongation_axis: int = 2
    noise: float = 0.04
    blur: float = 0.7

    @classmethod
    def from_options(cls, options: dict, key: str = "synthetic") -> SteelParameters:
        """From the ``synthetic`` options of a source (checked against the schema; its
        ``n_volumes`` and ``seed`` belong to the workflow and are not taken here)."""
        options = check_options(options, "synthetic", key)
        return cls(**{k: (tuple(v) if k == "shape" else v) for k, v in options.items()})

    def check(self) -> None:
        check_parameters(self, "synthetic")


def grain_geometry(params: SteelParameters, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voronoi grains of a volume.

    Returns ``(grain_id, boundary_distance, junction_distance)``, each of ``params.shape``:
    the nearest seed, the distance (px) to the nearest grain boundary, and the distance to the
    boundary with the third-nearest grain (small near triple junctions).
    """
    shape = np.array(params.shape, dtype=float)
    stretch = np.ones(3)
    stretch[params.elongation_axis] = 1.0 / params.elongation
    margin = params.grain_size
    box = shape * stretch + 2 * margin
    mean_cell_volume = np.pi / 6.0 * params.grain_size**3
    n_seeds = max(4, rng.poisson(np.prod(box) / mean_cell_volume))
    seeds = rng.uniform(-margin, box - margin, size=(n_seeds, 3))
    tree = cKDTree(seeds)

    grain = np.empty(params.shape, dtype=np.int32)
    boundary = np.empty(params.shape, dtype=np.float32)
    junction = np.empty(params.shape, dtype=np.float32)
    yy, xx = np.meshgrid(np.arange(params.shape[1]), np.arange(params.shape[2]), indexing="ij")
    plane = np.stack([np.zeros(yy.size), yy.ravel(), xx.ravel()], axis=1).astype(float)
    for z in range(params.shape[0]):
        points = plane.copy()
        points[:, 0] = z
        points *= stretch
        _, idx = tree.query(points, k=3, workers=-1)
        s1, s2, s3 = seeds[idx[:, 0]], seeds[idx[:, 1]], seeds[idx[:, 2]]
        grain[z] = idx[:, 0].reshape(yy.shape)
        boundary[z] = _bisector_distance(points, s1, s2).reshape(yy.shape)
        junction[z] = _bisector_distance(points, s1, s3).reshape(yy.shape)
    return grain, boundary, junction


def _bisector_distance(points: np.ndarray, near: np.ndarray, far: np.ndarray) -> np.ndarray:
    """Distance from each point to the bisector plane between its seeds ``near`` and ``far``."""
    d_near = np.sum((points - near) ** 2, axis=1)
    d_far = np.sum((points - far) ** 2, axis=1)
    return (d_far - d_near) / (2.0 * np.linalg.norm(far - near, axis=1))


def smooth_noise(shape: tuple[int, ...], correlation_length: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Gaussian random field of unit standard deviation with the given correlation length (px)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32),
                                    correlation_length, mode="wrap")
    return (field - field.mean()) / max(float(field.std()), 1e-12)


def martensite_phase(params: SteelParameters, boundary: np.ndarray, junction: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Binary martensite indicator (uint8, 1 = martensite) on boundaries and triple junctions."""
    score = -boundary - 0.5 * junction
    score = score + 0.45 * params.island_size * smooth_noise(params.shape, params.island_size / 3.0,
                                                               rng)
    if params.banding > 0:
        coordinate = np.arange(params.shape[params.band_axis], dtype=np.float32)
        wave = np.cos(2 * np.pi * coordinate / params.band_period)
        view = [1, 1, 1]
        view[params.band_axis] = -1
        score = score + params.banding * params.island_size * wave.reshape(view)
    cut = np.quantile(score, 1.0 - params.martensite_fraction)
    phase = score > cut
    # Islands thinner than the EBSD step are not resolved: drop single-voxel specks.
    phase = ndimage.binary_opening(phase, structure=ndimage.generate_binary_structure(3, 1))
    return phase.astype(np.uint8)


def image_quality(phase: np.ndarray, grain: np.ndarray, boundary: np.ndarray, noise: float,
                  blur: float, rng: np.random.Generator) -> np.ndarray:
    """EBSD image-quality map (uint8, 0-255) of a phase volume: ferrite bright, martensite dark."""
    n_grains = int(grain.max()) + 1
    ferrite_level = np.clip(rng.normal(0.78, 0.04, n_grains), 0.68, 0.92).astype(np.float32)
    iq = ferrite_level[grain]
    boundary_line = np.exp(-((boundary / 0.9) ** 2)).astype(np.float32)
    iq *= 1.0 - 0.22 * boundary_line
    mottle = 0.04 * smooth_noise(phase.shape, 1.5, rng)
    iq = np.where(phase == 1, 0.30 + mottle, iq).astype(np.float32)
    if blur > 0:
        # EBSD scans each section separately: the blur acts within a section only.
        iq = ndimage.gaussian_filter(iq, (0.0, blur, blur))
    if noise > 0:
        iq += rng.normal(0.0, noise, iq.shape).astype(np.float32)
    return np.clip(np.round(iq * 255.0), 0, 255).astype(np.uint8)


def synthesize_volume(params: SteelParameters, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic dual-phase steel volume.

    Returns ``(iq, phase)``: the 8-bit image-quality volume and the true phase volume
    (uint8, 1 = martensite), both of ``params.shape`` ordered (z, y, x).
    """
    params.check()
    rng = np.random.default_rng(seed)
    grain, boundary, junction = grain_geometry(params, rng)
    phase = martensite_phase(params, boundary, junction, rng)
    iq = image_quality(phase, grain, boundary, params.noise, params.blur, rng)
    return iq, phase
