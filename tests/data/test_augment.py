"""Augmentations: config validation, and boxes that stay on the pixels they describe."""

from __future__ import annotations

import colorsys
import random

import numpy as np
import pytest
import torch

from yolo_slim.data import AugmentConfig
from yolo_slim.data.augment import (
    HSV_IDENTITY,
    PAD_VALUE,
    augment_hsv,
    box_candidates,
    draw_hsv,
    fliplr,
    jitter_hsv,
    jitter_hsv_batch,
    letterbox,
    load_mosaic,
    mosaic_layout,
    normalized_to_pixels,
    pixels_to_normalized,
    random_affine,
    resize_long_side,
    resized_shape,
    scale_translate,
)


def _image_with_box(width: int, height: int, box: tuple[int, int, int, int]) -> tuple[torch.Tensor, np.ndarray]:
    """A black (3, H, W) image with a white rectangle, and its pixel label ``[0, x1, y1, x2, y2]``."""
    image = torch.zeros((3, height, width), dtype=torch.uint8)
    x1, y1, x2, y2 = box
    image[:, y1:y2, x1:x2] = 255
    return image, np.array([[0, x1, y1, x2, y2]], dtype=np.float32)


def _assert_box_on_pixels(image: torch.Tensor, labels: np.ndarray, white_box, tolerance: float = 1.5) -> None:
    found = white_box(image)
    assert found is not None and len(labels) == 1
    np.testing.assert_allclose(labels[0, 1:], found, atol=tolerance)


# --- config --------------------------------------------------------------------------------------


def test_defaults_are_yolov5_scratch_low():
    config = AugmentConfig()
    assert (config.mosaic, config.affine, config.scale, config.translate) == (1.0, 1.0, 0.5, 0.1)
    assert (config.hsv, config.hsv_h, config.hsv_s, config.hsv_v, config.fliplr) == (1.0, 0.015, 0.7, 0.4, 0.5)


