import math

import pytest
import torch

from microvae.errors import MicrovaeError
from microvae.model import VAE, kl_per_dimension, reparameterize, vae_loss
from microvae.modelfile import load_model, save_model


def conv_params(c_in, c_out, k=3):
    return c_in * c_out * k * k + c_out


def dense_params(n_in, n_out):
    return n_in * n_out + n_out


def test_table1_shapes_and_parameter_count():
    model = VAE(128, 12)
    x = torch.zeros(2, 1, 128, 128)
    shapes = []
    h = x
    for layer in model.encoder:
        h = layer(h)
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
            shapes.append(tuple(h.shape[1:]))
    assert shapes == [(64, 64, 64), (128, 32, 32), (256, 16, 16), (256,)]
    assert model.z_mean(h).shape == (2, 12) and model.z_log_var(h).shape == (2, 12)
    d = model.decoder_dense(torch.zeros(2, 12))
    assert d.shape == (2, 16 * 16 * 256)
    h = d.view(2, 256, 16, 16)
    shapes = []
    for layer in model.decoder:
        h = layer(h)
        if isinstance(layer, torch.nn.ConvTranspose2d):
            shapes.append(tuple(h.shape[1:]))
    assert shapes == [(256, 32, 32), (128, 64, 64), (64, 128, 128), (1, 128, 128)]
    # Table 1 by hand: three encoder convolutions, Dense 256, z_mean, z_log_var,
    # Dense 16x16x256, three stride-2 transposed convolutions and the output layer.
    expected = (conv_params(1, 64) + conv_params(64, 128) + conv_params(128, 256)
                + dense_params(16 * 16 * 256, 256) + 2 * dense_params(256, 12)
                + dense_params(12, 16 * 16 * 256)
                + conv_params(256, 256) + conv_params(256, 128) + conv_params(128, 64)
                + conv_params(64, 1))
    assert sum(p.numel() for p in model.parameters()) == expected == 18_964_761


@pytest.mark.parametrize("size,latent", [(16, 1), (64, 64), ((24, 40), 3)])
def test_any_multiple_of_eight(size, latent):
    model = VAE(size, latent)
    h, w = (size, size) if isinstance(size, int) else size
    logits, z_mean, z_log_var, z = model(torch.rand(3, 1, h, w))
    assert logits.shape == (3, 1, h, w) and z.shape == (3, latent)


def test_size_not_multiple_of_eight():
    with pytest.raises(MicrovaeError, match="multiple of 8"):
        VAE(60, 4)


def test_equation_1():
    z_mean = torch.tensor([[0.5, -1.0]])
    z_log_var = torch.tensor([[2.0, -4.0]])
    eps = torch.tensor([[1.5, -0.5]])
    expected = torch.tensor([[0.5 + torch.e * 1.5, -1.0 + torch.exp(torch.tensor(-2.0)) * -0.5]])
    assert torch.allclose(reparameterize(z_mean, z_log_var, eps), expected)
    model = VAE(16, 2)
    x = torch.rand(1, 1, 16, 16)
    _, m, v, z = model(x, eps)
    assert torch.allclose(z, m + torch.exp(v / 2) * eps)


def test_loss_terms():
    logits = torch.zeros(2, 1, 8, 8)
    x = torch.ones(2, 1, 8, 8)
    z = torch.zeros(2, 3)
    loss, bce, kl = vae_loss(logits, x, z, z, kl_weight=0.1)
    assert torch.isclose(bce, torch.tensor(64 * torch.log(torch.tensor(2.0)).item()))
    assert kl.item() == 0.0 and loss.item() == bce.item()
    kl_dim = kl_per_dimension(torch.ones(1, 2), torch.zeros(1, 2))
    assert torch.allclose(kl_dim, torch.full((1, 2), 0.5))


def test_save_and_load_round_trip(tmp_path):
    model = VAE(16, 3)
    save_model(model, tmp_path / "m.pt")
    loaded, payload = load_model(tmp_path / "m.pt")
    assert payload["config"]["latent_size"] == 3
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_corrupt_and_missing_model(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(MicrovaeError, match="not a valid microvae model"):
        load_model(tmp_path / "bad.pt")
    with pytest.raises(MicrovaeError, match="not found"):
        load_model(tmp_path / "none.pt")


def test_kl_at_log_variance_ln2_and_mean_zero():
    """KL(N(0, 2) || N(0, 1)) = 0.5 (1 - ln 2) per dimension: a sign error in the log-variance
    term would give 0.5 (3 + ln 2) - 1 instead."""
    z_mean = torch.zeros(3, 5)
    z_log_var = torch.full((3, 5), math.log(2.0))
    kl = kl_per_dimension(z_mean, z_log_var)
    assert torch.allclose(kl, torch.full((3, 5), 0.5 * (1 - math.log(2.0))), atol=1e-7)
    shifted = kl_per_dimension(torch.full((1, 1), 3.0), torch.zeros(1, 1))
    assert shifted.item() == pytest.approx(4.5)


def test_keras_initialisation_is_glorot_uniform_with_zero_biases():
    from microvae.model import initialize

    torch.manual_seed(0)
    model = initialize(VAE(32, 2), "keras")
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d,
                                                          torch.nn.ConvTranspose2d))]
    assert len(layers) == 11  # 3 conv, 3 dense in the encoder, 1 dense and 4 transposed conv
    for layer in layers:
        w = layer.weight.detach()
        receptive = w[0, 0].numel()
        fan_sum = (w.shape[0] + w.shape[1]) * receptive  # Keras: (in + out) x kernel area
        bound = math.sqrt(6.0 / fan_sum)
        assert w.abs().max() <= bound
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1 if w.numel() > 500
                                               else 0.5)
        assert torch.count_nonzero(layer.bias) == 0
    # the decoder's Dense layer at latent 2, 32 px: PyTorch's default starts it far larger
    torch.manual_seed(0)
    default = initialize(VAE(32, 2), "torch")
    ratio = default.decoder_dense[0].weight.std() / model.decoder_dense[0].weight.std()
    assert ratio > 10


