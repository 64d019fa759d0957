"""The baselines every generator is judged beside.

* ``baseline_grf``: a level-cut Gaussian random field, white noise blurred by a Gaussian of
  width sigma and cut at a threshold. Its one parameter, sigma, is fitted on the train split
  (the sigma whose finished images have the train split's scaled autocovariance); the cut is
  calibrated, and the morphology applied, exactly as for the unseeded modes of a model
  (:class:`microvae.sample.Finishing`). It has the right phase fraction and two-point
  correlation by construction: a judge that passes it on every descriptor cannot tell a
  microstructure model from blurred noise.
* ``baseline_copy``: random crops of the training regions, the images the model trained on,
  cleaned per image as the tiles were: a copier with the real data's statistics, which only
  the novelty check can flag.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from .crops import CropSampler
from .evaluate import Features, set_descriptors
from .sample import CALIBRATION_DRAWS, Finishing
from .segment import SegmentationParameters, segment

# The sigmas (px) tried when fitting the field, and the images drawn per trial.
SIGMAS = tuple(float(s) for s in np.geomspace(0.5, 16.0, 21))
FIT_DRAWS = 400


def gaussian_field(n: int, size: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` fields (n, size, size) float32: white noise blurred by a Gaussian of ``sigma`` px,
    drawn on a larger periodic grid and cropped, so that the edges are like the inside."""
    margin = int(np.ceil(4 * sigma))
    noise = rng.standard_normal((n, size + 2 * margin, size + 2 * margin)).astype(np.float32)
    blurred = ndimage.gaussian_filter(noise, (0, sigma, sigma), mode="wrap")
    return blurred[:, margin:margin + size, margin:margin + size]


@dataclass
class FieldBaseline:
    sigma: float
    finishing: Finishing
    fit_error: dict[float, float]  # sigma -> RMS difference of the scaled autocovariance

    def draw(self, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
        maps, _ = self.finishing.apply(gaussian_field(n, size, self.sigma, rng))
        return maps


def best_sigma(errors: dict[float, float]) -> float:
    """The sigma of the smallest fit error (a NaN error never wins)."""
    return min(errors, key=lambda s: np.inf if np.isnan(errors[s]) else errors[s])


def fit_field_baseline(train: np.ndarray, morphology: SegmentationParameters | None,
                       rng: np.random.Generator, sigmas: tuple[float, ...] = SIGMAS,
                       calibration_draws: int = CALIBRATION_DRAWS) -> FieldBaseline:
    """The sigma whose finished fields come closest to the train images' scaled
    autocovariance (RMS over r >= 1), and the finishing calibrated at it on
    ``calibration_draws`` fields (as a model's unseeded modes are)."""
    size = train.shape[-1]
    phase_fraction = float(train.mean())
    target = Features.of(train)
    reference = set_descriptors(target.sums(np.ones(target.n)), target.layout)["s2"][0]
    errors = {}
    for sigma in sigmas:
        fields = gaussian_field(FIT_DRAWS, size, sigma, rng)
        trial = Finishing.calibrate(fields, phase_fraction, morphology)
        maps, _ = trial.apply(fields)
        features = Features.of(maps)
        curve = set_descriptors(features.sums(np.ones(features.n)), features.layout)["s2"][0]
        errors[sigma] = float(np.sqrt(np.nanmean((curve[1:] - reference[1:]) ** 2)))
    sigma = best_sigma(errors)
    finishing = Finishing.calibrate(gaussian_field(calibration_draws, size, sigma, rng),
                                    phase_fraction, morphology)
    return FieldBaseline(sigma, finishing, errors)


def training_crops(regions: np.ndarray, mask: np.ndarray, n: int, size: int,
                   generator: torch.Generator,
                   morphology: SegmentationParameters | None = None) -> np.ndarray:
    """``n`` random ``size`` px crops (uint8) of the training regions, cleaned per image by the
    segmentation's ``morphology`` as every tile (and every finished generated image) was: a
    crop cut across a tile's edge would otherwise keep fragments that the per-tile clean-up
    removes."""
    sampler = CropSampler(torch.from_numpy(np.ascontiguousarray(regions, np.uint8)), mask, size,
                          "none")
    crops = sampler.sample(n, generator)[:, 0].numpy().astype(np.uint8)
    if morphology is None:
        return crops
    cleaned, _, _ = segment(crops, morphology, binary_input=True, source="training crops")
    return cleaned.astype(np.uint8)
