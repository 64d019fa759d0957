"""Generation of new microstructures from a trained VAE (section 3 of the paper).

Modes:
* ``prior``: z ~ N(0, I), decoded.
* ``aggregate``: z ~ N(m, C), the Gaussian with the mean and covariance of the aggregate
  posterior of the training images, q(z) = mean over images of N(z_mean, exp(z_log_var))
  ("ex-post density estimation", Ghosh et al., ICLR 2020). No real image seeds a sample; it
  covers the part of the latent space the decoder was trained on, which N(0, I) does not when
  the encoder uses only a subspace of a large latent space (see README, "Prior samples").
* ``mixture``: z from a Gaussian mixture (scikit-learn) fitted to one posterior draw of each
  training image, in the subspace the encoder uses (directions in which the z_mean vary by
  more than 0.01; the other directions get a Gaussian of their own variance); the number of
  components and the covariance type (full, tied, diag) are the ones under which draws of the
  validation images are most likely.
* ``field`` (``conv`` models): latent grids from the stationary Gaussian random field fitted to
  the encoded training windows (:mod:`microvae.field`), at the training size or any larger one.
* ``diffusion``: for ``conv`` models latent grids from the denoising diffusion model trained on
  the encoded training windows (:mod:`microvae.diffusion`), at any size; for Table 1 models
  latent vectors from the one trained on the encoded training images. It also generates at a
  target phase fraction (``phase_fractions``) and, for ``conv`` models, graded maps
  (``graded``).
* ``posterior``: for M test images, K draws of z = z_mean + exp(z_log_var / 2) * eps (eq. 1).
* ``noise``: for the same images, z = z_mean + sigma * eps for each sigma (Figure 9).
* ``interpolation``: for P pairs of test images, the midpoint (z1 + z2) / 2 (Figure 10) and a
  path of S evenly spaced points from z1 to z2 (z = z_mean of each image; endpoints included).
Outputs are pixel probabilities of phase 1 in [0, 1]; all randomness comes from one seed.
Table 1 models take ``prior``, ``aggregate``, ``mixture`` and ``diffusion`` as unseeded modes;
``conv`` models (latent grids) take ``prior`` (i.i.d. N(0, I) per cell), ``field`` and
``diffusion``, and generate them also at larger sizes (``sizes``, optionally periodic).
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from .config import check_parameters, parse_options
from .crops import CropSampler, window_origins
from .diffusion import (
    CANVAS_CELLS,
    DiffusionConfig,
    DiffusionPrior,
    condition_maps,
    drawn_whole,
    guidance_weight,
    linear_gradient,
    sample_grids,
    sample_vectors,
    smoothed_cells,
)
from .errors import MicrovaeError
from .field import FieldPrior, fit_field, sample_field
from .model import USED_VARIANCE, VAE, reparameterize
from .modes import (
    ENCODED_MODES,
    MODES,
    SIZED_MODES,
    TRAINED_PRIOR_MODES,
    modes_of,
)
from .samplesfile import (
    INTERPOLATION_MIDPOINT,
    INTERPOLATION_PAIRS,
    INTERPOLATION_PATH,
    NOISE_INDEX,
    POSTERIOR,
    POSTERIOR_INDEX,
    RECONSTRUCTION,
    RECONSTRUCTION_BCE,
    calibration_of,
    condition_key,
    conditioned_key,
    finish_key,
    finished_key,
    fit_key,
    graded_key,
    image_keys,
    large_key,
    latent_key,
    noise_key,
    target_key,
)
from .segment import SegmentationParameters, segment

# The field is fitted to the posterior draws of this many random training windows of at most
# FIELD_WINDOW px (the largest size that fits the training regions).
FIELD_WINDOWS = 256
FIELD_WINDOW = 256
# Decoding works through this many pixels per batch (64 images of 32 px, 1 of 512 px).
DECODE_PIXELS = 2**16
MIXTURE_COMPONENTS = (1, 2, 4, 8)
MIXTURE_COVARIANCES = ("full", "tied", "diag")
# A mixture is tried only where the training codes number at least this many per parameter.
CODES_PER_PARAMETER = 5


@dataclass
class SampleConfig:
    """Settings of the generation (the config's ``sample`` section; defaults as the schema)."""

    n_prior: int = 500
    n_posterior_images: int = 64
    n_draws: int = 8
    noise_sigmas: list[float] = dataclass_field(default_factory=lambda: [0.5, 1.0, 2.0])
    n_pairs: int = 8
    n_steps: int = 9
    seed: int = 0
    sizes: list[int] = dataclass_field(default_factory=list)
    n_large: int = 32
    periodic: bool = False
    calibration_draws: int = 5000
    phase_fractions: list[float] = dataclass_field(default_factory=list)
    graded: list[float] | None = None
    calibrate_targets: bool = True
    match_training: bool = True

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> SampleConfig:
        return parse_options(cls, options, "sample")

    def check(self) -> None:
        check_parameters(self, "sample")


def modes_for(model, trained_priors: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Every mode a model can generate (``--mode all``), given the priors trained for it
    (``trained_priors``: of :data:`~microvae.modes.TRAINED_PRIOR_MODES`)."""
    return modes_of("conv" if model.spatial else "table1", trained_priors)


def check_modes(model, modes: tuple[str, ...], trained_priors: tuple[str, ...] = ()) -> None:
    unknown = set(modes) - set(MODES)
    if unknown:
        raise MicrovaeError(f"unknown sampling mode(s) {sorted(unknown)}; use {list(MODES)}")
    wrong = [m for m in modes if m not in modes_for(model, TRAINED_PRIOR_MODES)]
    if wrong:
        kind = "conv" if model.spatial else "table1"
        raise MicrovaeError(f"mode(s) {wrong} do not apply to a {kind} model (its modes: "
                            f"{list(modes_for(model, TRAINED_PRIOR_MODES))})")
    untrained = [m for m in modes if m in TRAINED_PRIOR_MODES and m not in trained_priors]
    if untrained:
        raise MicrovaeError(f"mode {' '.join(untrained)} needs its trained prior (--diffusion "
                            "FILE, written by python -m microvae train-prior)")


@torch.no_grad()
def decode(model: VAE, z: torch.Tensor, batch_size: int | None = None,
           periodic: bool = False) -> np.ndarray:
    """Probabilities (N, H, W) float32 for latent codes ``z`` (N, L) or grids (N, C, h, w),
    decoded in batches; ``periodic``: grids wrap around (conv models)."""
    if batch_size is None:
        pixels = 64 * int(np.prod(z.shape[2:])) if z.dim() == 4 else 64 * 16
        batch_size = max(1, DECODE_PIXELS // pixels)
    options = {"periodic": True} if periodic else {}
    out = [model.decode(z[i:i + batch_size], **options).float()[:, 0].cpu().numpy()
           for i in range(0, len(z), batch_size)]
    if not out:
        return np.zeros((0, *model.config["image_size"]), np.float32)
    return np.concatenate(out)


@torch.no_grad()
def encode(model: VAE, images: np.ndarray, batch_size: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z_mean, z_log_var)`` of binary images (N, H, W)."""
    expected = tuple(model.config["image_size"])
    if model.spatial:
        model.latent_shape(*images.shape[1:])  # multiples of 8
    elif tuple(images.shape[1:]) != expected:
        raise MicrovaeError(f"the model was trained on {expected[0]}x{expected[1]} px images, "
                            f"the data are {images.shape[1]}x{images.shape[2]} px")
    means, log_vars = [], []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).float()[:, None]
        m, v = model.encode(x)
        means.append(m.float())
        log_vars.append(v.float())
    return torch.cat(means), torch.cat(log_vars)


@torch.no_grad()
def reconstruct(model: VAE, images: np.ndarray, z_mean: torch.Tensor,
                batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reconstructions of ``images`` from their ``z_mean`` (probabilities (N, H, W) float32)
    and the BCE per pixel (nats) of each, computed from the decoder's fp32 logits (not from
    rounded probabilities); one pass of the decoder."""
    if batch_size is None:
        batch_size = max(1, DECODE_PIXELS // int(np.prod(images.shape[1:])))
    probabilities, bce = [], []
    for i in range(0, len(images), batch_size):
        logits = model.decode_logits(z_mean[i:i + batch_size]).float()
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).float()[:, None]
        loss = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        bce.append(loss.flatten(1).mean(1).double().numpy())
        probabilities.append(torch.sigmoid(logits)[:, 0].numpy())
    if not bce:
        return np.zeros((0, *images.shape[1:]), np.float32), np.zeros(0)
    return np.concatenate(probabilities), np.concatenate(bce)


def reconstruction_bce(model: VAE, images: np.ndarray, z_mean: torch.Tensor,
                       batch_size: int = 64) -> np.ndarray:
    """BCE per pixel (nats) of each image against its reconstruction from ``z_mean``
    (:func:`reconstruct`)."""
    return reconstruct(model, images, z_mean, batch_size)[1]


def prior(model: VAE, n: int, generator: torch.Generator, size: int | None = None,
          periodic: bool = False) -> tuple[np.ndarray, torch.Tensor]:
    """``n`` images decoded from z ~ N(0, I) (of a latent grid for ``size`` px: conv models)."""
    z = torch.randn((n, *model.latent_shape(size, size)), generator=generator)
    return decode(model, z, periodic=periodic), z


def field_windows(regions: np.ndarray, mask: np.ndarray, n: int, generator: torch.Generator,
                  largest: int = FIELD_WINDOW) -> np.ndarray:
    """``n`` random windows (n, S, S) of the training regions (wholly inside the mask), S the
    largest multiple of 8 up to ``largest`` px that fits."""
    for size in range(largest, 7, -8):
        if window_origins(mask, size).any():
            sampler = CropSampler(torch.from_numpy(np.ascontiguousarray(regions, np.uint8)),
                                  mask, size, "none")
            return sampler.sample(n, generator)[:, 0].numpy().astype(np.uint8)
    raise MicrovaeError("no 8 px window fits inside the training regions")


def fit_field_prior(model: VAE, windows: np.ndarray, generator: torch.Generator) -> FieldPrior:
    """The ``field`` prior: fitted to one posterior draw (eq. 1) of the latent grid of each
    training window (what the decoder was trained on)."""
    z_mean, z_log_var = encode(model, windows, batch_size=max(1, 250 * 32 * 32 // windows[0].size))
    eps = torch.randn(z_mean.shape, generator=generator)
    return fit_field(reparameterize(z_mean, z_log_var, eps).numpy())


def field(model: VAE, prior_fit: FieldPrior, n: int, generator: torch.Generator,
          size: int | None = None, periodic: bool = False) -> tuple[np.ndarray, torch.Tensor]:
    """``n`` images decoded from latent grids of the field (``size`` px; default the training
    size) and their grids."""
    _, height, width = model.latent_shape(size, size)
    z = sample_field(prior_fit, n, height, width, generator=generator, periodic=periodic)
    return decode(model, z, periodic=periodic), z


def diffusion(model: VAE, prior_fit: DiffusionPrior, n: int, generator: torch.Generator,
              size: int | None = None, periodic: bool = False, phase_fraction=None,
              steps: int = DiffusionConfig.sampling_steps, guidance=DiffusionConfig.guidance,
              texture: bool = False) -> tuple[np.ndarray, torch.Tensor]:
    """``n`` images decoded from latent grids of the diffusion prior (``size`` px; default the
    training size), optionally at a target ``phase_fraction`` (a number or a map), and their
    grids; for a Table 1 model, from latent vectors (at its one size, a number as target).
    ``guidance``: the weight of a target (conv models: also a map of one weight per cell of a
    map target). ``texture``: a number is asked for as :func:`textured_conditions` (grids
    drawn whole)."""
    kind = "grid" if model.spatial else "vector"
    if prior_fit.kind != kind or prior_fit.channels != model.latent_size:
        raise MicrovaeError(f"the diffusion prior models {prior_fit.kind}s of "
                            f"{prior_fit.channels} channels, the model's latent is a {kind} of "
                            f"{model.latent_size}: the prior of another model")
    if not model.spatial:
        z = sample_vectors(prior_fit, n, generator, phase_fraction, steps, guidance)
        return decode(model, z), z
    _, height, width = model.latent_shape(size, size)
    if texture and phase_fraction is not None and np.ndim(phase_fraction) == 0 and \
            drawn_whole(prior_fit, height, width, periodic):
        phase_fraction = textured_conditions(model, prior_fit, float(phase_fraction), n,
                                             generator, size, periodic, steps)
    z = sample_grids(prior_fit, n, height, width, generator, periodic=periodic,
                     phase_fraction=phase_fraction, steps=steps, guidance=guidance)
    return decode(model, z, periodic=periodic), z


def textured_conditions(model: VAE, prior_fit: DiffusionPrior, target: float, n: int,
                        generator: torch.Generator, size: int | None = None,
                        periodic: bool = False,
                        steps: int = DiffusionConfig.sampling_steps) -> np.ndarray:
    """One condition map per image (n, cells, cells) for a uniform ``target``: the local phase
    fraction of an unconditional draw of the prior (cut at 0.5, smoothed as the training
    conditions), moved to mean ``target`` and kept inside :data:`CONDITION_RANGE`. The prior
    was trained on the maps of real windows, whose local fraction varies about their mean; a
    constant map is a condition no training window had, and the prior answered it with images
    more uniform than real ones (docs/diffusion.md)."""
    _, height, width = model.latent_shape(size, size)
    free = sample_grids(prior_fit, n, height, width, generator, periodic=periodic, steps=steps)
    maps = condition_maps((decode(model, free, periodic=periodic) > 0.5).astype(np.float32),
                          periodic)
    return np.clip(target + maps - maps.mean((1, 2), keepdims=True),
                   *CONDITION_RANGE).astype(np.float32)


def fit_aggregate_posterior(z_mean: torch.Tensor, z_log_var: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (L,) and covariance (L, L) of the mixture q(z) = mean_i N(z_mean_i, diag exp(z_log_var_i)).

    Exact moments of the mixture: cov = covariance of the z_mean (over images, 1/N) plus the
    mean posterior variance on the diagonal. Computed in float64.
    """
    mu = z_mean.double()
    mean = mu.mean(0)
    centred = mu - mean
    cov = centred.T @ centred / len(mu) + torch.diag(z_log_var.double().exp().mean(0))
    return mean, cov


def aggregate(model: VAE, mean: torch.Tensor, cov: torch.Tensor, n: int,
              generator: torch.Generator) -> tuple[np.ndarray, torch.Tensor]:
    """``n`` images decoded from z ~ N(mean, cov) and their z (n, L)."""
    factor = torch.linalg.cholesky(cov)
    eps = torch.randn((n, len(mean)), generator=generator, dtype=torch.float64)
    z = (mean + eps @ factor.T).float()
    return decode(model, z), z


@dataclass
class MixturePrior:
    """A Gaussian mixture over the used subspace of the latent space (see module docstring)."""

    mean: np.ndarray  # (L,)
    basis: np.ndarray  # (L, L): the used directions first (columns)
    variances: np.ndarray  # (L,) variances of the posterior draws along the basis
    used: int
    mixture: Any  # sklearn.mixture.GaussianMixture over the first ``used`` coordinates
    validation_score: float  # mean log-likelihood per validation code

    def describe(self) -> dict[str, Any]:
        return {"components": int(self.mixture.n_components),
                "covariance": self.mixture.covariance_type, "subspace_dims": self.used,
                "validation_log_likelihood": self.validation_score}


def fit_mixture(train_codes: tuple[torch.Tensor, torch.Tensor],
                val_codes: tuple[torch.Tensor, torch.Tensor], random_state: int) -> MixturePrior:
    """Fit the ``mixture`` prior to one draw of each training image's posterior (z_mean,
    z_log_var: the aggregate posterior, which the decoder was trained on), in the subspace
    where the z_mean vary by more than :data:`USED_VARIANCE`; choose the number of components
    and the covariance type by the likelihood of draws of the validation images."""
    from sklearn.mixture import GaussianMixture

    generator = torch.Generator().manual_seed(random_state)

    def draws(codes):
        mean, log_var = codes
        eps = torch.randn(mean.shape, generator=generator)
        return reparameterize(mean.double(), log_var.double(), eps.double()).numpy()

    z_mean = train_codes[0].double().numpy()
    code_variances, basis = np.linalg.eigh(np.atleast_2d(np.cov(z_mean, rowvar=False)))
    order = np.argsort(code_variances)[::-1]
    basis = basis[:, order]
    used = max(1, int((code_variances > USED_VARIANCE).sum()))
    x = draws(train_codes)
    mean = x.mean(0)
    coords, val = (x - mean) @ basis, (draws(val_codes) - mean) @ basis
    variances = coords.var(0)
    train, val = coords[:, :used], val[:, :used]
    best = None
    for covariance in MIXTURE_COVARIANCES:
        for components in MIXTURE_COMPONENTS:
            matrices = {"full": components * used * (used + 1) // 2,
                        "tied": used * (used + 1) // 2, "diag": components * used}[covariance]
            parameters = components * (used + 1) + matrices
            if components > 1 and parameters * CODES_PER_PARAMETER > len(train):
                continue
            mixture = GaussianMixture(components, covariance_type=covariance, reg_covar=1e-4,
                                      random_state=random_state).fit(train)
            score = float(mixture.score(val))
            if best is None or score > best.validation_score:
                best = MixturePrior(mean, basis, variances, used, mixture, score)
    return best


# A finishing threshold is calibrated once per prior, on this many of its images (never on
# the batch it finishes, so that one image is finished as a thousand are): the default of
# sample.calibration_draws (the schema's).
CALIBRATION_DRAWS = 5000


def phase_fraction_threshold(probabilities: np.ndarray, phase_fraction: float) -> float:
    """The cut of ``probabilities`` that leaves ``phase_fraction`` of their pixels in phase 1
    (over the whole set: the fraction per image still varies)."""
    if not 0.0 < phase_fraction < 1.0:
        raise MicrovaeError(f"training phase fraction {phase_fraction} is not between 0 and 1")
    return float(np.quantile(probabilities, 1.0 - phase_fraction))


@dataclass
class Finishing:
    """How the images of one prior are turned into phase maps as the training maps were made:
    a cut at ``threshold`` (calibrated once so that the calibration draw's pixels have the
    training split's phase fraction: codes drawn from a fitted prior decode to less certain
    probabilities than encoded ones, and a cut at 0.5 over- or under-draws the minority phase),
    then the ``morphology`` of the data's segmentation (opening, closing, hole filling, island
    removal), whose absence leaves fragments no real map has."""

    threshold: float
    phase_fraction: float
    morphology: SegmentationParameters | None
    draws: int
    calibration_steps: list[tuple[str, float]]  # phase fraction after each step, calibration
    phase_fraction_at_half: float  # of the calibration draw cut at 0.5

    @classmethod
    def calibrate(cls, probabilities: np.ndarray, phase_fraction: float,
                  morphology: SegmentationParameters | None) -> Finishing:
        threshold = phase_fraction_threshold(probabilities, phase_fraction)
        finishing = cls(threshold, phase_fraction, morphology, len(probabilities), [],
                        float((probabilities > 0.5).mean()))
        _, finishing.calibration_steps = finishing.apply(probabilities)
        return finishing

    def apply(self, probabilities: np.ndarray) -> tuple[np.ndarray, list[tuple[str, float]]]:
        """The phase maps {0, 1} (uint8) and the phase fraction after each step."""
        binary = (probabilities > self.threshold).astype(np.uint8)
        if self.morphology is None or not len(binary):
            return binary, [("threshold", float(binary.mean()) if len(binary) else float("nan"))]
        cleaned, _, steps = segment(binary, self.morphology, binary_input=True,
                                    source="generated images")
        return cleaned.astype(np.uint8), steps

    @classmethod
    def from_record(cls, record: dict[str, float], morphology: SegmentationParameters | None
                    ) -> Finishing:
        """The finishing that :meth:`record` wrote (with the morphology it was made with)."""
        steps = [(key.removeprefix("after_"), float(value)) for key, value in record.items()
                 if key.startswith("after_")]
        return cls(float(record["threshold"]), float(record["training_phase_fraction"]),
                   morphology, int(record["calibration_draws"]), steps,
                   float(record["phase_fraction_at_0.5"]))

    def record(self) -> dict[str, np.ndarray]:
        out = {"threshold": np.array(self.threshold),
               "training_phase_fraction": np.array(self.phase_fraction),
               "calibration_draws": np.array(self.draws),
               "phase_fraction_at_0.5": np.array(self.phase_fraction_at_half)}
        for step, fraction in self.calibration_steps:
            out[f"after_{step}"] = np.array(fraction)
        return out


def match_training(probabilities: np.ndarray, phase_fraction: float,
                   morphology: SegmentationParameters | None
                   ) -> tuple[np.ndarray, float, list[tuple[str, float]]]:
    """``probabilities`` finished by a :class:`Finishing` calibrated on themselves (a large
    calibration draw; for new images of the same prior use :meth:`Finishing.apply`). Returns
    the maps {0, 1} (float32), the threshold and the phase fraction after each step."""
    finishing = Finishing.calibrate(probabilities, phase_fraction, morphology)
    binary, steps = finishing.apply(probabilities)
    return binary.astype(np.float32), finishing.threshold, steps


def mixture(model: VAE, prior_fit: MixturePrior, n: int, generator: torch.Generator
            ) -> tuple[np.ndarray, torch.Tensor]:
    """``n`` images decoded from the mixture prior (shuffled: sklearn returns its draws sorted
    by component) and their z (n, L)."""
    state = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    prior_fit.mixture.random_state = state
    used_coords, _ = prior_fit.mixture.sample(n)
    rest = torch.randn((n, len(prior_fit.mean) - prior_fit.used), generator=generator,
                       dtype=torch.float64).numpy() * np.sqrt(prior_fit.variances[prior_fit.used:])
    coords = np.concatenate([used_coords, rest], axis=1)
    coords = coords[torch.randperm(n, generator=generator).numpy()]
    z = torch.from_numpy(prior_fit.mean + coords @ prior_fit.basis.T).float()
    return decode(model, z), z


def posterior(model: VAE, z_mean: torch.Tensor, z_log_var: torch.Tensor, n_draws: int,
              generator: torch.Generator) -> np.ndarray:
    """(M, K, H, W): K draws of eq. 1 for each of M encoded images."""
    eps = torch.randn((len(z_mean), n_draws, *z_mean.shape[1:]), generator=generator)
    z = reparameterize(z_mean[:, None], z_log_var[:, None], eps)
    images = decode(model, z.reshape(-1, *z_mean.shape[1:]))
    return images.reshape(len(z_mean), n_draws, *images.shape[1:])


def with_noise(model: VAE, z_mean: torch.Tensor, sigma: float, n_draws: int,
               generator: torch.Generator) -> np.ndarray:
    """(M, K, H, W): z_mean + sigma * eps, K draws per image."""
    eps = torch.randn((len(z_mean), n_draws, *z_mean.shape[1:]), generator=generator)
    z = z_mean[:, None] + sigma * eps
    images = decode(model, z.reshape(-1, *z_mean.shape[1:]))
    return images.reshape(len(z_mean), n_draws, *images.shape[1:])


def interpolation(model: VAE, z1: torch.Tensor, z2: torch.Tensor, n_steps: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Midpoints (P, H, W) of (z1 + z2) / 2 and paths (P, S, H, W) from z1 to z2."""
    midpoint = decode(model, 0.5 * (z1 + z2))
    t = torch.linspace(0.0, 1.0, n_steps).view(1, n_steps, *([1] * (z1.dim() - 1)))
    path = (1 - t) * z1[:, None] + t * z2[:, None]
    images = decode(model, path.reshape(-1, *z1.shape[1:]))
    return midpoint, images.reshape(len(z1), n_steps, *images.shape[1:])


@dataclass
class Generation:
    """What the samplers of one :func:`generate` call share: the model, the settings, the one
    generator every draw comes from, the arrays written so far (``out``: a sampler records its
    fit there) and the real images (test images are encoded by :func:`generate`)."""

    model: VAE
    cfg: SampleConfig
    generator: torch.Generator
    out: dict[str, np.ndarray]
    tile: int | None = None
    fit_images: np.ndarray | None = None
    val_images: np.ndarray | None = None
    regions: tuple[np.ndarray, np.ndarray] | None = None
    diffusion_prior: DiffusionPrior | None = None
    sampling_steps: int = DiffusionConfig.sampling_steps
    guidance: float = DiffusionConfig.guidance
    guidance_schedule: list[list[float]] | None = DiffusionConfig.guidance_schedule
    target_texture: bool = DiffusionConfig.target_texture
    _codes: tuple[torch.Tensor, torch.Tensor] | None = None

    def codes(self, needed_by: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoded training images (encoded once)."""
        if self._codes is None:
            if self.fit_images is None or len(self.fit_images) < 2:
                raise MicrovaeError(f"mode {needed_by} needs at least 2 training images to "
                                    "encode (--dataset with a train split)")
            self._codes = encode(self.model, self.fit_images)
        return self._codes


@dataclass
class EncodedTest:
    """The encoded test images that the seeded modes start from."""

    z_mean: torch.Tensor
    z_log_var: torch.Tensor
    chosen: np.ndarray  # the images of the posterior and noise sets
    picker: torch.Generator  # picks the interpolation pairs (seeded by sample.seed alone)


# An unseeded mode's sampler builder: fits what the mode needs, then returns a function
# (n, generator, size=tile, periodic=False, [target]) -> (probabilities, latents).
UNSEEDED_SAMPLERS: dict[str, Any] = {}
# A seeded mode's writer: adds its sets to ``out`` from the encoded test images.
ENCODED_SAMPLERS: dict[str, Any] = {}


def unseeded_sampler(name: str):
    def register(builder):
        UNSEEDED_SAMPLERS[name] = builder
        return builder
    return register


def encoded_sampler(name: str):
    def register(writer):
        ENCODED_SAMPLERS[name] = writer
        return writer
    return register


@unseeded_sampler("prior")
def _prior_sampler(g: Generation):
    return lambda n, generator, size=g.tile, periodic=False: prior(g.model, n, generator, size,
                                                                    periodic)


@unseeded_sampler("field")
def _field_sampler(g: Generation):
    if g.regions is None:
        raise MicrovaeError("mode field needs the training regions of the data set "
                            "(--dataset, packed by this version)")
    fit = fit_field_prior(g.model, field_windows(*g.regions, FIELD_WINDOWS, g.generator),
                          g.generator)
    for key, value in fit.describe().items():
        g.out[fit_key("field", key)] = np.array(value)
    return lambda n, generator, size=g.tile, periodic=False: field(g.model, fit, n, generator,
                                                                    size, periodic)


@unseeded_sampler("diffusion")
def _diffusion_sampler(g: Generation):
    for key, value in g.diffusion_prior.describe().items():
        g.out[fit_key("diffusion", key)] = np.array(value)
    return lambda n, generator, size=g.tile, periodic=False, target=None, guidance=g.guidance: \
        diffusion(g.model, g.diffusion_prior, n, generator, size, periodic, target,
                  g.sampling_steps, guidance, g.target_texture)


@unseeded_sampler("aggregate")
def _aggregate_sampler(g: Generation):
    mean, cov = fit_aggregate_posterior(*g.codes("aggregate"))
    g.out["aggregate_mean"] = mean.numpy()
    g.out["aggregate_cov"] = cov.numpy()
    return lambda n, generator: aggregate(g.model, mean, cov, n, generator)


@unseeded_sampler("mixture")
def _mixture_sampler(g: Generation):
    if g.val_images is None or len(g.val_images) < 2:
        raise MicrovaeError("mode mixture needs at least 2 validation images to choose the "
                            "mixture on (--dataset with a val split)")
    codes = g.codes("mixture")
    state = int(torch.randint(0, 2**31 - 1, (1,), generator=g.generator))
    fit = fit_mixture(codes, encode(g.model, g.val_images), state)
    summary = fit.describe()
    g.out["mixture_components"] = np.array(summary["components"])
    g.out["mixture_full_covariance"] = np.array(summary["covariance"] == "full")
    g.out["mixture_subspace_dims"] = np.array(summary["subspace_dims"])
    g.out["mixture_validation_log_likelihood"] = np.array(summary["validation_log_likelihood"])
    return lambda n, generator: mixture(g.model, fit, n, generator)


@encoded_sampler("posterior")
def _posterior_sets(g: Generation, test: EncodedTest) -> None:
    g.out[POSTERIOR] = posterior(g.model, test.z_mean[test.chosen], test.z_log_var[test.chosen],
                                 g.cfg.n_draws, g.generator)
    g.out[POSTERIOR_INDEX] = test.chosen


@encoded_sampler("noise")
def _noise_sets(g: Generation, test: EncodedTest) -> None:
    g.out[NOISE_INDEX] = test.chosen
    for sigma in g.cfg.noise_sigmas:
        g.out[noise_key(sigma)] = with_noise(g.model, test.z_mean[test.chosen], sigma,
                                             g.cfg.n_draws, g.generator)


@encoded_sampler("interpolation")
def _interpolation_sets(g: Generation, test: EncodedTest) -> None:
    n_test = len(test.z_mean)
    if n_test < 2:
        raise MicrovaeError("interpolation needs at least 2 test images")
    pairs = torch.stack([torch.randperm(n_test, generator=test.picker)[:2]
                         for _ in range(g.cfg.n_pairs)]).numpy()
    mid, path = interpolation(g.model, test.z_mean[pairs[:, 0]], test.z_mean[pairs[:, 1]],
                              g.cfg.n_steps)
    g.out[INTERPOLATION_MIDPOINT] = mid
    g.out[INTERPOLATION_PATH] = path
    g.out[INTERPOLATION_PAIRS] = pairs


# A target phase fraction is met by feedback steps on this many images of their own each
# (sample.calibrate_targets). A map's error is measured where the prior reads its condition:
# as the smoothed local fraction that made the training conditions (diffusion.smoothed_cells).
# Measured per cell (smoothed over 2 cells, the first design) the error held detail finer than
# any training condition, which the prior amplifies: one step left a graded map's worst band
# 0.047-0.067 off, three steps 0.120 (benchmarks/results/target_calibration.json).
TARGET_CALIBRATION_IMAGES = 32
# ... and at least as many pixels as 32 images of 256 px: 32 tiles of 32 px measure a fraction
# to +-0.02 only (500 tiles of a Table 1 model's prior missed targets by up to 0.016).
TARGET_CALIBRATION_PIXELS = 32 * 256**2
TARGET_CALIBRATION_STEPS = 1
CONDITION_RANGE = (0.01, 0.99)


def calibrated_condition(draw, target, size: int, periodic: bool, finish,
                         generator: torch.Generator, n: int | None = None,
                         steps: int = TARGET_CALIBRATION_STEPS):
    """The condition that meets ``target`` (a phase fraction, or a map of one per latent cell of
    8 px): ``n`` images (None: :func:`calibration_images`) drawn with ``draw`` (n, generator,
    size, periodic, condition) at the condition and finished with ``finish`` (probabilities ->
    phase maps) give the achieved fraction; the condition is moved by the error ``steps``
    times, kept inside :data:`CONDITION_RANGE`. It starts at :func:`condition_of_target`; the
    error of a map is the difference of the achieved and target maps, both smoothed as the
    training conditions were. A conditional prior whose achieved
    fraction rises with the condition at a slope b meets the target to (1 - b)^steps of its
    error (plus the noise of the last ``n`` images)."""
    n = calibration_images(size) if n is None else n
    if np.ndim(target) == 0:
        condition = float(target)
        for _ in range(steps):
            images, _ = draw(n, generator, size, periodic, condition)
            error = float(np.asarray(finish(images), np.float64).mean()) - float(target)
            condition = float(np.clip(condition - error, *CONDITION_RANGE))
        return condition
    target = np.asarray(target, np.float64)
    cells_h, cells_w = target.shape
    wanted = smoothed_cells(target, periodic)
    condition = condition_of_target(target, periodic).astype(np.float64)
    for _ in range(steps):
        images, _ = draw(n, generator, size, periodic, condition.astype(np.float32))
        achieved = np.asarray(finish(images), np.float64).mean(0)
        achieved = achieved[:cells_h * (achieved.shape[0] // cells_h),
                            :cells_w * (achieved.shape[1] // cells_w)]
        achieved = achieved.reshape(cells_h, achieved.shape[0] // cells_h, cells_w,
                                    -1).mean((1, 3))
        condition = np.clip(condition - (smoothed_cells(achieved, periodic) - wanted),
                            *CONDITION_RANGE)
    return condition.astype(np.float32)


def calibration_images(size: int) -> int:
    """Images of ``size`` px per feedback step of the calibration of a target: at least
    :data:`TARGET_CALIBRATION_IMAGES`, and :data:`TARGET_CALIBRATION_PIXELS` in all."""
    return max(TARGET_CALIBRATION_IMAGES, -(-TARGET_CALIBRATION_PIXELS // size**2))


def condition_of_target(target, periodic: bool = False):
    """The condition that asks the prior for ``target`` with no calibration: a number as it is,
    a map (per latent cell) smoothed as the training conditions were, which is what the
    condition of an image that follows the map would be."""
    if np.ndim(target) == 0:
        return float(target)
    return np.clip(smoothed_cells(target, periodic), *CONDITION_RANGE).astype(np.float32)


def generate(model: VAE, test_images: np.ndarray | None, cfg: SampleConfig,
             modes: tuple[str, ...] = MODES, fit_images: np.ndarray | None = None,
             val_images: np.ndarray | None = None,
             regions: tuple[np.ndarray, np.ndarray] | None = None,
             training_phase_fraction: float | None = None,
             morphology: SegmentationParameters | None = None,
             diffusion_prior: DiffusionPrior | None = None,
             sampling_steps: int = DiffusionConfig.sampling_steps,
             guidance: float = DiffusionConfig.guidance,
             target_texture: bool = DiffusionConfig.target_texture,
             guidance_schedule: list[list[float]] | None = DiffusionConfig.guidance_schedule
             ) -> dict[str, np.ndarray]:
    """All requested modes, each by its registered sampler, in the registry's order; arrays
    keyed by their HDF5 names (probabilities in float32).

    ``aggregate`` and ``mixture`` are fitted to the codes of ``fit_images`` (the train split),
    ``mixture`` chosen on those of ``val_images``; ``field`` to windows of the training
    ``regions`` (canvases, mask); the encoded modes (posterior, noise, interpolation) encode
    ``test_images``. For conv models, the sized modes (prior, field, diffusion) are also
    generated at each of ``cfg.sizes`` (``large/{mode}_{size}``, ``cfg.n_large`` images,
    periodic with ``cfg.periodic``). With ``cfg.match_training`` every stack is also finished
    (:class:`Finishing`, ``training_phase_fraction``: of the train split; ``morphology``: of
    its segmentation, None for none) into ``finished/{key}``: each unseeded mode by a
    threshold calibrated on :data:`CALIBRATION_DRAWS` of its own images, the encoded modes by
    one calibrated on posterior draws of the ``fit_images``; ``finish/{calibration}/*``
    records each. ``diffusion`` samples ``diffusion_prior`` with ``sampling_steps`` DDIM steps
    and ``guidance`` (a target number: the weight at the number where ``guidance_schedule``
    is given, :func:`conditioned_sets`);
    ``cfg.phase_fractions`` and ``cfg.graded`` add its conditioned sets
    (``conditioned/diffusion_{target}_{size}``, ``graded/diffusion_{size}``, with their
    targets under ``targets/`` and the conditions they were drawn with under ``conditions/``:
    the targets calibrated with ``cfg.calibrate_targets``; with ``target_texture`` a number is
    asked for as :func:`textured_conditions`), finished by the unconditional prior's threshold.
    """
    cfg.check()
    check_modes(model, modes, ("diffusion",) if diffusion_prior is not None else ())
    if (cfg.phase_fractions or cfg.graded) and "diffusion" not in modes:
        raise MicrovaeError("sample.phase_fractions and sample.graded generate through the "
                            "diffusion prior: they need mode diffusion (diffusion.enabled)")
    if cfg.graded and not model.spatial:
        raise MicrovaeError("sample.graded: a table1 model draws each image at one phase "
                            "fraction; graded maps need a conv model (model.architecture: conv)")
    if cfg.sizes and not model.spatial:
        raise MicrovaeError("sample.sizes: a table1 model generates only its training size "
                            f"{model.config['image_size']}; larger images need a conv model "
                            "(model.architecture: conv)")
    encoded = [m for m in MODES if m in modes and m in ENCODED_MODES]
    out: dict[str, np.ndarray] = {}
    # A conv model's unseeded images at the tiles' size, to be compared with the real tiles
    # (its training crops may be larger).
    tile = test_images.shape[-1] if model.spatial and test_images is not None else None
    g = Generation(model, cfg, torch.Generator().manual_seed(cfg.seed), out, tile, fit_images,
                   val_images, regions, diffusion_prior, sampling_steps, guidance,
                   guidance_schedule, target_texture)
    samplers = {name: UNSEEDED_SAMPLERS[name](g) for name in MODES
                if name in modes and name not in ENCODED_MODES}
    if cfg.match_training and encoded:  # their finishing is calibrated on the train codes
        g.codes(" ".join(encoded))
    if cfg.match_training and training_phase_fraction is None:
        raise MicrovaeError("sample.match_training needs the phase fraction of the train split "
                            "(--dataset)")
    if encoded and (test_images is None or len(test_images) == 0):
        raise MicrovaeError(f"modes {encoded} need real images to encode (--dataset)")
    for name, draw in samplers.items():
        out[name], z = draw(cfg.n_prior, g.generator)
        out[latent_key(name)] = z.numpy()
    for size in cfg.sizes:
        for name in (m for m in SIZED_MODES if m in samplers):
            out[large_key(name, size)], _ = samplers[name](cfg.n_large, g.generator, size,
                                                            cfg.periodic)
    finishings = calibrate_finishings(
        model, out, samplers, g._codes if encoded else None, training_phase_fraction,
        morphology, cfg.seed, cfg.calibration_draws) if cfg.match_training else {}
    if "diffusion" in samplers:
        conditioned_sets(g, samplers["diffusion"], finishings.get("diffusion"), tile)
    if encoded:
        test = encode_test(g, test_images)
        for name in encoded:
            ENCODED_SAMPLERS[name](g, test)
    if cfg.match_training:
        apply_finishings(out, finishings)
    return out


def conditioned_sets(g: Generation, draw, finishing: Finishing | None, tile: int | None) -> None:
    """The diffusion prior's sets at each target phase fraction and the graded map, at each
    size of ``sample.sizes`` (or the tile size), with their targets and the conditions they
    were drawn with (calibrated with ``sample.calibrate_targets``: draws of a generator of
    their own, finished by the unconditional prior's ``finishing``, or cut at 0.5). A target
    number is drawn, calibration included, with the guidance weight of
    ``g.guidance_schedule`` at the number where one is given; a map keeps ``g.guidance`` (a
    weight per cell met a graded map worse: worst column band 0.038 against 0.019,
    docs/diffusion.md)."""
    cfg = g.cfg
    calibration = torch.Generator().manual_seed(cfg.seed + 104729)

    def finish(probabilities):
        if finishing is None:
            return probabilities > 0.5
        flat, _ = finishing.apply(probabilities.reshape(-1, *probabilities.shape[-2:]))
        return flat.reshape(probabilities.shape)

    for size in cfg.sizes or [tile or g.model.config["image_size"][-1]]:
        targets = {conditioned_key(t, size): t for t in cfg.phase_fractions}
        if cfg.graded:
            targets[graded_key(size)] = linear_gradient(*cfg.graded, size // 8, size // 8)
        for key, target in targets.items():
            weight = g.guidance if g.guidance_schedule is None or np.ndim(target) else \
                guidance_weight(g.guidance_schedule, target)

            def draw_at(*args, weight=weight):
                return draw(*args, guidance=weight)

            condition = calibrated_condition(
                draw_at, target, size, cfg.periodic, finish, calibration,
                steps=TARGET_CALIBRATION_STEPS) if cfg.calibrate_targets else \
                condition_of_target(target, cfg.periodic)
            g.out[key], _ = draw_at(cfg.n_large, g.generator, size, cfg.periodic, condition)
            g.out[target_key(key)] = np.asarray(target, np.float32 if np.ndim(target) else None)
            g.out[condition_key(key)] = np.asarray(condition, np.float32)


def encode_test(g: Generation, test_images: np.ndarray) -> EncodedTest:
    """Reconstructions of every test image (into ``g.out``), and the encoded images the
    seeded modes start from."""
    z_mean, z_log_var = encode(g.model, test_images)
    g.out[RECONSTRUCTION], g.out[RECONSTRUCTION_BCE] = reconstruct(g.model, test_images, z_mean)
    g.out["test_z_mean"] = z_mean.numpy()
    g.out["test_z_log_var"] = z_log_var.numpy()
    # The real images to encode depend on the seed only, so that every latent size
    # (and every mode) works on the same images.
    picker = torch.Generator().manual_seed(g.cfg.seed + 1)
    chosen = np.sort(torch.randperm(len(test_images), generator=picker)
                     [:g.cfg.n_posterior_images].numpy())
    return EncodedTest(z_mean, z_log_var, chosen, picker)


def calibrate_finishings(model: VAE, out: dict[str, np.ndarray], samplers: dict,
                         codes: tuple[torch.Tensor, torch.Tensor] | None, phase_fraction: float,
                         morphology: SegmentationParameters | None, seed: int,
                         draws: int = CALIBRATION_DRAWS) -> dict[str, Finishing]:
    """Calibrate one :class:`Finishing` per prior (and one for the encoded sets, on posterior
    draws of the training ``codes``) from ``draws`` images of their own (``diffusion``: as many
    pixels, in 256 px images). The calibration draws come from a generator of their own, so
    that the generated sets are the same with and without the finishing."""
    generator = torch.Generator().manual_seed(seed + 7919)
    finishings: dict[str, Finishing] = {}
    for name, draw in samplers.items():
        if name == "diffusion" and model.spatial:  # as many pixels in canvases of 256 px
            canvas = 8 * CANVAS_CELLS
            tile_pixels = int(np.prod(out["diffusion"].shape[-2:]))
            probabilities, _ = draw(-(-draws * tile_pixels // canvas**2), generator, canvas)
        else:
            probabilities, _ = draw(draws, generator)
        finishings[name] = Finishing.calibrate(probabilities, phase_fraction, morphology)
    if codes is not None:
        z_mean, z_log_var = codes
        per_image = -(-draws // len(z_mean))
        index = torch.arange(len(z_mean)).repeat(per_image)[:max(draws, len(z_mean))]
        eps = torch.randn((len(index), *z_mean.shape[1:]), generator=generator)
        probabilities = decode(model, reparameterize(z_mean[index], z_log_var[index], eps))
        finishings["encoded"] = Finishing.calibrate(probabilities, phase_fraction, morphology)
    return finishings


def apply_finishings(out: dict[str, np.ndarray], finishings: dict[str, Finishing]) -> None:
    """Finish every image stack of ``out`` into ``finished/{key}`` by the finishing of its
    calibration; the records go to ``finish/{calibration}/``."""
    for key in image_keys(out):
        stack = out[key]
        maps, _ = finishings[calibration_of(key)].apply(stack.reshape(-1, *stack.shape[-2:]))
        out[finished_key(key)] = maps.reshape(stack.shape)
    for name, finishing in finishings.items():
        for field_name, value in finishing.record().items():
            out[finish_key(name, field_name)] = value


def latent_manifold(model: VAE, grid: int = 15, extent: float = 3.0) -> np.ndarray:
    """Decoded images (grid, grid, H, W) of a 2-D latent space on a regular grid over
    [-extent, extent]^2; the top row is z2 = +extent (Figure 7)."""
    if model.latent_size != 2:
        raise MicrovaeError(f"a latent manifold needs a 2-D latent space, this model has "
                            f"{model.latent_size}")
    values = np.linspace(-extent, extent, grid)
    z2, z1 = np.meshgrid(values[::-1], values, indexing="ij")
    z = torch.from_numpy(np.stack([z1.ravel(), z2.ravel()], 1).astype(np.float32))
    return decode(model, z).reshape(grid, grid, *model.config["image_size"])