def test_unknown_initialisation_is_refused():
    from microvae.model import initialize

    with pytest.raises(MicrovaeError, match="model.init"):
        initialize(VAE(16, 2), "he")


# --- the fully convolutional variant -------------------------------------------------------------

def test_conv_model_encodes_and_decodes_any_multiple_of_eight():
    from microvae.model import ConvVAE, initialize

    torch.manual_seed(0)
    model = initialize(ConvVAE(32, 4)).eval()
    assert model.spatial and model.latent_shape() == (4, 4, 4)
    assert model.latent_shape(64, 40) == (4, 8, 5)
    with torch.no_grad():
        z_mean, z_log_var = model.encode(torch.rand(2, 1, 48, 64))
        assert z_mean.shape == z_log_var.shape == (2, 4, 6, 8)
        assert model.decode(z_mean).shape == (2, 1, 48, 64)
        logits, *_ = model(torch.rand(3, 1, 32, 32))
    assert logits.shape == (3, 1, 32, 32)
    with pytest.raises(MicrovaeError, match="multiples of 8"):
        model.latent_shape(30, 32)
    # the 1x1 convolutions take the place of Table 1's Dense layers, nothing else changes
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert [tuple(m.weight.shape[2:]) for m in layers].count((1, 1)) == 4


def test_periodic_decoding_tiles_the_plane():
    """A periodic decoding of z is the middle of the plain decoding of z repeated 3x3 (so
    opposite edges join), is the plain one away from the edges, and rolls with z."""
    from microvae.model import ConvVAE, initialize

    torch.manual_seed(0)
    model = initialize(ConvVAE(64, 4)).eval()
    z = torch.randn(2, 4, 6, 5)
    with torch.no_grad():
        periodic = model.decode_logits(z, periodic=True)
        tiled = model.decode_logits(z.repeat(1, 1, 3, 3))
        plain = model.decode_logits(z)
        rolled = model.decode_logits(torch.roll(z, 1, dims=-1), periodic=True)
    assert periodic.shape == (2, 1, 48, 40)
    assert torch.allclose(periodic, tiled[..., 48:96, 40:80], atol=1e-5)
    assert torch.allclose(periodic[..., 8:-8, 8:-8], plain[..., 8:-8, 8:-8], atol=1e-5)
    assert not torch.allclose(periodic[..., :2, :], plain[..., :2, :], atol=1e-3)
    assert torch.allclose(torch.roll(periodic, 8, dims=-1), rolled, atol=1e-5)


def test_conv_model_file_round_trip_and_kl_over_the_grid(tmp_path):
    from microvae.model import ConvVAE, initialize

    model = initialize(ConvVAE(32, 3))
    save_model(model, tmp_path / "conv.pt")
    loaded, payload = load_model(tmp_path / "conv.pt")
    assert type(loaded) is ConvVAE and payload["config"]["architecture"] == "conv"
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b.contiguous())
    # KL sums over every channel of every cell
    z_mean, z_log_var = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), math.log(2.0))
    _, _, kl = vae_loss(torch.zeros(2, 1, 32, 32), torch.zeros(2, 1, 32, 32), z_mean, z_log_var,
                        0.1)
    assert kl.item() == pytest.approx(48 * 0.5 * (1 - math.log(2.0)), rel=1e-6)


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("stride, padding, output_padding", [(2, 1, 1), (1, 1, 0)])
def test_transposed_convolution_trains_as_the_stock_layer(bf16, stride, padding, output_padding):
    """microvae's layer changes only the kernels of the backward pass: the same output, and
    every gradient as PyTorch's own layer's to rounding, in fp32 and under bf16 autocast, NCHW
    and channels_last."""
    from torch import nn

    from microvae.model import ConvTranspose2d

    torch.manual_seed(0)
    ours = ConvTranspose2d(16, 8, 3, stride=stride, padding=padding, output_padding=output_padding)
    stock = nn.ConvTranspose2d(16, 8, 3, stride=stride, padding=padding,
                               output_padding=output_padding)
    stock.load_state_dict(ours.state_dict())
    assert list(ours.state_dict()) == list(stock.state_dict())
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(4, 16, 6, 5).contiguous(memory_format=memory_format)
        outputs, grads = [], []
        for layer in (ours, stock):
            layer.zero_grad()
            xi = x.clone().requires_grad_(True)
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                y = layer(xi)
            weights = torch.linspace(-1, 1, y.numel()).view(y.shape)
            (y.float() * weights).sum().backward()
            outputs.append(y)
            grads.append((xi.grad, layer.weight.grad, layer.bias.grad))
        assert outputs[0].dtype == outputs[1].dtype == (torch.bfloat16 if bf16 else torch.float32)
        assert torch.equal(outputs[0], outputs[1])
        for a, b in zip(*grads):
            assert a.dtype == b.dtype
            # other kernels sum in another order: equal to rounding
            torch.testing.assert_close(a, b, rtol=1e-5 if not bf16 else 1e-2, atol=1e-5)


def test_both_networks_use_the_faster_transposed_convolution():
    from microvae.model import ConvTranspose2d, ConvVAE

    for model in (VAE(32, 4), ConvVAE(32, 4)):
        layers = [m for m in model.decoder if isinstance(m, torch.nn.ConvTranspose2d)]
        assert len(layers) == 4 and all(isinstance(m, ConvTranspose2d) for m in layers)
