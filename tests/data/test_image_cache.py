"""ImageCache: images back as views of one buffer, missing slots, growth, argument checks."""

from __future__ import annotations

import pytest
import torch

from yolo_slim.data.image_cache import ImageCache


def _image(height: int, width: int, fill: int) -> torch.Tensor:
    return torch.arange(3 * height * width, dtype=torch.int64).add(fill).remainder(256).to(torch.uint8).reshape(
        3, height, width)


def test_round_trip_in_one_buffer():
    images = [_image(2, 4, 0), None, _image(4, 1, 7)]
    cache = ImageCache(count=3, capacity=24 + 12)
    for image in images:
        cache.append(image)
    assert len(cache) == 3 and cache.nbytes == 36
    assert torch.equal(cache[0], images[0]) and cache[1] is None and torch.equal(cache[2], images[2])
    assert cache[2].data_ptr() == cache[0].data_ptr() + 24  # views of one buffer, back to back


def test_grows_past_its_capacity():
    cache = ImageCache(count=2, capacity=10)  # less than the images need (a file grew after the scan)
    first, second = _image(3, 3, 1), _image(5, 2, 2)
    cache.append(first)
    cache.append(second)
    assert cache.nbytes == 27 + 30
    assert torch.equal(cache[0], first) and torch.equal(cache[1], second)


def test_non_contiguous_input():
    image = _image(4, 6, 3)[:, 1:, ::2]
    cache = ImageCache(count=1, capacity=image.numel())
    cache.append(image)
    assert torch.equal(cache[0], image)


def test_invalid_use():
    with pytest.raises(ValueError, match=r"count and capacity must be >= 0; found -1 and 0"):
        ImageCache(count=-1, capacity=0)
    cache = ImageCache(count=1, capacity=12)
    with pytest.raises(ValueError, match=r"uint8 \(3, h, w\) tensors; found torch.float32 \(3, 2, 2\)"):
        cache.append(torch.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match=r"uint8 \(3, h, w\) tensors; found torch.uint8 \(1, 2, 2\)"):
        cache.append(torch.zeros((1, 2, 2), dtype=torch.uint8))
    cache = ImageCache(count=1, capacity=12)
    cache.append(None)
    with pytest.raises(ValueError, match=r"already holds the 1 images it was made for"):
        cache.append(None)
