"""YOLOv5's training augmentations (hyp.scratch-low) as small functions on tensors.

Images are uint8 (3, H, W) tensors. Labels inside this module are float32 numpy arrays
(n, 5) ``[cls, x1, y1, x2, y2]`` in PIXELS of the image they go with; the dataset converts from
and to the normalised ``[cls, cx, cy, w, h]`` of the label files at the boundaries
(:func:`normalized_to_pixels`, :func:`pixels_to_normalized`). No function changes its inputs.

The order YOLOv5 applies them in (``LoadImagesAndLabels.__getitem__``), which the dataset keeps:
mosaic (4 images on a 2s x 2s canvas) -> random scale/translate down to s x s -> HSV -> flip;
without mosaic: letterbox to s x s -> random scale/translate on it -> HSV -> flip.

Randomness comes from a :class:`random.Random` passed as ``rng``, or from the ``random`` module
when None: Lightning's ``seed_everything(workers=True)`` and PyTorch's DataLoader seed it
differently in every worker, which numpy's global generator would not be under ``fork``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

# YOLOv5's padding grey: the value the network sees outside the image, in letterbox and mosaic.
PAD_VALUE = 114
_PROBABILITIES = ("mosaic", "affine", "hsv", "fliplr")


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation settings; defaults are YOLOv5's ``hyp.scratch-low.yaml``.

    Attributes:
        mosaic: Probability of a 4-image mosaic (YOLOv5: always on, 1.0).
        affine: Probability of the random scale/translate. With mosaic the canvas is cut down
            to the output size either way; this only decides whether it is also zoomed/moved.
        scale: Zoom gain drawn from [1 - scale, 1 + scale]; 0.5 in scratch-low.
        translate: Shift of the centre, as a fraction of the output size, in [-t, t].
        hsv: Probability of the colour jitter (YOLOv5: always on).
        hsv_h: Hue shift up to this fraction of the colour circle.
        hsv_s: Saturation factor drawn from [1 - hsv_s, 1 + hsv_s].
        hsv_v: Brightness (value) factor drawn from [1 - hsv_v, 1 + hsv_v].
        fliplr: Probability of a left-right flip.
    """

    mosaic: float = 1.0
    affine: float = 1.0
    scale: float = 0.5
    translate: float = 0.1
    hsv: float = 1.0
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    fliplr: float = 0.5

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"AugmentConfig.{item.name} must be a finite number; found {value!r}")
        for name in _PROBABILITIES:
            _check_range(name, getattr(self, name), 0.0, 1.0, "a probability in [0, 1]")
        for name in ("hsv_s", "hsv_v"):
            _check_range(name, getattr(self, name), 0.0, math.inf, "a gain >= 0")
        # A shift of more than half the colour circle is a smaller shift the other way.
        _check_range("hsv_h", self.hsv_h, 0.0, 0.5, "a gain in [0, 0.5]")
        if not 0.0 <= self.scale < 1.0:
            raise ValueError(f"AugmentConfig.scale must be in [0, 1) (the zoom is 1 +- scale and must stay "
                             f"positive); found {self.scale!r}")
        _check_range("translate", self.translate, 0.0, 0.5, "in [0, 0.5] (a fraction of the image size)")


def _check_range(name: str, value: float, low: float, high: float, allowed: str) -> None:
    if not low <= value <= high:
        raise ValueError(f"AugmentConfig.{name} must be {allowed}; found {value!r}")


def normalized_to_pixels(labels: np.ndarray, width: float, height: float,
                         offset_x: float = 0.0, offset_y: float = 0.0) -> np.ndarray:
    """(n, 5) ``[cls, cx, cy, w, h]`` normalised -> ``[cls, x1, y1, x2, y2]`` pixels (+ offset)."""
    out = labels.astype(np.float32, copy=True)
    out[:, 1] = width * (labels[:, 1] - labels[:, 3] / 2) + offset_x
    out[:, 2] = height * (labels[:, 2] - labels[:, 4] / 2) + offset_y
    out[:, 3] = width * (labels[:, 1] + labels[:, 3] / 2) + offset_x
    out[:, 4] = height * (labels[:, 2] + labels[:, 4] / 2) + offset_y
    return out


