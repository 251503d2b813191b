import io

import cv2
import numpy as np
import pytest

from emomesh.errors import InvalidInput, TooLarge
from services.vision.preprocess import Box, crop_faces, decode_image, square_with_margin
from tests.conftest import encode

LIMITS = {"max_bytes": 5_000_000, "max_pixels": 4_000_000}


def test_decodes_jpeg_and_png_to_gray() -> None:
    image = np.zeros((30, 40, 3), np.uint8)
    image[:, :, 2] = 255
    for ext in (".jpg", ".png", ".bmp", ".webp"):
        gray = decode_image(encode(image, ext), **LIMITS)
        assert gray.shape == (30, 40) and gray.dtype == np.uint8


def test_empty_input_is_refused() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        decode_image(b"", **LIMITS)


def test_garbage_and_truncated_jpeg_are_refused() -> None:
    with pytest.raises(InvalidInput, match="could not be read"):
        decode_image(b"this is not an image at all", **LIMITS)
    jpeg = encode(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(InvalidInput, match="corrupt"):
        decode_image(jpeg[:200] + b"\x00" * 50, **LIMITS)


def cv2_free_gif() -> bytes:
    """A 1x1 GIF (OpenCV cannot write GIFs)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="GIF")
    return buffer.getvalue()


def test_unsupported_format_is_named() -> None:
    gif = cv2_free_gif()
    with pytest.raises(InvalidInput, match="unsupported image format GIF"):
        decode_image(gif, **LIMITS)


def test_too_many_pixels_is_refused_from_the_header() -> None:
    # A 100-megapixel PNG compresses to a few hundred kB; it must be refused before decoding.
    big = encode(np.zeros((10_000, 10_000), np.uint8), ".png")
    with pytest.raises(InvalidInput, match=r"100\.0 megapixels"):
        decode_image(big, max_bytes=50_000_000, max_pixels=40_000_000)


def test_too_many_bytes_is_resource_exhausted() -> None:
    with pytest.raises(TooLarge, match="limit is 10 bytes"):
        decode_image(b"x" * 11, max_bytes=10, max_pixels=1)


def test_square_with_margin_centres_on_the_box() -> None:
    x, y, side = square_with_margin(Box(10, 20, 40, 60), margin=0.1)
    assert side == 72
    assert (x + side / 2, y + side / 2) == (30, 50)


def test_crop_faces_pads_at_the_border_and_resizes() -> None:
    gray = np.arange(100 * 100, dtype=np.uint32).reshape(100, 100).astype(np.uint8)
    crops = crop_faces(gray, [Box(0, 0, 50, 50), Box(60, 60, 40, 40)], (64, 64), margin=0.2)
    assert crops.shape == (2, 1, 64, 64) and crops.dtype == np.float32
    assert crops.min() >= 0 and crops.max() <= 255
    # The first crop reaches past the top-left corner: replicated border, so the corner pixel repeats.
    assert crops[0, 0, 0, 0] == crops[0, 0, 0, 1] == gray[0, 0]
    assert crop_faces(gray, [], (48, 48), 0.1).shape == (0, 1, 48, 48)


def test_crop_matches_a_direct_resize_inside_the_image() -> None:
    gray = np.random.default_rng(1).integers(0, 255, (200, 200), dtype=np.uint8)
    crop = crop_faces(gray, [Box(50, 50, 100, 100)], (64, 64), margin=0.0)
    expected = cv2.resize(gray[50:150, 50:150], (64, 64), interpolation=cv2.INTER_AREA)
    assert np.array_equal(crop[0, 0], expected.astype(np.float32))