@pytest.mark.parametrize("field, value, message", [
    ("mosaic", 1.5, r"AugmentConfig.mosaic must be a probability in \[0, 1\]; found 1.5"),
    ("affine", -0.1, r"AugmentConfig.affine must be a probability in \[0, 1\]; found -0.1"),
    ("hsv", 2, r"AugmentConfig.hsv must be a probability"),
    ("fliplr", -1.0, r"AugmentConfig.fliplr must be a probability"),
    ("hsv_s", -0.5, r"AugmentConfig.hsv_s must be a gain >= 0; found -0.5"),
    ("hsv_v", -1e-3, r"AugmentConfig.hsv_v must be a gain >= 0"),
    ("hsv_h", 0.6, r"AugmentConfig.hsv_h must be a gain in \[0, 0.5\]; found 0.6"),
    ("scale", 1.0, r"AugmentConfig.scale must be in \[0, 1\) .*; found 1.0"),
    ("scale", -0.2, r"AugmentConfig.scale must be in \[0, 1\)"),
    ("translate", 0.6, r"AugmentConfig.translate must be in \[0, 0.5\] .*; found 0.6"),
    ("mosaic", "yes", r"AugmentConfig.mosaic must be a finite number; found 'yes'"),
    ("mosaic", True, r"AugmentConfig.mosaic must be a finite number; found True"),
    ("scale", float("nan"), r"AugmentConfig.scale must be a finite number; found nan"),
])
def test_invalid_config(field, value, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig(**{field: value})


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        AugmentConfig().mosaic = 0.0  # type: ignore[misc]


# --- label conversions ----------------------------------------------------------------------------


def test_normalized_pixel_round_trip():
    normalized = np.array([[1, 0.5, 0.25, 0.2, 0.1], [0, 0.1, 0.9, 0.2, 0.2]], dtype=np.float32)
    pixels = normalized_to_pixels(normalized, 200, 100, offset_x=3, offset_y=4)
    np.testing.assert_allclose(pixels[0], [1, 83, 24, 123, 34], atol=1e-4)
    np.testing.assert_allclose(pixels_to_normalized(normalized_to_pixels(normalized, 200, 100), 200, 100),
                               normalized, atol=1e-6)
    # Boxes hanging over the edge are clipped on the way back.
    np.testing.assert_allclose(pixels_to_normalized(np.array([[0, -10, 50, 50, 150]], np.float32), 100, 100),
                               [[0, 0.25, 0.75, 0.5, 0.5]])


# --- letterbox -----------------------------------------------------------------------------------


def test_letterbox_geometry(helpers):
    image, labels = _image_with_box(100, 50, (20, 10, 60, 30))
    boxed, (ratio_x, ratio_y), (pad_left, pad_top) = letterbox(image, 64)
    assert boxed.shape == (3, 64, 64) and boxed.dtype == torch.uint8
    assert (ratio_x, ratio_y) == (0.64, 0.64) and (pad_left, pad_top) == (0, 16)
    # Padding is grey, the image band is in the middle.
    assert torch.all(boxed[:, :16] == PAD_VALUE) and torch.all(boxed[:, 48:] == PAD_VALUE)
    mapped = labels[0, 1:] * [ratio_x, ratio_y, ratio_x, ratio_y] + [pad_left, pad_top, pad_left, pad_top]
    np.testing.assert_allclose(mapped, [12.8, 22.4, 38.4, 35.2])
    found = helpers.white_box(boxed)
    np.testing.assert_allclose(found, mapped, atol=1.0)


def test_letterbox_odd_padding_and_upscaling():
    image = torch.zeros((3, 30, 11), dtype=torch.uint8)
    boxed, (ratio_x, ratio_y), (pad_left, pad_top) = letterbox(image, 64)
    assert boxed.shape == (3, 64, 64)
    assert round(11 * 64 / 30) == 23 and ratio_x == pytest.approx(23 / 11) and ratio_y == pytest.approx(64 / 30)
    assert (pad_left, pad_top) == (20, 0)  # 41 columns of padding: 20 left, 21 right, as YOLOv5


def test_letterbox_to_a_rectangle():
    # 100 x 200 into 64 x 96 (H x W): width binds (ratio 0.48), 48 x 96 resized, 8 rows of padding above and below.
    boxed, (ratio_x, ratio_y), (pad_left, pad_top) = letterbox(torch.zeros((3, 100, 200), dtype=torch.uint8), (64, 96))
    assert boxed.shape == (3, 64, 96) and (ratio_x, ratio_y) == (0.48, 0.48) and (pad_left, pad_top) == (0, 8)
    # 200 x 100 into 64 x 96: height binds (0.32), 64 x 32 resized, 32 columns each side.
    boxed, ratios, pads = letterbox(torch.zeros((3, 200, 100), dtype=torch.uint8), (64, 96))
    assert boxed.shape == (3, 64, 96) and ratios == (0.32, 0.32) and pads == (32, 0)
    assert torch.all(boxed[:, :, :32] == PAD_VALUE) and torch.all(boxed[:, :, 32:64] == 0)


def test_resized_shape():
    assert resized_shape(60, 80, 64) == (48, 64)
    assert resized_shape(60, 80, (64, 64)) == (48, 64) and resized_shape(100, 200, (64, 96)) == (48, 96)
    assert resized_shape(90, 50, 64) == (64, 36)  # 35.56 rounds up
    assert resized_shape(1, 1000, 32) == (1, 32)  # never 0


def test_resize_long_side():
    assert resize_long_side(torch.zeros((3, 50, 100), dtype=torch.uint8), 160).shape == (3, 80, 160)
    same = torch.zeros((3, 160, 80), dtype=torch.uint8)
    assert resize_long_side(same, 160) is same


# --- flip, affine ----------------------------------------------------------------------------------


def test_fliplr_keeps_the_box_on_its_pixels(helpers):
    image, labels = _image_with_box(64, 48, (5, 10, 20, 40))
    flipped, flipped_labels = fliplr(image, labels)
    np.testing.assert_allclose(flipped_labels, [[0, 44, 10, 59, 40]])
    _assert_box_on_pixels(flipped, flipped_labels, helpers.white_box, tolerance=0)
    np.testing.assert_array_equal(labels, [[0, 5, 10, 20, 40]])  # the input is untouched


def test_scale_translate_exact_mapping(helpers):
    image, labels = _image_with_box(64, 64, (16, 16, 32, 48))
    # Zoom x2 about the centre (32, 32), which lands at (40, 20): x -> 2x - 24, y -> 2y - 44.
    out, out_labels = scale_translate(image, labels, 2.0, (40.0, 20.0), (64, 64))
    assert out.shape == (3, 64, 64)
    np.testing.assert_allclose(out_labels, [[0, 8, 0, 40, 52]])  # y1 = -12 clipped to 0
    _assert_box_on_pixels(out, out_labels, helpers.white_box, tolerance=1.0)
    # Zoom x0.5: x -> x/2 + 24, y -> y/2 + 4; the image covers [24, 56) x [4, 36), grey elsewhere.
    out, out_labels = scale_translate(image, labels, 0.5, (40.0, 20.0), (64, 64))
    np.testing.assert_allclose(out_labels, [[0, 32, 12, 40, 28]])
    _assert_box_on_pixels(out, out_labels, helpers.white_box, tolerance=1.0)
    assert torch.all(out[:, :, :24] == PAD_VALUE) and torch.all(out[:, :, 56:] == PAD_VALUE)
    assert torch.all(out[:, 36:] == PAD_VALUE)
    assert torch.all(out[:, 4:36, 24:30] == 0)  # black up to the box, less a column of antialiasing blur


@pytest.mark.parametrize("seed", range(12))
def test_random_affine_keeps_boxes_on_their_pixels(helpers, seed):
    image, labels = _image_with_box(96, 96, (30, 40, 70, 60))
    out, out_labels = random_affine(image, labels, scale=0.5, translate=0.1, rng=random.Random(seed))
    assert out.shape == (3, 96, 96) and out.dtype == torch.uint8
    _assert_box_on_pixels(out, out_labels, helpers.white_box)


def test_random_affine_drops_boxes_cut_off(helpers):
    image, labels = _image_with_box(64, 64, (0, 0, 6, 6))
    # Zoom x0.5 about the centre placed at (24, 32): the box (0..6) maps to (8..11): 3 px, kept;
    # placed at (3.5, 32) it maps to (-12.5..-9.5): gone.
    kept = scale_translate(image, labels, 0.5, (24.0, 32.0), (64, 64))[1]
    gone = scale_translate(image, labels, 0.5, (3.5, 32.0), (64, 64))[1]
    assert len(kept) == 1 and len(gone) == 0


def test_random_affine_output_size_cuts_the_centre(helpers):
    image, labels = _image_with_box(128, 128, (40, 50, 90, 100))
    out, out_labels = random_affine(image, labels, scale=0.0, translate=0.0, output_size=(64, 64))
    np.testing.assert_allclose(out_labels, [[0, 8, 18, 58, 64]])  # shifted by -32, clipped at 64
    _assert_box_on_pixels(out, out_labels, helpers.white_box, tolerance=0)


def test_box_candidates():
    before = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 500, 10]], dtype=np.float32)
    after = np.array([[0, 0, 10, 10], [0, 0, 2, 10], [0, 0, 3, 3], [0, 0, 500, 4.5]], dtype=np.float32)
    # kept; too narrow (2 px); 9 % of the area left; aspect ratio 111
    np.testing.assert_array_equal(box_candidates(before, after), [True, False, False, False])


