"""Generation of new microstructures from a trained VAE (section 3 of the paper).

Modes:
* ``prior``: z ~ N(0, I), decoded.
* ``aggregate``: z ~ N(m, C), the Gaussian with the mean and covariance of the aggregate
  posterior of the training images, q(z) = mean over images of N(z_mean, exp(z_log_var))
  ("ex-post density estimation", Ghosh et al., ICLR 2020). No real image seeds a sample; it
  covers the part of the latent space the decoder was trained on, which N(0, I) does not when
  the encoder uses only a subspace of a large latent space (see README, "Prior samples").
* ``posterior``: for M test images, K draws of z = z_mean + exp(z_log_var / 2) * eps (eq. 1).
* ``noise``: for the same images, z = z_mean + sigma * eps for each sigma (Figure 9).
* ``interpolation``: for P pairs of test images, the midpoint (z1 + z2) / 2 (Figure 10) and a
  path of S evenly spaced points from z1 to z2 (z = z_mean of each image; endpoints included).
Outputs are pixel probabilities of phase 1 in [0, 1]; all randomness comes from one seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import MicrovaeError
from .h5io import write_arrays
from .model import VAE, load_model, reparameterize

MODES = ("prior", "aggregate", "posterior", "noise", "interpolation")
ENCODED_MODES = ("posterior", "noise", "interpolation")
STORAGE = "float16 probabilities of phase 1 in [0, 1]"


@dataclass
class SampleConfig:
    n_prior: int = 500
    n_posterior_images: int = 64
    n_draws: int = 8
    noise_sigmas: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    n_pairs: int = 8
    n_steps: int = 9
    seed: int = 0

    def check(self) -> None:
        for key in ("n_prior", "n_posterior_images", "n_draws", "n_pairs"):
            if getattr(self, key) < 0:
                raise MicrovaeError(f"sample.{key}: must be >= 0, got {getattr(self, key)}")
        if self.n_steps < 2:
            raise MicrovaeError(f"sample.n_steps: need at least 2 path points, got {self.n_steps}")
        if any(s <= 0 for s in self.noise_sigmas):
            raise MicrovaeError(f"sample.noise_sigmas: must be > 0, got {self.noise_sigmas}")


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
             modes: tuple[str, ...] = MODES, fit_images: np.ndarray | None = None
             ) -> dict[str, np.ndarray]:
    """All requested modes; arrays keyed by their HDF5 names (probabilities in float32).

    ``aggregate`` fits its Gaussian to ``fit_images`` (the train split); the encoded modes
    (posterior, noise, interpolation) encode ``test_images``.
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
    if "aggregate" in modes:
        if fit_images is None or len(fit_images) < 2:
            raise MicrovaeError("mode aggregate needs at least 2 training images to encode "
                                "(--dataset with a train split)")
        mean, cov = fit_aggregate_posterior(*encode(model, fit_images))
        out["aggregate"], z = aggregate(model, mean, cov, cfg.n_prior, generator)
        out["aggregate_z"] = z.numpy()
        out["aggregate_mean"] = mean.numpy()
        out["aggregate_cov"] = cov.numpy()
    needs_data = [m for m in modes if m in ENCODED_MODES]
    if not needs_data:
        return out
    if test_images is None or len(test_images) == 0:
        raise MicrovaeError(f"modes {needs_data} need real images to encode (--dataset)")
    z_mean, z_log_var = encode(model, test_images)
    out["reconstruction"] = decode(model, z_mean)
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


def write_samples(path: str | os.PathLike, arrays: dict[str, np.ndarray],
                  attrs: dict[str, Any]) -> None:
    """Write generated arrays: image stacks as float16 probabilities, the rest as they are."""
    stored = {}
    for name, array in arrays.items():
        is_images = name in ("prior", "aggregate", "posterior", "reconstruction") or name.startswith(
            ("noise/", "interpolation/midpoint", "interpolation/path"))
        stored[name] = array.astype(np.float16) if is_images else array
    write_arrays(path, stored, attrs={**attrs, "storage": STORAGE})


@dataclass
class SampleRun:
    """What :func:`sample_to_file` generated, with the model and real images it used."""

    arrays: dict[str, np.ndarray]
    model: VAE
    real: np.ndarray | None


