import io

import cv2
import numpy as np
import pytest

from emomesh.errors import InvalidInput, TooLarge
from emotion.vision.v1 import vision_pb2
from services.vision.preprocess import (
    EYE_DISTANCE,
    EYE_Y,
    Box,
    DetectedFace,
    Point,
    crop_faces,
    decode_image,
    equalize_faces,
    eye_alignment,
    raw_image,
    square_with_margin,
    to_gray,
)
from tests.conftest import encode

# max_bytes, max_pixels
LIMITS = (5_000_000, 4_000_000)


def test_decodes_jpeg_and_png_to_gray() -> None:
    image = np.zeros((30, 40, 3), np.uint8)
    image[:, :, 2] = 255
    for ext in (".jpg", ".png", ".bmp", ".webp"):
        gray = decode_image(encode(image, ext), *LIMITS)
        assert gray.shape == (30, 40) and gray.dtype == np.uint8


def test_empty_input_is_refused() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        decode_image(b"", *LIMITS)


def test_garbage_and_truncated_jpeg_are_refused() -> None:
    with pytest.raises(InvalidInput, match="could not be read"):
        decode_image(b"this is not an image at all", *LIMITS)
    jpeg = encode(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(InvalidInput, match="corrupt"):
        decode_image(jpeg[:200] + b"\x00" * 50, *LIMITS)


def cv2_free_gif() -> bytes:
    """A 1x1 GIF (OpenCV cannot write GIFs)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="GIF")
    return buffer.getvalue()


def test_unsupported_format_is_named() -> None:
    gif = cv2_free_gif()
    with pytest.raises(InvalidInput, match="unsupported image format GIF"):
        decode_image(gif, *LIMITS)


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


def test_eye_alignment_levels_the_eyes_at_their_canonical_place() -> None:
    # Eyes 60 px apart on a line tilted by 30 degrees (the right eye on the image's left).
    right_eye = Point(100.0, 120.0)
    left_eye = Point(100 + 60 * np.cos(np.radians(30)), 120 + 60 * np.sin(np.radians(30)))
    matrix, side = eye_alignment(right_eye, left_eye)
    assert side == round(60 / EYE_DISTANCE)
    moved = [matrix @ np.array([p.x, p.y, 1.0]) for p in (right_eye, left_eye)]
    np.testing.assert_allclose(moved[0], [side / 2 - 30, EYE_Y * side], atol=1e-6)
    np.testing.assert_allclose(moved[1], [side / 2 + 30, EYE_Y * side], atol=1e-6)


def test_crop_faces_aligns_a_face_with_eyes_and_boxes_one_without() -> None:
    # Two bright dots for eyes on a dark image, the line between them tilted by 20 degrees.
    gray = np.zeros((300, 300), np.uint8)
    right_eye = Point(120.0, 140.0)
    left_eye = Point(120 + 50 * np.cos(np.radians(20)), 140 + 50 * np.sin(np.radians(20)))
    for eye in (right_eye, left_eye):
        cv2.circle(gray, (round(eye.x), round(eye.y)), 3, (255,), -1)
    face = DetectedFace(Box(100, 100, 90, 90), right_eye, left_eye)
    aligned, boxed = crop_faces(gray, [face, face.box], (64, 64), 0.1)
    # Aligned: both dots on the row EYE_Y, EYE_DISTANCE apart, symmetric about the centre.
    rows, cols = np.nonzero(aligned[0] > 128)
    assert abs(rows.mean() - EYE_Y * 64) < 1.5
    left_dot, right_dot = cols[cols < 32], cols[cols >= 32]
    assert abs((right_dot.mean() - left_dot.mean()) - EYE_DISTANCE * 64) < 1.5
    assert abs((right_dot.mean() + left_dot.mean()) / 2 - 32) < 1.5
    # The box crop keeps the tilt: the two dots sit on different rows.
    rows, cols = np.nonzero(boxed[0] > 128)
    assert rows[cols >= 32].mean() - rows[cols < 32].mean() > 5


def test_a_face_crop_as_the_whole_image_is_left_as_it_is() -> None:
    # FER2013 and CK+48 images are already aligned crops: training and whole_image_is_face crop the
    # whole image with no margin, which is the identity at the model's size.
    crop = np.random.default_rng(3).integers(0, 255, (64, 64), dtype=np.uint8)
    out = crop_faces(crop, [DetectedFace(Box(0, 0, 64, 64))], (64, 64), 0.0)
    assert np.array_equal(out[0, 0], crop.astype(np.float32))


def test_decodes_colour_when_asked() -> None:
    image = np.zeros((30, 40, 3), np.uint8)
    image[:, :, 2] = 255  # BGR red
    rgb = decode_image(encode(image, ".png"), *LIMITS, color=True)
    assert rgb.shape == (30, 40, 3) and tuple(rgb[0, 0]) == (255, 0, 0)
    assert to_gray(rgb).shape == (30, 40)


def test_equalize_faces_spreads_a_low_contrast_face_over_the_whole_range() -> None:
    rng = np.random.default_rng(0)
    dull = rng.integers(100, 140, (2, 1, 48, 48)).astype(np.float32)
    equalized = equalize_faces(dull)
    assert equalized.shape == dull.shape and equalized.dtype == np.float32
    assert equalized.min() == 0 and equalized.max() == 255
    # Brightness order is kept: equalisation is a monotonic remapping of each face's gray levels.
    flat_in, flat_out = dull[0, 0].ravel(), equalized[0, 0].ravel()
    order = np.argsort(flat_in, kind="stable")
    assert np.all(np.diff(flat_out[order]) >= 0)


def test_equalizing_an_equalized_face_changes_it_little() -> None:
    # FER2013's JPEGs are already equalised: training equalises them again, a near no-op.
    rng = np.random.default_rng(1)
    once = equalize_faces(rng.normal(120, 30, (1, 1, 48, 48)).clip(0, 255).astype(np.float32))
    assert np.abs(equalize_faces(once) - once).mean() < 3


def test_raw_pixels_read_as_decoded_images_do() -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 200  # red
    raw = vision_pb2.RawImage(pixels=rgb.tobytes(), width=6, height=4, format=vision_pb2.RawImage.PIXEL_FORMAT_RGB24)
    assert np.array_equal(raw_image(raw, 100, color=True), rgb)
    assert raw_image(raw, 100).shape == (4, 6) and int(raw_image(raw, 100)[0, 0]) == 60  # 0.299 x 200
    bgr = vision_pb2.RawImage(
        pixels=rgb[..., ::-1].tobytes(), width=6, height=4, format=vision_pb2.RawImage.PIXEL_FORMAT_BGR24
    )
    assert np.array_equal(raw_image(bgr, 100, color=True), rgb)
    gray = vision_pb2.RawImage(pixels=bytes(24), width=6, height=4, format=vision_pb2.RawImage.PIXEL_FORMAT_GRAY8)
    assert raw_image(gray, 100, color=True).shape == (4, 6, 3)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (vision_pb2.RawImage(pixels=bytes(24), width=6, height=4), "raw.format must be RGB24, BGR24 or GRAY8"),
        (
            vision_pb2.RawImage(pixels=bytes(23), width=6, height=4, format=vision_pb2.RawImage.PIXEL_FORMAT_GRAY8),
            "6x4x1: 24 bytes expected, 23 sent",
        ),
        (
            vision_pb2.RawImage(pixels=b"", width=0, height=4, format=vision_pb2.RawImage.PIXEL_FORMAT_GRAY8),
            "both sides must be positive",
        ),
        (
            vision_pb2.RawImage(pixels=bytes(200), width=20, height=10, format=vision_pb2.RawImage.PIXEL_FORMAT_GRAY8),
            "the limit is 0.0 megapixels",
        ),
    ],
)
def test_bad_raw_pixels_are_invalid_argument(raw: vision_pb2.RawImage, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        raw_image(raw, 100)