# --- mosaic --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_mosaic_size_and_labels_inside(helpers, seed):
    size = 64
    tiles = [_image_with_box(64, 48, (10, 10, 30, 30)), _image_with_box(40, 64, (5, 30, 35, 60)),
             _image_with_box(64, 64, (20, 20, 50, 40)), _image_with_box(64, 32, (40, 4, 60, 28))]
    rng = random.Random(seed)
    canvas, labels = load_mosaic([tile[0] for tile in tiles], [tile[1] for tile in tiles], size, rng=rng)
    assert canvas.shape == (3, 2 * size, 2 * size) and labels.shape == (4, 5)
    assert labels[:, 1:].min() >= 0 and labels[:, 1:].max() <= 2 * size
    for box in labels[:, 1:]:  # every visible box covers white pixels only
        x1, y1, x2, y2 = np.round(box).astype(int)
        if x2 > x1 and y2 > y1:
            assert canvas[:, y1:y2, x1:x2].float().mean() == 255
    out, out_labels = random_affine(canvas, labels, 0.5, 0.1, output_size=(size, size), rng=rng)
    assert out.shape == (3, size, size)
    assert out_labels[:, 1:].min() >= 0 and out_labels[:, 1:].max() <= size
    for box in out_labels[:, 1:]:  # resampled edges are grey-ish: look at the box's core
        x1, y1, x2, y2 = box
        core = out[:, int(np.ceil(y1)) + 1:int(y2) - 1, int(np.ceil(x1)) + 1:int(x2) - 1].float()
        assert core.numel() == 0 or core.mean() > 200


