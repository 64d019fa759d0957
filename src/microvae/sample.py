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
* ``posterior``: for M test images, K draws of z = z_mean + exp(z_log_var / 2) * eps (eq. 1).
* ``noise``: for the same images, z = z_mean + sigma * eps for each sigma (Figure 9).
* ``interpolation``: for P pairs of test images, the midpoint (z1 + z2) / 2 (Figure 10) and a
  path of S evenly spaced points from z1 to z2 (z = z_mean of each image; endpoints included).
Outputs are pixel probabilities of phase 1 in [0, 1]; all randomness comes from one seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from .config import check_parameters, parse_options
from .errors import MicrovaeError
from .model import USED_VARIANCE, VAE, reparameterize

MODES = ("prior", "aggregate", "mixture", "posterior", "noise", "interpolation")
FITTED_MODES = ("aggregate", "mixture")
MIXTURE_COMPONENTS = (1, 2, 4, 8)
MIXTURE_COVARIANCES = ("full", "tied", "diag")
# A mixture is tried only where the training codes number at least this many per parameter.
CODES_PER_PARAMETER = 5
ENCODED_MODES = ("posterior", "noise", "interpolation")


@dataclass
class SampleConfig:
    """Settings of the generation (the config's ``sample`` section; defaults as the schema)."""

    n_prior: int = 500
    n_posterior_images: int = 64
    n_draws: int = 8
    noise_sigmas: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    n_pairs: int = 8
    n_steps: int = 9
    seed: int = 0

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> SampleConfig:
        return parse_options(cls, options, "sample")

    def check(self) -> None:
        check_parameters(self, "sample")


