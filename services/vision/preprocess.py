"""Pure image preprocessing: decode with limits, then crop each face for the expression model, aligned
by its eyes when the detector gives them (BlazeFace) and square around its box when not (Haar).

`crop_faces` is the one way faces become model input, in serving and in training
(services/vision/finetune_fer.py): a face with eye keypoints is rotated so that the eyes are level and
scaled so that they sit where they sit in the crops the expression models were validated on; a face
with a box only is cropped as a square around the box, which for an already aligned face crop
(FER2013, CK+48: the whole image as the box, no margin) is the identity."""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from emomesh.errors import InvalidInput, TooLarge
from emotion.vision.v1 import vision_pb2

SUPPORTED_FORMATS = {"JPEG", "PNG", "BMP", "WEBP", "TIFF"}


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    width: int
    height: int

    @property
    def area(self) -> int:
        return self.width * self.height


# Where the eyes sit in an aligned crop, as fractions of its side: their midpoint at (0.5, EYE_Y) and
# their distance EYE_DISTANCE. Measured where they sit in the expression model's training faces, so
# that an aligned crop from a photo frames the face as the training crops do: medians over 2,726 of
# 3,000 FER2013 *train* crops in which BlazeFace short range finds the eyes (distance 0.366, IQR
# 0.33-0.39; midpoint y 0.382, IQR 0.35-0.41; `python -m services.vision.calibrate_alignment`). No
# evaluation set chose them.
EYE_DISTANCE = 0.37
EYE_Y = 0.38


@dataclass(frozen=True)
class Point:
    x: float
    y: float


@dataclass(frozen=True)
class DetectedFace:
    """A face as a detector reports it, in the image's own pixel coordinates."""

    box: Box
    # The subject's right and left eye (for an unmirrored photo, the right eye is on the image's left);
    # None when the detector gives no keypoints (Haar).
    right_eye: Point | None = None
    left_eye: Point | None = None
    # The other keypoints BlazeFace gives, reported to clients: nose tip, mouth centre, right and left
    # ear tragion; empty for Haar.
    keypoints: tuple[Point, ...] = ()
    # The detector's confidence 0..1; 0 when it has none (Haar).
    score: float = 0.0


