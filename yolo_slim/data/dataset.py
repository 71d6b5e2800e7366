"""The YOLO dataset: decode, augment (or only letterbox) and return one training sample; collate.

A sample is ``(image, labels, path)``: a uint8 (3, imgsz, imgsz) tensor, float32 (n, 5) rows
``[cls, cx, cy, w, h]`` normalised to that image, and the image file. :func:`collate` stacks a
batch into YOLOv5's layout, where every target row carries the index of its image.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image

from yolo_slim.data.augment import (
    HSV_IDENTITY,
    AugmentConfig,
    draw_hsv,
    fliplr,
    jitter_hsv,
    letterbox,
    mosaic_layout,
    normalized_to_pixels,
    pixels_to_normalized,
    random_affine,
    resize_long_side,
    resized_shape,
    scale_translate,
)
from yolo_slim.data.image_cache import CHANNELS, ImageCache
from yolo_slim.data.labels import ImageRecord

log = logging.getLogger(__name__)

# (image, labels, path), and with ``defer_hsv`` a fourth item: the image's HSV jitter, not yet applied.
Sample = tuple[torch.Tensor, torch.Tensor, str] | tuple[torch.Tensor, torch.Tensor, str, torch.Tensor]


def decode_rgb(path: str) -> torch.Tensor:
    """Decode an image file to a uint8 (3, H, W) RGB tensor, EXIF orientation applied.

    torchvision decodes JPEG, PNG, WEBP and GIF; BMP and TIFF (valid in data.yaml splits) go
    through Pillow. 16-bit images (thermal, medical, some PNG exports) keep their 8 high bits, as
    OpenCV's ``imread`` (ultralytics' loader) reads them: torchvision returns such a PNG as uint16,
    and Pillow's ``convert("RGB")`` would clip a 16-bit TIFF at 255 instead of scaling it.

    Raises:
        RuntimeError, OSError, ...: the file cannot be decoded by either.
    """
    try:
        image = decode_image(path, mode=ImageReadMode.RGB, apply_exif_orientation=True)
        return image if image.dtype == torch.uint8 else _high_byte(image.to(torch.int32), 16)
    except RuntimeError:
        pass  # an unsupported format, or a corrupt file that Pillow will also refuse
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode.startswith("I;16"):  # 16-bit grey (the modes Pillow has for 16-bit TIFF and PNG)
            grey = _high_byte(torch.from_numpy(np.array(image).astype(np.int32)), 16)
            return grey.expand(3, *grey.shape).contiguous()  # (H, W) -> (3, H, W)
        rgb = image.convert("RGB")
        return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous()  # (H, W, 3) -> (3, H, W)


def _high_byte(pixels: torch.Tensor, bits: int) -> torch.Tensor:
    """The 8 high bits of ``bits``-bit integer pixels, as uint8."""
    return (pixels >> (bits - 8)).clamp_(0, 255).to(torch.uint8)


class YOLODataset(Dataset[Sample]):
    """Images and labels of one split, as square ``imgsz`` training or validation samples.

    Args:
        records: The usable images (from :func:`~yolo_slim.data.labels.scan_split`).
        imgsz: Output side in pixels.
        augment: Training augmentations; None for validation (letterbox only).

    An image that fails to decode although the scan accepted it (changed on disk, a disk error)
    never stops an epoch: it is logged once (per process), counted in :attr:`decode_failures`
    and replaced by the next decodable image of the split, a deterministic choice.

    :meth:`cache_images` decodes the whole split once into RAM; samples are then the same as
    without the cache, only cheaper.

    With ``defer_hsv`` set (the data module sets it when it trains on a GPU), an augmented sample
    leaves its HSV jitter undone and carries it as a fourth item, a float32 ``(hue_shift,
    saturation_gain, value_gain)``; the batch's ``hsv`` then goes to
    :func:`~yolo_slim.data.augment.jitter_hsv_batch` on the device, which gives the same pixels.
    The random draws are the same either way.
    """

    def __init__(self, records: Sequence[ImageRecord], imgsz: int, augment: AugmentConfig | None = None) -> None:
        if isinstance(imgsz, bool) or not isinstance(imgsz, int) or imgsz < 1:
            raise ValueError(f"YOLODataset: imgsz must be a positive integer; found {imgsz!r}")
        if not records:
            raise ValueError("YOLODataset: records is empty; a dataset needs at least one usable image")
        self.imgsz = imgsz
        self.augment = augment
        # Flat numpy arrays instead of a list of records: DataLoader workers forked from this
        # process would otherwise copy every page holding a Python object as soon as they touch
        # its reference count (PyTorch issue 13246), multiplying memory by the worker count.
        self._paths = np.array([str(record.path) for record in records])
        self._labels = np.concatenate([record.labels for record in records]).astype(np.float32).reshape(-1, 5)
        self._bounds = np.concatenate([[0], np.cumsum([len(record.labels) for record in records])])
        self._sizes = np.array([record.size for record in records], dtype=np.int64).reshape(-1, 2)  # (height, width)
        self._cache: ImageCache | None = None
        self._failed: set[int] = set()
        self.decode_failures = 0
        self.defer_hsv = False

    def __len__(self) -> int:
        return len(self._paths)

    def box_sizes(self) -> np.ndarray:
        """(n, 2) width and height of every labelled box in pixels at the training size (each image's long
        side scaled to ``imgsz``, before augmentation): what AutoAnchor fits anchors to."""
        per_box_image = np.repeat(np.arange(len(self._paths)), np.diff(self._bounds))
        heights, widths = self._sizes[per_box_image, 0], self._sizes[per_box_image, 1]
        scale = self.imgsz / np.maximum(heights, widths)
        return np.stack((self._labels[:, 3] * widths * scale, self._labels[:, 4] * heights * scale), axis=1)

    @property
    def resized_bytes(self) -> int:
        """Bytes of the split's images resized to ``imgsz`` as uint8: what :meth:`cache_images` holds.

        Computed from the sizes found by the label scan, without decoding anything.
        """
        return sum(CHANNELS * height * width
                   for height, width in (resized_shape(int(h), int(w), self.imgsz) for h, w in self._sizes))

    @property
    def cached(self) -> bool:
        """Whether the images are served from RAM (:meth:`cache_images` has run)."""
        return self._cache is not None

    def cache_images(self) -> int:
        """Decode every image once and keep it in RAM, resized, for all later samples.

        An image that fails to decode is handled as in a sample: logged, counted in
        :attr:`decode_failures` and replaced by the next one. Call this before DataLoader
        workers start (the DataModule does it in ``setup``): forked workers then share the
        cache instead of each decoding the split. Calling it again does nothing.

        Returns:
            The bytes of pixels cached.
        """
        if self._cache is None:
            cache = ImageCache(len(self), self.resized_bytes)
            for index in range(len(self)):
                cache.append(self._decode_resized(index))
            self._cache = cache
        return self._cache.nbytes

    def __getitem__(self, index: int) -> Sample:
        if self.augment is None:
            image, labels, path = self._letterboxed(index)
            jitter = HSV_IDENTITY
        else:
            image, labels, path, jitter = self._augmented(index, self.augment)
        normalized = torch.from_numpy(pixels_to_normalized(labels, self.imgsz, self.imgsz))
        if self.defer_hsv:
            return image, normalized, path, torch.tensor(jitter, dtype=torch.float32)
        return image, normalized, path

    def _augmented(self, index: int, config: AugmentConfig
                   ) -> tuple[torch.Tensor, np.ndarray, str, tuple[float, float, float]]:
        # The order and the draws follow YOLOv5's LoadImagesAndLabels.__getitem__.
        size = self.imgsz
        if random.random() < config.mosaic:
            indices = [index] + [random.randrange(len(self)) for _ in range(3)]
            random.shuffle(indices)
            tiles = [self._load(tile_index) for tile_index in indices]
            path = tiles[indices.index(index)][2]
            # The canvas is drawn only where the zoom below reads it.
            mosaic, labels = mosaic_layout([tile[0] for tile in tiles], [tile[1] for tile in tiles], size)
            if random.random() < config.affine:
                image, labels = random_affine(mosaic, labels, config.scale, config.translate, (size, size))
            else:  # the plain centre cut of the 2s canvas, still filtering cut-off boxes
                image, labels = scale_translate(mosaic, labels, 1.0, (size / 2, size / 2), (size, size))
        else:
            image, labels, path = self._letterboxed(index)
            if random.random() < config.affine:
                image, labels = random_affine(image, labels, config.scale, config.translate)
        jitter = HSV_IDENTITY
        if random.random() < config.hsv:
            jitter = draw_hsv(config.hsv_h, config.hsv_s, config.hsv_v)
            if not self.defer_hsv:
                image = jitter_hsv(image, *jitter)
        if random.random() < config.fliplr:  # a mirror commutes with the per-pixel jitter: deferring it is exact
            image, labels = fliplr(image, labels)
        return image, labels, path, jitter

    def _letterboxed(self, index: int) -> tuple[torch.Tensor, np.ndarray, str]:
        image, labels, path = self._load(index)
        # Already resized: pads only, into a new tensor, so a cached image is never handed out.
        padded, _, (pad_left, pad_top) = letterbox(image, self.imgsz)
        labels[:, [1, 3]] += pad_left
        labels[:, [2, 4]] += pad_top
        return padded, labels, path

    def _load(self, index: int) -> tuple[torch.Tensor, np.ndarray, str]:
        """The image resized to a longer side of imgsz, its pixel xyxy labels and its path.

        From the cache, the image is a view of it: the callers copy it (paste, pad) before
        changing anything.
        """
        for step in range(len(self)):
            candidate = (index + step) % len(self)
            if candidate in self._failed:
                continue
            resized = self._cache[candidate] if self._cache is not None else self._decode_resized(candidate)
            if resized is not None:
                break
        else:
            raise RuntimeError(f"YOLODataset: none of the {len(self)} images can be decoded any more; "
                               f"first failure: {self._paths[min(self._failed)]}")
        height, width = resized.shape[-2:]
        labels = normalized_to_pixels(self._labels[self._bounds[candidate]:self._bounds[candidate + 1]], width, height)
        return resized, labels, str(self._paths[candidate])

    def _decode_resized(self, index: int) -> torch.Tensor | None:
        image = self._decode(index)
        return None if image is None else resize_long_side(image, self.imgsz)

    def _decode(self, index: int) -> torch.Tensor | None:
        path = str(self._paths[index])
        try:
            return decode_rgb(path)
        except Exception as error:  # decoders raise RuntimeError, OSError, ValueError ...: all mean "skip"
            self._failed.add(index)
            self.decode_failures += 1
            log.warning("cannot decode %s (%s); using another image of the split in its place "
                        "(the label scan accepted it: did the file change on disk?)", path, error)
            return None


def collate(batch: Sequence[Sample]) -> dict[str, Any]:
    """Stack samples into YOLOv5's batch layout.

    Returns:
        ``images``: uint8 (B, 3, H, W); ``targets``: float32 (M, 6) rows ``[image_index, cls, cx,
        cy, w, h]`` normalised, M the number of objects in the batch; ``paths``: B strings; and for
        samples with a deferred HSV jitter, ``hsv``: float32 (B, 3), one jitter per image.
    """
    images = torch.stack([sample[0] for sample in batch])
    targets = [torch.cat([torch.full((len(sample[1]), 1), float(index)), sample[1]], dim=1)
               for index, sample in enumerate(batch)]
    collated = {
        "images": images,
        "targets": torch.cat(targets) if targets else torch.zeros((0, 6)),
        "paths": [sample[2] for sample in batch],
    }
    if batch and len(batch[0]) == 4:
        collated["hsv"] = torch.stack([sample[3] for sample in batch])
    return collated