@torch.no_grad()
def decode(model: VAE, z: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Probabilities (N, H, W) float32 for latent vectors ``z`` (N, L), decoded in batches."""
    out = [model.decode(z[i:i + batch_size]).float()[:, 0].cpu().numpy()
           for i in range(0, len(z), batch_size)]
    if not out:
        return np.zeros((0, *model.config["image_size"]), np.float32)
    return np.concatenate(out)


@torch.no_grad()
def encode(model: VAE, images: np.ndarray, batch_size: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z_mean, z_log_var)`` of binary images (N, H, W)."""
    expected = tuple(model.config["image_size"])
    if tuple(images.shape[1:]) != expected:
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
def reconstruction_bce(model: VAE, images: np.ndarray, z_mean: torch.Tensor,
                       batch_size: int = 64) -> np.ndarray:
    """BCE per pixel (nats) of each image against its reconstruction from ``z_mean``,
    computed from the decoder's fp32 logits (not from rounded probabilities)."""
    out = []
    for i in range(0, len(images), batch_size):
        logits = model.decode_logits(z_mean[i:i + batch_size]).float()
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).float()[:, None]
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        out.append(bce.flatten(1).mean(1).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def prior(model: VAE, n: int, generator: torch.Generator) -> tuple[np.ndarray, torch.Tensor]:
    z = torch.randn((n, model.latent_size), generator=generator)
    return decode(model, z), z


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
    eps = torch.randn((len(z_mean), n_draws, z_mean.shape[1]), generator=generator)
    z = reparameterize(z_mean[:, None], z_log_var[:, None], eps)
    return decode(model, z.reshape(-1, z.shape[-1])).reshape(len(z_mean), n_draws,
                                                              *model.config["image_size"])


def with_noise(model: VAE, z_mean: torch.Tensor, sigma: float, n_draws: int,
               generator: torch.Generator) -> np.ndarray:
    """(M, K, H, W): z_mean + sigma * eps, K draws per image."""
    eps = torch.randn((len(z_mean), n_draws, z_mean.shape[1]), generator=generator)
    z = z_mean[:, None] + sigma * eps
    return decode(model, z.reshape(-1, z.shape[-1])).reshape(len(z_mean), n_draws,
                                                              *model.config["image_size"])


def interpolation(model: VAE, z1: torch.Tensor, z2: torch.Tensor, n_steps: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Midpoints (P, H, W) of (z1 + z2) / 2 and paths (P, S, H, W) from z1 to z2."""
    midpoint = decode(model, 0.5 * (z1 + z2))
    t = torch.linspace(0.0, 1.0, n_steps)[None, :, None]
    path = (1 - t) * z1[:, None] + t * z2[:, None]
    images = decode(model, path.reshape(-1, z1.shape[1])).reshape(len(z1), n_steps,
                                                                   *model.config["image_size"])
    return midpoint, images


def generate(model: VAE, test_images: np.ndarray | None, cfg: SampleConfig,
             modes: tuple[str, ...] = MODES, fit_images: np.ndarray | None = None,
             val_images: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """All requested modes; arrays keyed by their HDF5 names (probabilities in float32).

    ``aggregate`` and ``mixture`` are fitted to the codes of ``fit_images`` (the train split),
    ``mixture`` chosen on those of ``val_images``; the encoded modes (posterior, noise,
    interpolation) encode ``test_images``.
    """
    cfg.check()
    unknown = set(modes) - set(MODES)
    if unknown:
        raise MicrovaeError(f"unknown sampling mode(s) {sorted(unknown)}; use {list(MODES)}")
    generator = torch.Generator().manual_seed(cfg.seed)
    out: dict[str, np.ndarray] = {}
    if "prior" in modes:
        out["prior"], z = prior(model, cfg.n_prior, generator)
        out["prior_z"] = z.numpy()
    fitted = [m for m in modes if m in FITTED_MODES]
    if fitted and (fit_images is None or len(fit_images) < 2):
        raise MicrovaeError(f"mode {' '.join(fitted)} needs at least 2 training images to "
                            "encode (--dataset with a train split)")
    codes = encode(model, fit_images) if fitted else None
    if "aggregate" in modes:
        mean, cov = fit_aggregate_posterior(*codes)
        out["aggregate"], z = aggregate(model, mean, cov, cfg.n_prior, generator)
        out["aggregate_z"] = z.numpy()
        out["aggregate_mean"] = mean.numpy()
        out["aggregate_cov"] = cov.numpy()
    if "mixture" in modes:
        if val_images is None or len(val_images) < 2:
            raise MicrovaeError("mode mixture needs at least 2 validation images to choose the "
                                "mixture on (--dataset with a val split)")
        state = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        fit = fit_mixture(codes, encode(model, val_images), state)
        out["mixture"], z = mixture(model, fit, cfg.n_prior, generator)
        out["mixture_z"] = z.numpy()
        summary = fit.describe()
        out["mixture_components"] = np.array(summary["components"])
        out["mixture_full_covariance"] = np.array(summary["covariance"] == "full")
        out["mixture_subspace_dims"] = np.array(summary["subspace_dims"])
        out["mixture_validation_log_likelihood"] = np.array(summary["validation_log_likelihood"])
    needs_data = [m for m in modes if m in ENCODED_MODES]
    if not needs_data:
        return out
    if test_images is None or len(test_images) == 0:
        raise MicrovaeError(f"modes {needs_data} need real images to encode (--dataset)")
    z_mean, z_log_var = encode(model, test_images)
    out["reconstruction"] = decode(model, z_mean)
    out["reconstruction_bce"] = reconstruction_bce(model, test_images, z_mean)
    out["test_z_mean"] = z_mean.numpy()
    out["test_z_log_var"] = z_log_var.numpy()
    n_test = len(test_images)
    # The real images to encode depend on the seed only, so that every latent size
    # (and every mode) works on the same images.
    picker = torch.Generator().manual_seed(cfg.seed + 1)
    chosen = np.sort(torch.randperm(n_test, generator=picker)[:cfg.n_posterior_images].numpy())
    if "posterior" in modes:
        out["posterior"] = posterior(model, z_mean[chosen], z_log_var[chosen], cfg.n_draws,
                                     generator)
        out["posterior_index"] = chosen
    if "noise" in modes:
        out["noise_index"] = chosen
        for sigma in cfg.noise_sigmas:
            out[f"noise/{sigma:g}"] = with_noise(model, z_mean[chosen], sigma, cfg.n_draws,
                                                 generator)
    if "interpolation" in modes:
        if n_test < 2:
            raise MicrovaeError("interpolation needs at least 2 test images")
        pairs = torch.stack([torch.randperm(n_test, generator=picker)[:2]
                             for _ in range(cfg.n_pairs)]).numpy()
        mid, path = interpolation(model, z_mean[pairs[:, 0]], z_mean[pairs[:, 1]], cfg.n_steps)
        out["interpolation/midpoint"] = mid
        out["interpolation/path"] = path
        out["interpolation/pairs"] = pairs
    return out


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