def image_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from the header alone, without decoding pixels."""
    try:
        with warnings.catch_warnings():
            # Pillow warns about huge images; we enforce our own pixel limit right after.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return str(image.format), int(image.width), int(image.height)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(
            "image could not be read: not a JPEG, PNG, BMP, WebP or TIFF file, or its header is corrupt"
        ) from exc


def decode_image(data: bytes, max_bytes: int, max_pixels: int, color: bool = False) -> np.ndarray:
    """Decodes an encoded image to a gray uint8 array [H, W] (RGB [H, W, 3] when `color`), refusing
    empty, oversized, unsupported or corrupt input before (or instead of) decoding it."""
    if not data:
        raise InvalidInput("image is empty")
    if len(data) > max_bytes:
        raise TooLarge(f"image is {len(data)} bytes; the limit is {max_bytes} bytes")
    fmt, width, height = image_size(data)
    if fmt not in SUPPORTED_FORMATS:
        raise InvalidInput(f"unsupported image format {fmt}; send JPEG, PNG, BMP, WebP or TIFF")
    if width * height > max_pixels:
        raise InvalidInput(
            f"image is {width}x{height} ({width * height / 1e6:.1f} megapixels); "
            f"the limit is {max_pixels / 1e6:.1f} megapixels"
        )
    flags = cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if image is None or image.size == 0:
        raise InvalidInput(f"{fmt} image is corrupt and could not be decoded")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if color else image


RAW_CHANNELS = {
    vision_pb2.RawImage.PIXEL_FORMAT_RGB24: 3,
    vision_pb2.RawImage.PIXEL_FORMAT_BGR24: 3,
    vision_pb2.RawImage.PIXEL_FORMAT_GRAY8: 1,
}


def raw_image(raw: vision_pb2.RawImage, max_pixels: int, color: bool = False) -> np.ndarray:
    """Uncompressed pixels (a camera frame) as decode_image returns them: gray [H, W], or RGB [H, W, 3]
    when `color`; refusing an unknown format, a size outside the limit, or a byte count that does not
    match width x height x channels."""
    channels = RAW_CHANNELS.get(raw.format)
    if channels is None:
        raise InvalidInput("raw.format must be RGB24, BGR24 or GRAY8")
    if raw.width <= 0 or raw.height <= 0:
        raise InvalidInput(f"raw image is {raw.width}x{raw.height}; both sides must be positive")
    if raw.width * raw.height > max_pixels:
        raise InvalidInput(
            f"image is {raw.width}x{raw.height} ({raw.width * raw.height / 1e6:.1f} megapixels); "
            f"the limit is {max_pixels / 1e6:.1f} megapixels"
        )
    expected = raw.width * raw.height * channels
    if len(raw.pixels) != expected:
        raise InvalidInput(
            f"raw image is {raw.width}x{raw.height}x{channels}: {expected} bytes expected, {len(raw.pixels)} sent"
        )
    pixels = np.frombuffer(raw.pixels, dtype=np.uint8)
    if channels == 1:
        gray = pixels.reshape(raw.height, raw.width)
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB) if color else gray
    image = pixels.reshape(raw.height, raw.width, 3)
    if raw.format == vision_pb2.RawImage.PIXEL_FORMAT_BGR24:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB if color else cv2.COLOR_BGR2GRAY)
    return image if color else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def to_gray(image: np.ndarray) -> np.ndarray:
    """Gray uint8 [H, W] of a gray or RGB image (the expression models take gray faces)."""
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def square_with_margin(box: Box, margin: float) -> tuple[int, int, int]:
    """(x, y, side) of a square centred on box, enlarged by margin on each side."""
    side = max(box.width, box.height)
    side = round(side * (1 + 2 * margin))
    cx, cy = box.x + box.width / 2, box.y + box.height / 2
    return round(cx - side / 2), round(cy - side / 2), side


def _resize(crop: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    # Area averaging to shrink; bilinear to enlarge (INTER_AREA enlarges like nearest neighbour,
    # which costs 1.4 points of accuracy on 48x48 FER2013 crops fed to the 64x64 model).
    interpolation = cv2.INTER_AREA if crop.shape[0] >= max(size) else cv2.INTER_LINEAR
    return cv2.resize(crop, (size[1], size[0]), interpolation=interpolation)


def box_crop(gray: np.ndarray, box: Box, margin: float) -> np.ndarray:
    """The square around box enlarged by margin on each side, at the image's resolution. Crops that
    reach past the image edge are filled by replicating the border."""
    x, y, side = square_with_margin(box, margin)
    pad = max(0, -x, -y, x + side - gray.shape[1], y + side - gray.shape[0])
    source = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else gray
    return source[y + pad : y + pad + side, x + pad : x + pad + side]


def eye_alignment(right_eye: Point, left_eye: Point) -> tuple[np.ndarray, int]:
    """The similarity transform (2x3 matrix) that rotates the face so that its eyes are level and puts
    them at the canonical place (EYE_DISTANCE, EYE_Y) of a square crop, and that crop's side in source
    pixels (at least 1). The scale to the model's input size is left to the resize, which averages
    when it shrinks (warpAffine alone would alias)."""
    dx, dy = left_eye.x - right_eye.x, left_eye.y - right_eye.y
    distance = max(math.hypot(dx, dy), 1e-3)
    side = max(1, round(distance / EYE_DISTANCE))
    centre = ((right_eye.x + left_eye.x) / 2, (right_eye.y + left_eye.y) / 2)
    # The subject's right eye is on the image's left: the eye line points right, angle 0 when level.
    matrix = cv2.getRotationMatrix2D(centre, math.degrees(math.atan2(dy, dx)), 1.0)
    matrix[:, 2] = matrix[:, 2] + np.array([side / 2 - centre[0], EYE_Y * side - centre[1]])
    return matrix, side


def align_face(gray: np.ndarray, right_eye: Point, left_eye: Point) -> np.ndarray:
    """The face rotated and scaled by its eyes (eye_alignment), at the image's resolution."""
    matrix, side = eye_alignment(right_eye, left_eye)
    return cv2.warpAffine(gray, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def crop_faces(
    gray: np.ndarray, faces: Sequence[DetectedFace | Box], size: tuple[int, int], margin: float
) -> np.ndarray:
    """Each face as model input: float32 [N, 1, H, W] gray pixels 0..255 for size (H, W). Aligned by
    its eyes when it has them, else the square around its box with margin on each side."""
    out = np.zeros((len(faces), 1, size[0], size[1]), dtype=np.float32)
    for i, face in enumerate(faces):
        if isinstance(face, DetectedFace) and face.right_eye is not None and face.left_eye is not None:
            crop = align_face(gray, face.right_eye, face.left_eye)
        else:
            crop = box_crop(gray, face.box if isinstance(face, DetectedFace) else face, margin)
        out[i, 0] = _resize(crop, size)
    return out


def equalize_faces(faces: np.ndarray) -> np.ndarray:
    """Each face of crop_faces' output [N, 1, H, W] with its gray histogram equalised (cv2.equalizeHist),
    for expression models trained on equalised faces (FER2013's JPEGs are; their Triton config says
    `emomesh_input_contrast: equalized`). Equalising after the resize, on the model's own input size,
    is what those faces went through."""
    out = np.empty_like(faces)
    for i, face in enumerate(faces):
        out[i, 0] = cv2.equalizeHist(np.clip(face[0], 0, 255).astype(np.uint8))
    return out