def test_mosaic_places_image_zero_top_left_of_the_centre():
    tiles = [torch.full((3, 32, 32), value, dtype=torch.uint8) for value in (10, 20, 30, 40)]
    empty = [np.zeros((0, 5), np.float32)] * 4

    class FixedCentre(random.Random):
        def uniform(self, low: float, high: float) -> float:
            return 40.0

    canvas, _ = load_mosaic(tiles, empty, 32, rng=FixedCentre())
    assert [int(canvas[0, 39, 39]), int(canvas[0, 39, 40]), int(canvas[0, 40, 39]), int(canvas[0, 40, 40])] == [
        10, 20, 30, 40]
    assert int(canvas[0, 7, 7]) == PAD_VALUE and int(canvas[0, 8, 8]) == 10


@pytest.mark.parametrize("seed", range(8))
def test_a_mosaic_drawn_only_where_the_zoom_reads_gives_the_whole_canvas_cut(seed):
    rng = random.Random(100 + seed)  # tile sizes and zooms; the mosaic's centre comes from Random(seed)
    size = 64
    sides = [(rng.randint(20, size), size) if rng.random() < 0.5 else (size, rng.randint(20, size)) for _ in range(4)]
    generator = torch.Generator().manual_seed(seed)
    tiles = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator) for h, w in sides]
    labels = [np.array([[0, 2, 3, w - 4, h - 2]], np.float32) for h, w in sides]
    mosaic, placed = mosaic_layout(tiles, labels, size, rng=random.Random(seed))
    whole, whole_labels = load_mosaic(tiles, labels, size, rng=random.Random(seed))
    assert torch.equal(mosaic.render(), whole)
    np.testing.assert_array_equal(placed, whole_labels)
    for gain, target in [(0.5, (32.0, 32.0)), (1.5, (40.0, 20.0)), (1.0, (32.0, 32.0)),
                         (rng.uniform(0.5, 1.5), (rng.uniform(25, 39), rng.uniform(25, 39))), (0.3, (60.0, 2.0))]:
        lazy, lazy_labels = scale_translate(mosaic, placed, gain, target, (size, size))
        full, full_labels = scale_translate(whole, whole_labels, gain, target, (size, size))
        assert torch.equal(lazy, full), (gain, target)
        np.testing.assert_array_equal(lazy_labels, full_labels)
    assert torch.equal(mosaic.window(10, 30, 100, 128), whole[:, 10:30, 100:128])


