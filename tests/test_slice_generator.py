"""The 3-D generator learned from 2-D micrographs (microvae.slice_generator): slab decoding,
periodicity, the Gram statistics, training that lowers its loss, refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from microvae.errors import MicrovaeError
from microvae.reconstruct3d import plane_statistics
from microvae.slice_generator import (
    RandomFeatures,
    SliceGenerator,
    SliceGeneratorSettings,
    generate_sliced_volume,
    gram_targets,
    sections_of,
    symmetries,
    train_slice_generator,
)


def blobs(n, side, seed, sigma=2.5, fraction=0.3):
    field = ndimage.gaussian_filter(np.random.default_rng(seed).random((n, side, side)),
                                    (0, sigma, sigma))
    return (field > np.quantile(field, 1 - fraction)).astype(np.uint8)


def randomised(width=4, noise_channels=3, levels=2):
    model = SliceGenerator(width, noise_channels, levels).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=generator))
    return model


@pytest.mark.parametrize("levels", [2, 3])
def test_slabs_make_the_whole_volume(levels):
    """Decoding slab by slab along z (each from its own noise cells and a halo) gives exactly
    the volume decoded at once: memory is bounded by the slab, not the volume."""
    model = randomised(levels=levels)
    cell = 2**levels
    assert model.cell == cell and model.halo_voxels == {2: 12, 3: 28}[levels]
    noise = torch.randn(1, 3, 7, 5, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model(noise)
        slabs = torch.cat([model.slab(noise, 0, 3), model.slab(noise, 3, 4),
                           model.slab(noise, 4, 7)], 2)
    shape = (7 * cell, 5 * cell, 4 * cell)
    assert whole.shape == (1, 1, *shape)
    torch.testing.assert_close(slabs, whole, rtol=0, atol=1e-5)
    volume = generate_sliced_volume(model, shape, torch.Generator().manual_seed(1),
                                    slab_cells=2)
    assert volume.dtype == np.uint8 and volume.shape == shape
    np.testing.assert_array_equal(volume, (whole[0, 0] > 0).numpy())


def test_volumes_are_periodic_on_all_six_faces():
    """Shifting the noise by whole cells shifts the volume by 4 voxels per cell, along every
    axis: the generator is a function on the 3-torus, so opposite faces join as neighbouring
    planes inside do."""
    model = randomised()
    noise = torch.randn(1, 3, 6, 6, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        volume = model(noise)
        for axis in (2, 3, 4):
            shifted = model(torch.roll(noise, 2, axis))
            torch.testing.assert_close(shifted, torch.roll(volume, 8, axis), rtol=0, atol=1e-5)
    binary = (volume[0, 0] > 0).numpy()
    for axis in range(3):  # across the face: differing neighbours as often as inside
        inside = np.mean(np.diff(binary, axis=axis) != 0)
        across = np.mean(np.take(binary, 0, axis) != np.take(binary, -1, axis))
        assert across <= 3 * inside + 0.05


def test_gram_statistics():
    features = RandomFeatures(8, seed=0)
    images = torch.from_numpy(blobs(4, 40, 0).astype(np.float32))[:, None]
    grams = features.grams(images)
    assert [g.shape for g in grams] == [(8, 8)] * 3
    for g in grams:
        torch.testing.assert_close(g, g.T)
        assert torch.linalg.eigvalsh(g).min() > -1e-5  # a Gram matrix
    # averaged over images: two copies of a stack give its Gram matrices
    doubled = features.grams(torch.cat([images, images]))
    for a, b in zip(grams, doubled):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)  # float32 sums
    assert len(symmetries(np.zeros((3, 5, 5)))) == 24
    targets = gram_targets(blobs(3, 48, 1), features, 32, True, np.random.default_rng(0), 16)
    assert len(targets) == 3
    with pytest.raises(MicrovaeError, match="smaller than the 64 px sections"):
        gram_targets(blobs(3, 48, 1), features, 64, True, np.random.default_rng(0))


def test_sections_follow_the_planes():
    volume = torch.arange(2 * 3 * 4).reshape(2, 3, 4).float()
    index = torch.tensor([1])
    assert sections_of(volume, 0, index).shape == (1, 1, 3, 4)  # rows y, columns x
    assert sections_of(volume, 1, index).shape == (1, 1, 2, 4)  # rows z, columns x
    assert sections_of(volume, 2, index).shape == (1, 1, 2, 3)  # rows z, columns y
    torch.testing.assert_close(sections_of(volume, 2, index)[0, 0], volume[:, :, 1])


@pytest.mark.slow
def test_training_brings_the_sections_towards_the_micrographs():
    """From its start (a random net, centred on the micrographs' fraction) training lowers
    the sections' statistics loss, and its volumes hold about the micrographs' fraction."""
    micrographs = blobs(8, 64, 3)
    target = plane_statistics(micrographs, r_max=8, lags=(1, 2, 4, 8))
    settings = SliceGeneratorSettings(steps=80, max_minutes=None, crop=32, width=4, levels=2,
                                      noise_channels=4, sections_per_axis=4,
                                      feature_channels=8, learning_rate=5e-4)
    trained = train_slice_generator(target, micrographs, settings)
    start = trained.history[0]["statistics"]
    last = np.mean([h["statistics"] for h in trained.history[-10:]])
    assert last < 0.6 * start
    assert trained.history[-1]["gram"] >= 0
    volume = generate_sliced_volume(trained.model, (32, 32, 32), torch.Generator().manual_seed(0))
    assert abs(volume.mean() - micrographs.mean()) < 0.1
    again = train_slice_generator(target, micrographs, settings)  # one seed, one result
    assert again.history[-1]["loss"] == trained.history[-1]["loss"]


def test_three_orthogonal_micrographs_train_one_target_per_plane():
    """An orthotropic structure: one stack of micrographs and one statistics per plane."""
    stacks = {axis: blobs(2, 64, axis, sigma=1.5 + axis) for axis in range(3)}
    targets = {axis: plane_statistics(images, r_max=8, lags=(1, 2, 4, 8))
               for axis, images in stacks.items()}
    settings = SliceGeneratorSettings(steps=2, max_minutes=None, crop=32, width=2, levels=2,
                                      noise_channels=2, sections_per_axis=2, feature_channels=4)
    trained = train_slice_generator(targets, stacks, settings)
    assert len(trained.history) == 2 and np.isfinite(trained.history[-1]["loss"])


def test_refusals():
    micrographs = blobs(2, 64, 0)
    target = plane_statistics(micrographs, r_max=8, lags=(1, 2, 4, 8))
    with pytest.raises(MicrovaeError, match="crop: 30 voxels, expected a multiple of 8"):
        train_slice_generator(target, micrographs, SliceGeneratorSettings(crop=30))
    with pytest.raises(MicrovaeError, match="too small for lags up to 30"):
        train_slice_generator(plane_statistics(micrographs), micrographs,
                              SliceGeneratorSettings(crop=32))
    with pytest.raises(MicrovaeError, match="one stack per plane"):
        train_slice_generator({0: target, 1: target, 2: target}, micrographs,
                              SliceGeneratorSettings(crop=32))
    with pytest.raises(MicrovaeError, match="multiple of 4"):
        generate_sliced_volume(randomised(), (30, 32, 32), torch.Generator())