def pixels_to_normalized(labels: np.ndarray, width: float, height: float) -> np.ndarray:
    """(n, 5) ``[cls, x1, y1, x2, y2]`` pixels -> ``[cls, cx, cy, w, h]`` normalised, clipped to the image."""
    boxes = clip_boxes(labels, width, height)
    out = boxes.copy()
    out[:, 1] = (boxes[:, 1] + boxes[:, 3]) / 2 / width
    out[:, 2] = (boxes[:, 2] + boxes[:, 4]) / 2 / height
    out[:, 3] = (boxes[:, 3] - boxes[:, 1]) / width
    out[:, 4] = (boxes[:, 4] - boxes[:, 2]) / height
    return out


def clip_boxes(labels: np.ndarray, width: float, height: float) -> np.ndarray:
    """Pixel ``[cls, x1, y1, x2, y2]`` rows with the box clipped to ``[0, width] x [0, height]``."""
    out = labels.copy()
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, width)
    out[:, [2, 4]] = out[:, [2, 4]].clip(0, height)
    return out


def resized_shape(height: int, width: int, size: int | tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` scaled to fit inside ``size`` (a square side, or ``(height, width)``) keeping the
    aspect ratio: what :func:`resize_long_side` and :func:`letterbox` resize to."""
    target_height, target_width = (size, size) if isinstance(size, int) else size
    ratio = min(target_height / height, target_width / width)
    return max(1, round(height * ratio)), max(1, round(width * ratio))


def resize_long_side(image: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize so that the image just fits in ``size`` (the longer side becomes ``size`` when it is an int),
    keeping the aspect ratio (YOLOv5's load_image).

    Antialiased bilinear: like the INTER_AREA YOLOv5 uses when shrinking, it does not alias.
    """
    height, width = image.shape[-2:]
    new_height, new_width = resized_shape(height, width, size)
    if (new_height, new_width) == (height, width):
        return image
    return F.resize(image, [new_height, new_width], antialias=True)


def letterbox(image: torch.Tensor, new_size: int | tuple[int, int], fill: int = PAD_VALUE
              ) -> tuple[torch.Tensor, tuple[float, float], tuple[int, int]]:
    """Resize to fit ``new_size`` (a square side, or ``(height, width)`` for a file exported at a rectangle)
    and pad with grey, centred.

    Returns:
        The (3, height, width) image, the ratio ``(resized_width / width, resized_height / height)``
        (equal up to rounding to whole pixels) and the padding ``(pad_left, pad_top)``. A pixel point
        (x, y) of the input lands at ``(x * ratio_x + pad_left, y * ratio_y + pad_top)``.
    """
    height, width = image.shape[-2:]
    target_height, target_width = (new_size, new_size) if isinstance(new_size, int) else new_size
    resized = resize_long_side(image, (target_height, target_width))
    new_height, new_width = resized.shape[-2:]
    pad_x, pad_y = target_width - new_width, target_height - new_height
    # YOLOv5 splits an odd padding with round(d - 0.1) / round(d + 0.1): the extra pixel goes
    # right/bottom. Integer halving does the same.
    pad_left, pad_top = pad_x // 2, pad_y // 2
    padded = F.pad(resized, [pad_left, pad_top, pad_x - pad_left, pad_y - pad_top], fill=fill)
    return padded, (new_width / width, new_height / height), (pad_left, pad_top)


@dataclass(frozen=True, eq=False)  # eq on tensors would be ambiguous; a mosaic is compared by identity
class Mosaic:
    """YOLOv5's 2s x 2s mosaic canvas, held as its four tiles and their corners and drawn only where read.

    The training sample is a window of the canvas (the random zoom reads a square of side s / gain:
    all of it at gain 0.5, about a third of its area on average over hyp.scratch-low's 0.5 to 1.5),
    so :meth:`window` fills and pastes only that window: the pixels are those of the whole canvas
    cut there, at less of the fill and copy (benchmarks/loader_cost.py).

    Attributes:
        tiles: The four (3, h, w) images.
        corners: ``(left, top)`` of each tile on the canvas; parts off the canvas are cut.
        side: 2s, the canvas's width and height.
    """

    tiles: tuple[torch.Tensor, ...]
    corners: tuple[tuple[int, int], ...]
    side: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.tiles[0].shape[0], self.side, self.side)

    def window(self, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
        """The canvas's pixels ``[top:bottom, left:right]`` (within the canvas), as a new tensor."""
        canvas = torch.full((self.shape[0], bottom - top, right - left), PAD_VALUE, dtype=torch.uint8)
        for tile, (tile_left, tile_top) in zip(self.tiles, self.corners):
            _paste(canvas, tile, tile_left - left, tile_top - top)
        return canvas

    def render(self) -> torch.Tensor:
        """The whole (3, 2s, 2s) canvas."""
        return self.window(0, self.side, 0, self.side)


def mosaic_layout(images: Sequence[torch.Tensor], labels: Sequence[np.ndarray], size: int,
                  rng: random.Random | None = None) -> tuple[Mosaic, np.ndarray]:
    """Four images around a random centre of a 2s x 2s grey canvas (YOLOv5's load_mosaic), undrawn.

    Image 0 ends at the centre from the top left, 1 from the top right, 2 from the bottom left,
    3 from the bottom right; what falls off the canvas is cut. The centre is drawn from
    [s/2, 3s/2] on both axes, so that every quadrant keeps at least s/2 of its image.

    Args:
        images: Four (3, h, w) tiles, each already resized so that its longer side is ``size``.
        labels: Their pixel ``[cls, x1, y1, x2, y2]`` rows.
        size: s, the output size of the training sample.
        rng: Random source; the ``random`` module when None.

    Returns:
        The :class:`Mosaic` (its pixels drawn when read) and its labels, clipped to the canvas (some
        may have zero size).
    """
    if len(images) != 4 or len(labels) != 4:
        raise ValueError(f"a mosaic needs exactly 4 images and 4 label arrays; found {len(images)} "
                         f"and {len(labels)}")
    source = rng if rng is not None else random
    center_x, center_y = (int(source.uniform(size / 2, 3 * size / 2)) for _ in range(2))
    corners, placed = [], []
    for quadrant, (tile, tile_labels) in enumerate(zip(images, labels)):
        height, width = tile.shape[-2:]
        left = center_x - width if quadrant in (0, 2) else center_x
        top = center_y - height if quadrant in (0, 1) else center_y
        corners.append((left, top))
        shifted = tile_labels.astype(np.float32, copy=True)
        shifted[:, [1, 3]] += left
        shifted[:, [2, 4]] += top
        placed.append(shifted)
    mosaic = Mosaic(tuple(images), tuple(corners), 2 * size)
    return mosaic, clip_boxes(np.concatenate(placed).reshape(-1, 5), 2 * size, 2 * size)


def load_mosaic(images: Sequence[torch.Tensor], labels: Sequence[np.ndarray], size: int,
                rng: random.Random | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """:func:`mosaic_layout` with the whole (3, 2s, 2s) canvas drawn, and its labels."""
    mosaic, placed = mosaic_layout(images, labels, size, rng)
    return mosaic.render(), placed


def random_affine(image: torch.Tensor | Mosaic, labels: np.ndarray, scale: float, translate: float,
                  output_size: tuple[int, int] | None = None, rng: random.Random | None = None
                  ) -> tuple[torch.Tensor, np.ndarray]:
    """YOLOv5's random_perspective restricted to its scratch-low terms: random zoom and shift.

    The input's centre lands at ``(0.5 + U(-translate, translate)) * output size`` and distances
    are multiplied by ``U(1 - scale, 1 + scale)``. For a mosaic, YOLOv5 calls it on the 2s canvas
    with ``border=-s/2``: pass ``output_size=(s, s)`` (and the :class:`Mosaic` itself, which then
    draws only the part of the canvas the zoom reads).

    Returns:
        The (3, out_h, out_w) image and the labels that remain, per :func:`box_candidates`.
    """
    source = rng if rng is not None else random
    out_height, out_width = output_size if output_size is not None else tuple(image.shape[-2:])
    gain = source.uniform(1 - scale, 1 + scale)
    target_x = source.uniform(0.5 - translate, 0.5 + translate) * out_width
    target_y = source.uniform(0.5 - translate, 0.5 + translate) * out_height
    return scale_translate(image, labels, gain, (target_x, target_y), (out_height, out_width))


def scale_translate(image: torch.Tensor | Mosaic, labels: np.ndarray, gain: float, target: tuple[float, float],
                    output_size: tuple[int, int]) -> tuple[torch.Tensor, np.ndarray]:
    """Zoom by ``gain`` about the image centre, which lands at ``target`` (x, y) of the output.

    Done as crop -> resize -> paste on grey rather than with ``F.affine``: with no rotation or
    shear the warp is separable, and ``F.affine`` would render the whole 2s x 2s mosaic canvas
    before the cut (1.6 ms against 0.2 ms per sample, measured at s = 160 on one CPU thread).
    Box coordinates use the exact per-axis scale of the whole-pixel crop and resize, so boxes
    match the pixels. Boxes are then clipped and filtered with :func:`box_candidates`.

    Raises:
        ValueError: ``gain`` is not positive.
    """
    if not gain > 0:
        raise ValueError(f"scale_translate: gain must be > 0; found {gain!r}")
    out_height, out_width = output_size
    in_height, in_width = image.shape[-2:]
    x_window = _axis_window(in_width, out_width, gain, target[0])
    y_window = _axis_window(in_height, out_height, gain, target[1])
    canvas = torch.full((image.shape[0], out_height, out_width), PAD_VALUE, dtype=torch.uint8)
    if x_window is None or y_window is None:  # the zoomed image lies entirely outside the output
        return canvas, np.zeros((0, 5), dtype=np.float32)
    (x_start, x_stop, x_size, x_dest, x_ratio), (y_start, y_stop, y_size, y_dest, y_ratio) = x_window, y_window
    crop = image.window(y_start, y_stop, x_start, x_stop) if isinstance(image, Mosaic) else \
        image[:, y_start:y_stop, x_start:x_stop]
    if (y_size, x_size) != tuple(crop.shape[-2:]):
        crop = F.resize(crop, [y_size, x_size], antialias=True)
    _paste(canvas, crop, x_dest, y_dest)

    moved = labels.astype(np.float32, copy=True)
    moved[:, [1, 3]] = (labels[:, [1, 3]] - x_start) * x_ratio + x_dest
    moved[:, [2, 4]] = (labels[:, [2, 4]] - y_start) * y_ratio + y_dest
    before = labels[:, 1:] * np.array([x_ratio, y_ratio, x_ratio, y_ratio], dtype=np.float32)
    moved = clip_boxes(moved, out_width, out_height)
    return canvas, moved[box_candidates(before, moved[:, 1:])]


def _axis_window(in_length: int, out_length: int, gain: float, target: float
                 ) -> tuple[int, int, int, int, float] | None:
    """For one axis: the input pixels [start, stop) that reach the output, their size after the
    zoom, where they land, and the effective scale; None if nothing reaches the output."""
    center = in_length / 2
    start = max(0, math.floor(center - target / gain))
    stop = min(in_length, math.ceil(center + (out_length - target) / gain))
    if stop <= start:
        return None
    size = max(1, round((stop - start) * gain))
    destination = round(gain * (start - center) + target)
    return start, stop, size, destination, size / (stop - start)


def box_candidates(before: np.ndarray, after: np.ndarray, min_size: float = 2.0, min_area_ratio: float = 0.1,
                   max_aspect_ratio: float = 100.0) -> np.ndarray:
    """Which boxes survive a transform (YOLOv5's box_candidates).

    Args:
        before: (n, 4) xyxy boxes before the transform, already multiplied by its scale.
        after: (n, 4) xyxy boxes after the transform and clipping.

    Returns:
        (n,) bool: wider and taller than ``min_size`` pixels, keeping more than ``min_area_ratio``
        of their area (i.e. not mostly cut off), and with an aspect ratio below ``max_aspect_ratio``.
    """
    eps = 1e-16
    width_before, height_before = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    width_after, height_after = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(width_after / (height_after + eps), height_after / (width_after + eps))
    return ((width_after > min_size) & (height_after > min_size)
            & (width_after * height_after / (width_before * height_before + eps) > min_area_ratio)
            & (aspect < max_aspect_ratio))


def augment_hsv(image: torch.Tensor, hue_gain: float, saturation_gain: float, value_gain: float,
                rng: random.Random | None = None) -> torch.Tensor:
    """Random colour jitter in HSV space, after YOLOv5's augment_hsv.

    Saturation and value are multiplied by gains drawn from ``[1 - gain, 1 + gain]`` and
    clipped to their range, as YOLOv5's lookup tables do; the hue is rotated by a shift drawn
    from ``[-hue_gain, hue_gain]`` of the colour circle and wraps around. (YOLOv5 multiplies
    OpenCV's hue by ``1 +- hue_gain`` instead, which shifts it by up to the same amount for the
    largest hues but never moves red, hue 0, at all.) The arithmetic is :func:`jitter_hsv`'s.

    Args:
        image: uint8 (3, H, W) RGB.
        hue_gain, saturation_gain, value_gain: The ``hsv_h``, ``hsv_s``, ``hsv_v`` settings.
        rng: Random source; the ``random`` module when None.

    Returns:
        A new uint8 (3, H, W) image.
    """
    return jitter_hsv(image, *draw_hsv(hue_gain, saturation_gain, value_gain, rng))


def draw_hsv(hue_gain: float, saturation_gain: float, value_gain: float,
             rng: random.Random | None = None) -> tuple[float, float, float]:
    """The random part of :func:`augment_hsv`: ``(hue_shift, saturation_gain, value_gain)`` for :func:`jitter_hsv`."""
    source = rng if rng is not None else random
    # Three draws, in this order, whatever the gains: the draws after them (the flip) and so a
    # seeded run's samples do not depend on the HSV settings.
    hue_shift = source.uniform(-hue_gain, hue_gain)
    saturation = max(0.0, 1 + source.uniform(-1, 1) * saturation_gain)
    value = max(0.0, 1 + source.uniform(-1, 1) * value_gain)
    return hue_shift, saturation, value


# The jitter that changes nothing: jitter_hsv and jitter_hsv_batch return their input exactly.
HSV_IDENTITY = (0.0, 1.0, 1.0)


def jitter_hsv_batch(images: torch.Tensor, jitters: torch.Tensor, images_per_chunk: int = 16) -> torch.Tensor:
    """:func:`jitter_hsv` of every image of a batch, each with its own ``(hue_shift, saturation_gain,
    value_gain)`` row of ``jitters``, in torch on the batch's device.

    The same float32 arithmetic in the same order, so that on the CPU it returns the bytes
    :func:`jitter_hsv` returns. It exists for GPU training, where the data module hands the jitter
    to the GPU (``YOLODataset.defer_hsv``): at 640 px the jitter is 3.7 of the 7.6 ms of CPU a
    training sample costs a loader worker (benchmarks/loader_cost.py), and elementwise work for a GPU.

    Args:
        images: uint8 (B, 3, H, W) RGB.
        jitters: (B, 3) rows ``(hue_shift, saturation_gain, value_gain)``, as :func:`draw_hsv` returns.
        images_per_chunk: Images per pass, bounding the float32 temporaries (about 40 bytes per pixel).

    Returns:
        A new uint8 (B, 3, H, W) tensor.
    """
    out = torch.empty_like(images)
    for start in range(0, len(images), images_per_chunk):
        stop = start + images_per_chunk
        out[start:stop] = _jitter_hsv_torch(images[start:stop], jitters[start:stop].to(images.device, torch.float32))
    return out


def _jitter_hsv_torch(rgb: torch.Tensor, jitters: torch.Tensor) -> torch.Tensor:
    """:func:`_jitter_hsv_rows` for uint8 (b, 3, h, w) tensors, ``jitters`` (b, 3) float32.

    A twin of the numpy version, line for line, rather than one function for both: on a loader
    worker's single CPU thread the numpy one is 1.8x faster (3.2 against 5.8 ms at 640 px), and
    torch is what runs on the GPU. ``test_the_batched_jitter_gives_the_bytes_of_the_per_image_one``
    holds the two to the same bytes."""
    hue_shift, saturation_gain, value_gain = (jitters[:, index, None, None] for index in range(3))
    red, green, blue = rgb.unbind(1)
    maximum = torch.maximum(torch.maximum(red, green), blue)
    minimum = torch.minimum(torch.minimum(red, green), blue)
    chroma = maximum.to(torch.int16) - minimum.to(torch.int16)
    red16, green16, blue16 = red.to(torch.int16), green.to(torch.int16), blue.to(torch.int16)
    red_max = red == maximum
    green_max = (green == maximum) & ~red_max
    blue_max = ~(red_max | green_max)
    numerator = (green16 - blue16) * red_max
    numerator += (blue16 - red16 + 2 * chroma) * green_max
    numerator += (red16 - green16 + 4 * chroma) * blue_max
    hue = numerator.to(torch.float32)
    hue /= torch.clamp_min(chroma, 1)
    hue += 6 * hue_shift + 6
    hue -= 6 * torch.floor(hue / 6)
    maximum32 = maximum.to(torch.float32)
    value_scale = torch.minimum(value_gain, 255 / torch.clamp_min(maximum32, 1))
    new_value = maximum32 * value_scale
    new_chroma = torch.minimum(chroma * saturation_gain, maximum32)
    new_chroma *= value_scale
    out = torch.stack([(hue - 3).abs() - 1, 2 - (hue - 2).abs(), 2 - (hue - 4).abs()], dim=1)
    out.clamp_(0, 1)
    out -= 1
    out *= new_chroma[:, None]
    out += new_value[:, None]
    out += 0.5
    return out.to(torch.uint8)


def jitter_hsv(image: torch.Tensor, hue_shift: float, saturation_gain: float, value_gain: float) -> torch.Tensor:
    """Rotate the hue by ``hue_shift`` turns and scale saturation and value by their gains.

    HSV here is the hexcone model of OpenCV and colorsys, computed in float32 without rounding
    the intermediate H, S, V to bytes (YOLOv5's tables round H to 2-degree steps): with a zero
    shift and unit gains the output equals the input exactly. S is clipped at 1 and V at 255,
    so a brightened pixel that saturates keeps its hue rather than whitening channel by channel.

    Implemented as a few dozen whole-array numpy operations on rows of about
    :data:`_HSV_CHUNK_PIXELS` pixels, whose temporaries stay in the CPU cache: 0.25 ms at
    160 x 160 against 1.9 ms for torchvision's adjust_hue/saturation/brightness (one core).

    Args:
        image: uint8 (3, H, W) RGB.
        hue_shift: Fraction of the colour circle; positive turns red towards yellow.
        saturation_gain, value_gain: Factors >= 0.

    Returns:
        A new uint8 (3, H, W) image.
    """
    pixels = image.numpy()
    out = np.empty_like(pixels)
    height, width = pixels.shape[-2:]
    rows = max(1, _HSV_CHUNK_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        out[:, top:top + rows] = _jitter_hsv_rows(pixels[:, top:top + rows], hue_shift, saturation_gain, value_gain)
    return torch.from_numpy(out)


# Pixels per chunk of jitter_hsv (a 160 x 160 image is one chunk): its temporaries then take
# ~1.4 MB, inside a 2 MB L2 cache; whole 640 x 640 images (~20 MB of temporaries) ran three
# times slower, and chunks of 8192 or 65536 pixels were no faster.
_HSV_CHUNK_PIXELS = 32768


def _jitter_hsv_rows(rgb: np.ndarray, hue_shift: float, saturation_gain: float, value_gain: float) -> np.ndarray:
    """:func:`jitter_hsv` on a uint8 (3, h, w) array. Hue is in sextants [0, 6): red 0, yellow 1,
    green 2, cyan 3, blue 4, magenta 5. np.where and np.remainder are avoided: on float32 they
    are 20-40 times slower than the arithmetic used instead (masks multiplied in, floor)."""
    red, green, blue = rgb
    maximum = np.maximum(np.maximum(red, green), blue)  # (h, w) uint8, = V
    minimum = np.minimum(np.minimum(red, green), blue)
    chroma = np.subtract(maximum, minimum, dtype=np.int16)  # V - min = S * V
    red16, green16, blue16 = rgb.astype(np.int16)
    # The hexcone hue times the chroma, from whichever channel is the largest (ties: the first).
    red_max = red == maximum
    green_max = (green == maximum) & ~red_max
    blue_max = ~(red_max | green_max)
    numerator = (green16 - blue16) * red_max
    numerator += (blue16 - red16 + 2 * chroma) * green_max
    numerator += (red16 - green16 + 4 * chroma) * blue_max
    hue = numerator.astype(np.float32)
    hue /= np.maximum(chroma, 1)  # a grey pixel (chroma 0) gets hue 0; its output has no chroma anyway
    hue += 6 * hue_shift + 6  # now in (2, 18): positive for the floor below
    hue -= 6 * np.floor(hue / 6)
    # New V = min(V * value_gain, 255) and new chroma = min(S * saturation_gain, 1) * new V, both
    # as the old one times a per-pixel factor.
    maximum32 = maximum.astype(np.float32)
    value_scale = np.minimum(np.float32(value_gain), 255 / np.maximum(maximum32, 1))
    new_value = maximum32 * value_scale
    new_chroma = np.minimum(chroma * np.float32(saturation_gain), maximum32)
    new_chroma *= value_scale
    # Each channel is V - chroma * (1 - its share of the chroma), the share a trapezoid of the hue.
    out = np.empty((3, *hue.shape), dtype=np.float32)
    np.subtract(np.abs(hue - 3, out=out[0]), 1, out=out[0])
    np.subtract(2, np.abs(hue - 2, out=out[1]), out=out[1])
    np.subtract(2, np.abs(hue - 4, out=out[2]), out=out[2])
    np.clip(out, 0, 1, out=out)
    out -= 1
    out *= new_chroma
    out += new_value
    out += 0.5  # round to nearest; the values lie in [0, 255]
    return out.astype(np.uint8)


def fliplr(image: torch.Tensor, labels: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Mirror left-right; pixel box edges swap: x1' = W - x2, x2' = W - x1."""
    width = image.shape[-1]
    flipped = labels.astype(np.float32, copy=True)
    flipped[:, 1], flipped[:, 3] = width - labels[:, 3], width - labels[:, 1]
    return F.horizontal_flip(image), flipped


def _paste(canvas: torch.Tensor, tile: torch.Tensor, left: int, top: int) -> None:
    """Copy ``tile`` into ``canvas`` (which the caller owns) at (left, top), cutting what falls outside."""
    height, width = tile.shape[-2:]
    canvas_height, canvas_width = canvas.shape[-2:]
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + width, canvas_width), min(top + height, canvas_height)
    if x1 > x0 and y1 > y0:
        canvas[:, y0:y1, x0:x1] = tile[:, y0 - top:y1 - top, x0 - left:x1 - left]