def test_mosaic_needs_four_images():
    with pytest.raises(ValueError, match="exactly 4 images and 4 label arrays; found 3 and 3"):
        load_mosaic([torch.zeros((3, 8, 8), dtype=torch.uint8)] * 3, [np.zeros((0, 5), np.float32)] * 3, 8)


# --- colour --------------------------------------------------------------------------------------


def _random_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _jitter_hsv_reference(image: torch.Tensor, hue_shift: float, saturation_gain: float, value_gain: float
                          ) -> np.ndarray:
    """The HSV jitter pixel by pixel with Python's colorsys, in float64, not rounded."""
    out = np.empty(image.shape, dtype=np.float64)
    for y in range(image.shape[1]):
        for x in range(image.shape[2]):
            hue, saturation, value = colorsys.rgb_to_hsv(*(image[:, y, x].double() / 255).tolist())
            rgb = colorsys.hsv_to_rgb((hue + hue_shift) % 1.0, min(1.0, saturation * saturation_gain),
                                      min(1.0, value * value_gain))
            out[:, y, x] = np.array(rgb) * 255
    return out


@pytest.mark.parametrize("hue_shift, saturation_gain, value_gain", [
    (0.0, 1.0, 1.0), (0.015, 1.5, 0.7), (-0.3, 0.4, 1.4), (0.5, 0.0, 2.0), (0.97, 1.0, 0.0), (-0.75, 3.0, 1.0),
])
def test_jitter_hsv_matches_colorsys(monkeypatch, hue_shift, saturation_gain, value_gain):
    # Small chunks, so that the row chunking is exercised too (rows of 24 pixels, 2 per chunk).
    monkeypatch.setattr("yolo_slim.data.augment._HSV_CHUNK_PIXELS", 48)
    image = _random_image(7, 24)
    image[:, 0, :3] = torch.tensor([[0, 128, 255]] * 3)  # grey, and white and black: no chroma
    out = jitter_hsv(image, hue_shift, saturation_gain, value_gain)
    assert out.dtype == torch.uint8 and out.shape == image.shape
    # Rounded to the nearest byte, give or take float32's error on an exact half (195 * 0.7).
    reference = _jitter_hsv_reference(image, hue_shift, saturation_gain, value_gain)
    assert np.abs(out.numpy() - reference).max() <= 0.5 + 1e-3


def test_jitter_hsv_neutral_settings_are_the_identity():
    image = _random_image(40, 50)
    assert torch.equal(jitter_hsv(image, 0.0, 1.0, 1.0), image)  # exactly: no rounding to byte H, S, V
    assert torch.equal(augment_hsv(image, 0.0, 0.0, 0.0, rng=random.Random(0)), image)
    assert torch.equal(jitter_hsv(image, 1.0, 1.0, 1.0), image)  # a full turn


def test_jitter_hsv_keeps_grey_grey():
    levels = torch.arange(256, dtype=torch.uint8).reshape(16, 16)
    grey = levels.expand(3, 16, 16)
    for hue_shift, saturation_gain in ((0.3, 1.0), (-0.5, 1.7), (0.015, 0.3)):
        assert torch.equal(jitter_hsv(grey, hue_shift, saturation_gain, 1.0), grey)
    darker = jitter_hsv(grey, 0.2, 1.5, 0.5)
    assert torch.equal(darker[0], darker[1]) and torch.equal(darker[1], darker[2])


def test_jitter_hsv_value_gain_scales_brightness():
    image = _random_image(32, 32)
    darker = jitter_hsv(image, 0.0, 1.0, 0.5)
    # Scaling V at fixed H and S scales all three channels, up to rounding to whole bytes.
    assert (darker.int() - (image.float() * 0.5).round().int()).abs().max() <= 1
    brighter = jitter_hsv(image, 0.0, 1.0, 1.5)
    maximum = image.max(dim=0).values.float()
    torch.testing.assert_close(brighter.max(dim=0).values.float(), (maximum * 1.5).clamp(max=255).round(),
                               atol=1.0, rtol=0.0)
    assert brighter.int().sum() > image.int().sum()


