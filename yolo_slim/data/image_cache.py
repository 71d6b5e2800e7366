"""An in-RAM image cache: every image of a split decoded once, resized, in one flat uint8 buffer.

Like ultralytics' ``--cache ram``: decoding is the largest CPU cost of a training sample (a
mosaic decodes four images), and it gives the same pixels every epoch. The images are stored
already resized so that their longer side is ``imgsz``, which is what letterbox and mosaic start
from, so a cached image costs ``3 * h * w`` bytes at that size.

One numpy buffer holds all the pixels, with two small index arrays beside it, rather than a list
of tensors: DataLoader workers forked after the cache is built then share its pages copy-on-write.
A list would be copied into every worker piece by piece, as soon as each worker touches the
reference counts of its items (PyTorch issue 13246). (Under the spawn start method, the default
on macOS and Windows, each worker unpickles a copy instead; each DDP process builds its own.)

Worked example: two images resized to (3, 2, 4) and (3, 4, 1) give a buffer of 24 + 12 bytes;
``starts == [0, 24]``, ``shapes == [[2, 4], [4, 1]]``, and ``cache[1]`` is a (3, 4, 1) view of
bytes 24 to 36.
"""

from __future__ import annotations

import numpy as np
import torch

# The settings of YOLODataModule's ``cache``; "auto" caches a split when its resized images
# take less than AUTO_RAM_LIMIT_BYTES, a size any training machine can spare.
CACHE_MODES = ("none", "ram", "auto")
AUTO_RAM_LIMIT_BYTES = 1 << 30
CHANNELS = 3


class ImageCache:
    """Resized uint8 (3, h, w) images, appended in index order and read back as tensor views.

    Args:
        count: How many images will be appended.
        capacity: Expected total bytes; the buffer grows if the images turn out larger (a file
            changed on disk after its size was scanned). Bytes left unused (an image that
            failed to decode) are never written, so the OS never commits them.

    An image that could not be decoded is appended as None and read back as None, so that the
    indices of the cache stay those of the dataset.
    """

    def __init__(self, count: int, capacity: int) -> None:
        if count < 0 or capacity < 0:
            raise ValueError(f"ImageCache: count and capacity must be >= 0; found {count} and {capacity}")
        self._pixels = np.empty(capacity, dtype=np.uint8)
        self._starts = np.zeros(count, dtype=np.int64)
        self._shapes = np.zeros((count, 2), dtype=np.int32)  # (height, width); (0, 0) for a missing image
        self._count = count
        self._appended = 0
        self._used = 0

    def __len__(self) -> int:
        return self._appended

    @property
    def nbytes(self) -> int:
        """Bytes of pixels stored."""
        return self._used

    def append(self, image: torch.Tensor | None) -> None:
        """Store the next image, a uint8 (3, h, w) tensor, or None for one that cannot be decoded.

        Raises:
            ValueError: The cache already holds ``count`` images, or ``image`` is not uint8 (3, h, w).
        """
        if self._appended == self._count:
            raise ValueError(f"ImageCache: already holds the {self._count} images it was made for")
        if image is not None and (image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != CHANNELS):
            raise ValueError(f"ImageCache: images must be uint8 ({CHANNELS}, h, w) tensors; "
                             f"found {image.dtype} {tuple(image.shape)}")
        index = self._appended
        self._appended += 1
        if image is None:
            return
        size = image.numel()
        if self._used + size > len(self._pixels):
            self._grow(self._used + size)
        # numpy copies on this thread: decoders return (3, h, w) views of (h, w, 3) pixels, and
        # torch's multi-threaded copy of such a view took 6 ms instead of 0.05 on two busy cores.
        np.copyto(self._pixels[self._used:self._used + size].reshape(image.shape), image.numpy())
        self._starts[index] = self._used
        self._shapes[index] = image.shape[1:]
        self._used += size

    def __getitem__(self, index: int) -> torch.Tensor | None:
        """The image at ``index`` as a (3, h, w) view of the buffer (copy before writing into
        it), or None if it was appended as None."""
        height, width = (int(length) for length in self._shapes[index])
        if height == 0:
            return None
        start = int(self._starts[index])
        pixels = self._pixels[start:start + CHANNELS * height * width]
        return torch.from_numpy(pixels).view(CHANNELS, height, width)

    def _grow(self, needed: int) -> None:
        # Doubling keeps the number of copies logarithmic if many images outgrew their estimate.
        # The unused end costs no RAM: the OS commits the pages of np.empty on first write.
        grown = np.empty(max(needed, 2 * len(self._pixels)), dtype=np.uint8)
        grown[:self._used] = self._pixels[:self._used]
        self._pixels = grown
