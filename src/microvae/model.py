"""The variational autoencoder of Table 1 (Ashfaq et al., 2025), for any image size that is a
multiple of 8 and any latent size.

Encoder: Conv 64, 128, 256 (3x3, stride 2, same padding, ReLU) -> flatten -> Dense 256 ReLU ->
Dense z_mean, Dense z_log_var. Decoder: Dense (H/8)(W/8)*256 ReLU -> reshape -> ConvTranspose
256, 128, 64 (3x3, stride 2, ReLU) -> ConvTranspose 1 (3x3, stride 1). The decoder returns
logits; :meth:`VAE.decode` applies the sigmoid that gives pixel probabilities of phase 1.
Images are tensors (N, 1, H, W) with values in [0, 1].
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .errors import MicrovaeError

CHANNELS = (64, 128, 256)
DENSE = 256
# A direction of the latent space is used by the encoder where the z_mean of real images vary
# along it by more than this (the posterior variances are ~0.02 for the default training).
USED_VARIANCE = 0.01


def model_config(image_size: tuple[int, int] | list[int] | int, latent_size: int) -> dict[str, Any]:
    """The model's own configuration, saved with its weights."""
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    height, width = (int(s) for s in image_size)
    if height % 8 or width % 8 or height < 8 or width < 8:
        raise MicrovaeError(f"image_size: {height}x{width} px is not a multiple of 8 "
                            "(the network halves the size three times)")
    if int(latent_size) < 1:
        raise MicrovaeError(f"model.latent_sizes: latent size must be >= 1, got {latent_size}")
    return {"image_size": [height, width], "latent_size": int(latent_size),
            "channels": list(CHANNELS), "dense": DENSE}


class VAE(nn.Module):
    """Table 1 network. ``forward`` returns ``(logits, z_mean, z_log_var, z)``."""

    def __init__(self, image_size: tuple[int, int] | list[int] | int, latent_size: int):
        super().__init__()
        self.config = model_config(image_size, latent_size)
        height, width = self.config["image_size"]
        c1, c2, c3 = CHANNELS
        self.grid = (height // 8, width // 8)
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c3 * self.grid[0] * self.grid[1], DENSE), nn.ReLU(),
        )
        self.z_mean = nn.Linear(DENSE, latent_size)
        self.z_log_var = nn.Linear(DENSE, latent_size)
        self.decoder_dense = nn.Sequential(
            nn.Linear(latent_size, c3 * self.grid[0] * self.grid[1]), nn.ReLU())
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(c3, c3, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(c3, c2, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(c2, c1, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(c1, 1, 3, stride=1, padding=1),
        )

    @property
    def latent_size(self) -> int:
        return self.config["latent_size"]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_mean, z_log_var)`` of images ``x`` (N, 1, H, W)."""
        h = self.encoder(x)
        return self.z_mean(h), self.z_log_var(h)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Logits (N, 1, H, W) of phase 1 for latent vectors ``z`` (N, latent)."""
        h = self.decoder_dense(z).view(-1, CHANNELS[2], *self.grid)
        if self.decoder[0].weight.is_contiguous(memory_format=torch.channels_last):
            h = h.contiguous(memory_format=torch.channels_last)
        return self.decoder(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities of phase 1 in [0, 1], (N, 1, H, W)."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None):
        z_mean, z_log_var = self.encode(x)
        if eps is None:
            eps = torch.randn_like(z_mean)
        z = reparameterize(z_mean, z_log_var, eps)
        return self.decode_logits(z), z_mean, z_log_var, z


INIT_SCHEMES = ("keras", "torch")


def initialize(model: nn.Module, scheme: str = "keras") -> nn.Module:
    """Initialise the weights in place: ``keras`` as the paper's framework does (glorot-uniform
    kernels, zero biases; the glorot bound depends on fan_in + fan_out only, so PyTorch's
    (in, out) order of transposed-convolution kernels gives Keras's bound), ``torch`` keeps
    PyTorch's defaults (kaiming-uniform with a = sqrt(5), which starts the decoder's Dense layer
    about 18x larger than glorot at latent 2, 32 px)."""
    if scheme not in INIT_SCHEMES:
        raise MicrovaeError(f"model.init: unknown scheme {scheme!r}; use one of {INIT_SCHEMES}")
    if scheme == "keras":
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
    return model


def reparameterize(z_mean: torch.Tensor, z_log_var: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Eq. 1 of the paper: z = z_mean + exp(z_log_var / 2) * eps."""
    return z_mean + torch.exp(0.5 * z_log_var) * eps


def kl_per_dimension(z_mean: torch.Tensor, z_log_var: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) of each latent dimension, (N, latent), in nats."""
    return 0.5 * (z_mean.pow(2) + z_log_var.exp() - 1.0 - z_log_var)


def vae_loss(logits: torch.Tensor, x: torch.Tensor, z_mean: torch.Tensor, z_log_var: torch.Tensor,
             kl_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, bce, kl)``, each the mean over the batch of per-image values.

    BCE is summed over the pixels of an image (computed on logits, in fp32); KL is summed over
    the latent dimensions; loss = BCE + kl_weight * KL.
    """
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, x.float(), reduction="none")
    bce = bce.flatten(1).sum(1).mean()
    kl = kl_per_dimension(z_mean.float(), z_log_var.float()).sum(1).mean()
    return bce + kl_weight * kl, bce, kl