def test_jitter_hsv_saturation_gain():
    image = _random_image(16, 16)
    grey = jitter_hsv(image, 0.0, 0.0, 1.0)  # no saturation: every channel becomes V
    assert torch.equal(grey, image.max(dim=0, keepdim=True).values.expand_as(image))
    vivid = jitter_hsv(image, 0.0, 2.0, 1.0)
    assert torch.equal(vivid.max(dim=0).values, image.max(dim=0).values)  # V unchanged
    assert torch.all(vivid.min(dim=0).values <= image.min(dim=0).values)  # the smallest channel moves away


@pytest.mark.parametrize("hue_shift, expected", [
    (0.05, (255, 77, 0)),  # 0.3 of the way to yellow (76.5 rounds up)
    (1 / 6, (255, 255, 0)),  # yellow
    (1 / 3, (0, 255, 0)),  # green
    (-0.05, (255, 0, 77)),  # the other way, towards magenta
    (0.5, (0, 255, 255)),  # cyan, opposite
])
def test_jitter_hsv_rotates_red(hue_shift, expected):
    red = torch.tensor([255, 0, 0], dtype=torch.uint8).reshape(3, 1, 1).expand(3, 2, 2)
    out = jitter_hsv(red, hue_shift, 1.0, 1.0)
    assert out[:, 0, 0].tolist() == list(expected)


def test_jitter_hsv_leaves_its_input_alone():
    base = _random_image(20, 30)
    image = base[:, 2:, 3:]  # a non-contiguous view
    before = image.clone()
    out = jitter_hsv(image, 0.2, 1.3, 0.8)
    assert torch.equal(image, before) and out.is_contiguous() and out.shape == image.shape


def test_the_batched_jitter_gives_the_bytes_of_the_per_image_one():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 37, 53), dtype=torch.uint8)
    images[0, :, :9] = 128  # grey pixels: no chroma, hue 0
    images[1, :, :, :7] = 255  # saturated: the value clip
    rng = random.Random(1)
    jitters = [draw_hsv(0.015, 0.7, 0.4, rng) for _ in images]
    expected = torch.stack([jitter_hsv(image, *jitter) for image, jitter in zip(images, jitters)])
    assert torch.equal(jitter_hsv_batch(images, torch.tensor(jitters), images_per_chunk=2), expected)
    assert torch.equal(jitter_hsv_batch(images, torch.tensor([HSV_IDENTITY] * 5)), images)


def test_augment_hsv_draws():
    image = _random_image(32, 32)
    brighter = augment_hsv(image, 0.0, 0.0, 0.5, rng=random.Random(1))
    again = augment_hsv(image, 0.0, 0.0, 0.5, rng=random.Random(1))
    assert brighter.dtype == torch.uint8 and brighter.shape == image.shape
    assert torch.equal(brighter, again) and not torch.equal(brighter, image)
    shifted = augment_hsv(image, 0.015, 0.7, 0.4, rng=random.Random(2))
    assert (shifted.float() - image.float()).abs().mean() > 1.0
    # The gains: hue shift in [-h, h], saturation and value factors in [1 - g, 1 + g].
    rng = random.Random(3)
    hue_shift, saturation, value = rng.uniform(-0.015, 0.015), rng.uniform(-1, 1), rng.uniform(-1, 1)
    expected = jitter_hsv(image, hue_shift, 1 + 0.7 * saturation, 1 + 0.4 * value)
    assert torch.equal(augment_hsv(image, 0.015, 0.7, 0.4, rng=random.Random(3)), expected)


def test_scale_translate_needs_a_positive_gain():
    image, labels = _image_with_box(8, 8, (2, 2, 6, 6))
    with pytest.raises(ValueError, match=r"gain must be > 0; found 0.0"):
        scale_translate(image, labels, 0.0, (4.0, 4.0), (8, 8))
