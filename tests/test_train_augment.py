"""Random-shift augmentation: shapes, content preserved up to a shift, one shift per camera over time."""

from __future__ import annotations

import torch

from vla.train.augment import random_shift


def test_zero_pad_is_identity():
    images = torch.rand(2, 2, 2, 3, 8, 8)
    assert random_shift(images, 0) is images


def test_shift_moves_content_and_keeps_shape():
    torch.manual_seed(0)
    images = torch.zeros(4, 2, 2, 3, 16, 16)
    images[..., 6:10, 6:10] = 1.0  # a bright square in the middle of every image
    out = random_shift(images, 3, torch.Generator().manual_seed(1))
    assert out.shape == images.shape
    # The square survives whole (a shift of at most 3 px never pushes it out of a 16 px frame)...
    assert torch.allclose(out.sum(dim=(-1, -2)), images.sum(dim=(-1, -2)))
    # ...but not everywhere at the same place: some (sample, camera) pairs were shifted.
    assert not torch.equal(out, images)
    # Every timestep of one (sample, camera) moved the same way.
    assert torch.equal(out[:, 0], out[:, 1])


def test_seeded_generator_is_deterministic():
    images = torch.rand(3, 1, 2, 3, 12, 12)
    a = random_shift(images, 2, torch.Generator().manual_seed(7))
    b = random_shift(images, 2, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
