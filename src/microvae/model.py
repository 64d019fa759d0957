"""The variational autoencoders: Table 1 of the paper (Ashfaq et al., 2025), for any image size
that is a multiple of 8 and any latent size, and a fully convolutional variant.

Encoder: Conv 64, 128, 256 (3x3, stride 2, same padding, ReLU) -> flatten -> Dense 256 ReLU ->
Dense z_mean, Dense z_log_var. Decoder: Dense (H/8)(W/8)*256 ReLU -> reshape -> ConvTranspose
256, 128, 64 (3x3, stride 2, ReLU) -> ConvTranspose 1 (3x3, stride 1). The decoder returns
logits; :meth:`VAE.decode` applies the sigmoid that gives pixel probabilities of phase 1.
Images are tensors (N, 1, H, W) with values in [0, 1].

``conv`` (:class:`ConvVAE`): the same convolutional stacks, the Dense layers replaced by 1x1
convolutions to and from a spatial latent grid of C channels at (H/8)x(W/8): encoder ... Conv
256 -> Conv 1x1 256 ReLU -> Conv 1x1 z_mean (C), Conv 1x1 z_log_var (C); decoder Conv 1x1 256
ReLU -> the same transposed convolutions. It encodes and decodes images of any size that is a
multiple of 8, so a latent grid larger than the training one decodes to a larger image
(SliceGAN's route to large outputs), and :meth:`ConvVAE.decode_logits` with ``periodic=True``
pads every transposed convolution circularly, so that opposite edges of the output join.

``conv3d`` (:class:`ConvVAE3d`): the conv model in three dimensions for volumes (N, 1, D, H, W)
(Conv3d and ConvTranspose3d, a latent grid at 1/8 of each side), with half the channels of
the 2-D stacks (:data:`CHANNELS_3D`): a 3x3x3 kernel holds 3x the weights of a 3x3 one, and the
full channels made a training step 2.9x (fp32; 2.3x bf16) and the generation of a 256^3 volume
2.2x slower with 1.7x the peak memory (benchmarks/speed/volume_throughput.py), past the budgets
of a 2-core CPU.
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


CHANNELS_3D = (32, 64, 128)
DENSE_3D = 128

ARCHITECTURES = ("table1", "conv", "conv3d")


def model_config(image_size: tuple[int, int] | list[int] | int, latent_size: int,
                 architecture: str = "table1") -> dict[str, Any]:
    """The model's own configuration, saved with its weights (``image_size``: the training
    size; a ``conv`` model takes any multiple of 8; ``latent_size``: for ``conv`` the channels
    of the latent grid)."""
    if architecture not in ARCHITECTURES:
        raise MicrovaeError(f"model.architecture: unknown architecture {architecture!r}; use one "
                            f"of {list(ARCHITECTURES)}")
    dims = 3 if architecture == "conv3d" else 2
    if isinstance(image_size, int):
        image_size = (image_size,) * dims
    sides = [int(s) for s in image_size]
    if len(sides) != dims:
        raise MicrovaeError(f"image_size: a {architecture} model takes {dims} sides, got "
                            f"{'x'.join(map(str, sides))}")
    if any(s % 8 or s < 8 for s in sides):
        raise MicrovaeError(f"image_size: {'x'.join(map(str, sides))} px is not a multiple of 8 "
                            "(the network halves the size three times)")
    if int(latent_size) < 1:
        raise MicrovaeError(f"model.latent_sizes: latent size must be >= 1, got {latent_size}")
    channels, dense = (CHANNELS_3D, DENSE_3D) if dims == 3 else (CHANNELS, DENSE)
    config = {"image_size": sides, "latent_size": int(latent_size),
              "channels": list(channels), "dense": dense}
    if architecture != "table1":  # Table 1 files keep the keys they always had
        config["architecture"] = architecture
    return config


def build_model(config: dict[str, Any]) -> nn.Module:
    """The network a saved configuration describes (files without ``architecture``: Table 1)."""
    architecture = config.get("architecture", "table1")
    if architecture == "conv":
        return ConvVAE(config["image_size"], config["latent_size"])
    if architecture == "conv3d":
        return ConvVAE3d(config["image_size"], config["latent_size"])
    if architecture == "table1":
        return VAE(config["image_size"], config["latent_size"])
    raise MicrovaeError(f"unknown model architecture {architecture!r}; use one of "
                        f"{list(ARCHITECTURES)}")


class _TransposedConvolution(torch.autograd.Function):
    """``conv_transpose2d`` whose backward calls the kernels of the ordinary convolution it is
    the adjoint of: the same values to rounding (other kernels sum in other orders), faster on
    CPUs. oneDNN's deconvolution computes the weight gradient together with the bias gradient
    in a kernel that was 2-3x slower than the convolution's weight gradient plus a separate sum
    (oneDNN verbose output; benchmarks/speed/train_throughput.py --ablation)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, output_padding):
        ctx.save_for_backward(x, weight)
        ctx.geometry = (stride, padding)
        ctx.has_bias = bias is not None
        return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding = ctx.geometry
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        grad_x = F.conv2d(grad, weight, None, stride, padding) if needs_x else None
        grad_weight = grad_bias = None
        if needs_weight:
            grad_weight = torch.ops.aten.convolution_backward(
                x, grad, weight, None, stride, padding, (1, 1), False, (0, 0), 1,
                (False, True, False))[1]
        if ctx.has_bias and needs_bias:
            grad_bias = grad.sum((0, 2, 3))
        return grad_x, grad_weight, grad_bias, None, None, None


class ConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` (same parameters and state dict) that trains on the CPU through
    :class:`_TransposedConvolution`; elsewhere, and without gradients, the stock layer."""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if (x.device.type != "cpu" or not torch.is_grad_enabled() or output_size is not None
                or self.groups != 1 or self.dilation != (1, 1) or self.padding_mode != "zeros"):
            return super().forward(x, output_size)
        weight, bias = self.weight, self.bias
        if torch.is_autocast_enabled("cpu"):
            dtype = torch.get_autocast_dtype("cpu")
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        return _TransposedConvolution.apply(x, weight, bias, self.stride, self.padding,
                                            self.output_padding)


class _Encoded(nn.Module):
    """What both networks share: the encoder heads, eq. 1 in ``forward`` (which returns
    ``(logits, z_mean, z_log_var, z)``) and the latent size of the configuration."""

    config: dict[str, Any]

    @property
    def latent_size(self) -> int:
        return self.config["latent_size"]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_mean, z_log_var)`` of images ``x`` (N, 1, H, W)."""
        h = self.encoder(x)
        return self.z_mean(h), self.z_log_var(h)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None):
        z_mean, z_log_var = self.encode(x)
        if eps is None:
            eps = torch.randn_like(z_mean)
        z = reparameterize(z_mean, z_log_var, eps)
        return self.decode_logits(z), z_mean, z_log_var, z


class VAE(_Encoded):
    """Table 1 network: a latent vector (N, L)."""

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
            ConvTranspose2d(c3, c3, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            ConvTranspose2d(c3, c2, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            ConvTranspose2d(c2, c1, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            ConvTranspose2d(c1, 1, 3, stride=1, padding=1),
        )

    spatial = False

    def latent_shape(self, height: int | None = None, width: int | None = None) -> tuple[int, ...]:
        """Shape of one latent code (Table 1: a vector; the image size is fixed)."""
        return (self.latent_size,)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Logits (N, 1, H, W) of phase 1 for latent vectors ``z`` (N, latent)."""
        h = self.decoder_dense(z).view(-1, CHANNELS[2], *self.grid)
        if self.decoder[0].weight.is_contiguous(memory_format=torch.channels_last):
            h = h.contiguous(memory_format=torch.channels_last)
        return self.decoder(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities of phase 1 in [0, 1], (N, 1, H, W)."""
        return torch.sigmoid(self.decode_logits(z))


class ConvVAE(_Encoded):
    """The fully convolutional variant (see the module docstring); ``z`` is (N, C, H/8, W/8)."""

    spatial = True

    def __init__(self, image_size: tuple[int, int] | list[int] | int, latent_channels: int):
        super().__init__()
        self.config = model_config(image_size, latent_channels, "conv")
        c1, c2, c3 = CHANNELS
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c3, DENSE, 1), nn.ReLU(),
        )
        self.z_mean = nn.Conv2d(DENSE, latent_channels, 1)
        self.z_log_var = nn.Conv2d(DENSE, latent_channels, 1)
        self.decoder_dense = nn.Sequential(nn.Conv2d(latent_channels, c3, 1), nn.ReLU())
        self.decoder = nn.Sequential(
            ConvTranspose2d(c3, c3, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            ConvTranspose2d(c3, c2, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            ConvTranspose2d(c2, c1, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            ConvTranspose2d(c1, 1, 3, stride=1, padding=1),
        )

    def latent_shape(self, height: int | None = None, width: int | None = None) -> tuple[int, ...]:
        """Shape (C, H/8, W/8) of the latent grid of an image (default: the training size)."""
        default_h, default_w = self.config["image_size"]
        height, width = height or default_h, width or default_w
        if height % 8 or width % 8:
            raise MicrovaeError(f"a conv model needs image sizes that are multiples of 8, got "
                                f"{height}x{width} px")
        return (self.latent_size, height // 8, width // 8)

    def decode_logits(self, z: torch.Tensor, periodic: bool = False) -> torch.Tensor:
        """Logits (N, 1, 8h, 8w) for latent grids ``z`` (N, C, h, w); ``periodic``: every
        transposed convolution sees its input wrapped around, so the output tiles the plane."""
        h = self.decoder_dense(z)
        if self.decoder[0].weight.is_contiguous(memory_format=torch.channels_last):
            h = h.contiguous(memory_format=torch.channels_last)
        return _run_decoder(self.decoder, h, (periodic,) * 2)

    def decode(self, z: torch.Tensor, periodic: bool = False) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z, periodic))


def _run_decoder(decoder: nn.Sequential, h: torch.Tensor, wrapped: tuple[bool, ...]
                 ) -> torch.Tensor:
    """The decoder's layers on ``h``, each transposed convolution wrapping its input around
    along the spatial axes flagged in ``wrapped`` (none flagged: the layers as they are)."""
    if not any(wrapped):
        return decoder(h)
    for layer in decoder:
        transposed = isinstance(layer, (nn.ConvTranspose2d, nn.ConvTranspose3d))
        h = _periodic_transpose(layer, h, wrapped) if transposed else layer(h)
    return h


def _periodic_transpose(layer: nn.Module, x: torch.Tensor, wrapped_axes: tuple[bool, ...]
                        ) -> torch.Tensor:
    """``layer`` (a 2-D or 3-D transposed convolution) applied to ``x`` as if ``x`` repeated
    periodically along the spatial axes flagged in ``wrapped_axes`` (the others are
    zero-padded as the layer itself does): pad one cell circularly on each side of a
    wrapped axis, transpose-convolve it without padding, keep the window the padded layer
    gives. Output index o of the layer is o + stride + padding of the unpadded transposed
    convolution of the wrapped input (kernel 3, one cell of wrap covers every contribution)."""
    dims = x.dim() - 2
    pads: list[int] = []
    for wrap in reversed(wrapped_axes):  # F.pad takes the last axis first
        pads += [1, 1] if wrap else [0, 0]
    if any(wrapped_axes):
        x = F.pad(x, tuple(pads), mode="circular")
    padding = tuple(0 if wrap else p for wrap, p in zip(wrapped_axes, layer.padding))
    output_padding = tuple(0 if wrap else p
                           for wrap, p in zip(wrapped_axes, layer.output_padding))
    transpose = F.conv_transpose3d if dims == 3 else F.conv_transpose2d
    y = transpose(x, layer.weight, layer.bias, stride=layer.stride, padding=padding,
                  output_padding=output_padding)
    window = [slice(None), slice(None)]
    for axis, wrap in enumerate(wrapped_axes):
        if not wrap:
            window.append(slice(None))
            continue
        stride, pad = layer.stride[axis], layer.padding[axis]
        side = x.shape[2 + axis] - 2
        out = (side - 1) * stride - 2 * pad + layer.kernel_size[axis] + layer.output_padding[axis]
        window.append(slice(stride + pad, stride + pad + out))
    return y[tuple(window)]


class ConvVAE3d(_Encoded):
    """The conv model for volumes (see the module docstring): images (N, 1, D, H, W), latent
    grids (N, C, D/8, H/8, W/8)."""

    spatial = True

    def __init__(self, image_size: tuple[int, int, int] | list[int] | int, latent_channels: int):
        super().__init__()
        self.config = model_config(image_size, latent_channels, "conv3d")
        c1, c2, c3 = self.config["channels"]
        dense = self.config["dense"]
        self.encoder = nn.Sequential(
            nn.Conv3d(1, c1, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv3d(c1, c2, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv3d(c2, c3, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv3d(c3, dense, 1), nn.ReLU(),
        )
        self.z_mean = nn.Conv3d(dense, latent_channels, 1)
        self.z_log_var = nn.Conv3d(dense, latent_channels, 1)
        self.decoder_dense = nn.Sequential(nn.Conv3d(latent_channels, c3, 1), nn.ReLU())
        self.decoder = nn.Sequential(
            nn.ConvTranspose3d(c3, c3, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose3d(c3, c2, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose3d(c2, c1, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose3d(c1, 1, 3, stride=1, padding=1),
        )

    def latent_shape(self, *sides: int) -> tuple[int, ...]:
        """Shape (C, D/8, H/8, W/8) of the latent grid of a volume (default: the training
        size)."""
        sides = tuple(sides) or tuple(self.config["image_size"])
        if len(sides) != 3 or any(s % 8 or s < 8 for s in sides):
            raise MicrovaeError(f"a conv3d model needs 3 sides that are multiples of 8, got "
                                f"{'x'.join(map(str, sides))}")
        return (self.latent_size, *(s // 8 for s in sides))

    def decode_logits(self, z: torch.Tensor, periodic: bool | tuple[bool, bool, bool] = False
                      ) -> torch.Tensor:
        """Logits (N, 1, 8d, 8h, 8w) for latent grids ``z`` (N, C, d, h, w); ``periodic``:
        True, or one flag per axis, wraps the transposed convolutions' input around."""
        wrapped = (bool(periodic),) * 3 if isinstance(periodic, bool) else tuple(periodic)
        return _run_decoder(self.decoder, self.decoder_dense(z), wrapped)

    def decode(self, z: torch.Tensor, periodic: bool | tuple[bool, bool, bool] = False
               ) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z, periodic))


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
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Conv3d,
                                   nn.ConvTranspose3d)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
    return model


def reparameterize(z_mean: torch.Tensor, z_log_var: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Eq. 1 of the paper: z = z_mean + exp(z_log_var / 2) * eps."""
    return z_mean + torch.exp(0.5 * z_log_var) * eps


def kl_per_dimension(z_mean: torch.Tensor, z_log_var: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) of each latent dimension, in nats: (N, latent), or (N, C, h, w)
    for a latent grid."""
    return 0.5 * (z_mean.pow(2) + z_log_var.exp() - 1.0 - z_log_var)


def vae_loss(logits: torch.Tensor, x: torch.Tensor, z_mean: torch.Tensor, z_log_var: torch.Tensor,
             kl_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, bce, kl)``, each the mean over the batch of per-image values.

    BCE is summed over the pixels of an image (computed on logits, in fp32); KL is summed over
    the latent dimensions (every channel of every cell of a latent grid); loss = BCE +
    kl_weight * KL.
    """
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, x.float(), reduction="none")
    bce = bce.flatten(1).sum(1).mean()
    kl = kl_per_dimension(z_mean.float(), z_log_var.float()).flatten(1).sum(1).mean()
    return bce + kl_weight * kl, bce, kl