def sample_to_file(model_path: str | os.PathLike, out: str | os.PathLike,
                   dataset: str | os.PathLike | None, cfg: SampleConfig,
                   modes: tuple[str, ...] = MODES, split: str = "test",
                   max_fit_images: int = 5000) -> SampleRun:
    """Load a model, generate the modes and write them to ``out`` (atomic).

    The aggregate mode is fitted to at most ``max_fit_images`` evenly spaced training images.
    """
    from .dataset import evenly_spaced, load_split

    model, payload = load_model(model_path)
    test_images = load_split(dataset, split) if dataset is not None else None
    fit_images = None
    if "aggregate" in modes and dataset is not None:
        fit_images = evenly_spaced(load_split(dataset, "train"), max_fit_images)
    arrays = generate(model, test_images, cfg, modes, fit_images)
    write_samples(out, arrays, attrs={
        "model": str(model_path), "model_config": payload["config"],
        "model_fingerprint": payload.get("extra", {}).get("data_fingerprint", ""),
        "latent_size": model.latent_size, "seed": cfg.seed, "modes": list(modes),
        "noise_sigmas": list(cfg.noise_sigmas), "dataset": str(dataset or ""), "split": split,
        "n_steps": cfg.n_steps})
    return SampleRun(arrays, model, test_images)


def export_binary(images: np.ndarray, directory: str | os.PathLike, fmt: str,
                  prefix: str = "sample") -> list[Path]:
    """Binarise probabilities at 0.5 and write one file per image (png|tif) or one stack (npy)."""
    from .atomic import atomic_path

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    binary = (images.reshape(-1, *images.shape[-2:]) > 0.5).astype(np.uint8)
    if fmt == "npy":
        path = directory / f"{prefix}.npy"
        with atomic_path(path) as tmp:
            np.save(tmp, binary)
        return [path]
    written = []
    for i, image in enumerate(binary):
        path = directory / f"{prefix}_{i:05d}.{fmt}"
        with atomic_path(path) as tmp:
            if fmt == "png":
                import imageio.v3 as iio

                iio.imwrite(tmp, image * 255)
            elif fmt == "tif":
                import tifffile

                tifffile.imwrite(tmp, image * 255)
            else:
                raise MicrovaeError(f"--export-format: unknown format {fmt!r}")
        written.append(path)
    return written


FIGURES = ("prior", "posterior", "noise", "interpolation", "latent_map")


def write_figures(model: VAE, arrays: dict[str, np.ndarray], test_images: np.ndarray,
                  paths: dict[str, str | os.PathLike], grid: int = 15, extent: float = 3.0) -> None:
    """PNG figures of the generated sets (keys of ``paths``: FIGURES)."""
    from . import plots
    from .atomic import save_figure

    latent = model.latent_size
    tag = f"latent size {latent}"
    if "prior" in paths:
        title = f"prior samples, {tag}"
        if "aggregate" in arrays:
            title = f"prior (top) and aggregate-posterior (bottom) samples, {tag}"
        save_figure(plots.prior_grid(arrays["prior"], arrays.get("aggregate"), title=title),
                    paths["prior"])
    chosen = arrays.get("posterior_index")
    if "posterior" in paths:
        save_figure(plots.posterior_figure(test_images[chosen], arrays["reconstruction"][chosen],
                                           arrays["posterior"],
                                           title=f"posterior draws (eq. 1), {tag}"),
                    paths["posterior"])
    if "noise" in paths:
        noisy = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("noise/")}
        save_figure(plots.noise_figure(test_images[chosen], noisy,
                                       title=f"z_mean + sigma * eps, {tag}"), paths["noise"])
    if "interpolation" in paths:
        pairs = arrays["interpolation/pairs"]
        save_figure(plots.interpolation_figure(
            test_images[pairs[:, 0]], test_images[pairs[:, 1]], arrays["interpolation/midpoint"],
            arrays["interpolation/path"], title=f"latent interpolation, {tag}"),
            paths["interpolation"])
    if "latent_map" in paths:
        manifold = None
        if latent == 2:
            values = np.linspace(-extent, extent, grid)
            z2, z1 = np.meshgrid(values[::-1], values, indexing="ij")  # top row: z2 = +extent
            z = torch.from_numpy(np.stack([z1.ravel(), z2.ravel()], 1).astype(np.float32))
            manifold = decode(model, z).reshape(grid, grid, *model.config["image_size"])
        fractions = test_images.reshape(len(test_images), -1).mean(1)
        save_figure(plots.latent_map(arrays["test_z_mean"], fractions, manifold, extent,
                                     title=f"latent space (Figure 7), {tag}"),
                    paths["latent_map"])
